"""Shared helpers: real SQLite files in tmp_path, the CLI in-process or as a process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner

from orchestra_schema.cli import main

DATA = Path(__file__).parent / "data"
EF_SCRIPT = DATA / "ef-core-9-initial-script.sql"
CORE = "20250922204128_OrchestraCore"
CHAT = "20250922204129_AddChatTables"
CHAT_TABLES = {"ChatSessions", "ChatMessages"}
CORE_TABLES = {"Repositories", "TaskTemplates", "WorkflowDefinitions", "Agents",
               "UserPreferences", "PerformanceMetrics", "Tasks", "OrchestrationLogs"}


def cli(*args, input=None, env=None):
    """Run orchestra-schema in this process; returns click's Result (stdout, stderr apart)."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env,
                              catch_exceptions=False)


def run(*args, timeout=60, env=None, **kw):
    """Run orchestra-schema as a real process (python -m orchestra_schema)."""
    return subprocess.run([sys.executable, "-m", "orchestra_schema", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, **kw)


@contextlib.contextmanager
def connect(path):
    """An apsw connection that is closed afterwards (apsw's own `with` is a transaction)."""
    c = apsw.Connection(str(path))
    try:
        yield c
    finally:
        c.close()


def tables(path) -> set[str]:
    with connect(path) as c:
        return {r[0] for r in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'")}


def count(path, table) -> int:
    with connect(path) as c:
        return c.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def history(path) -> set[str]:
    with connect(path) as c:
        if not c.execute("SELECT 1 FROM sqlite_schema WHERE name='_yoyo_migration'").fetchall():
            return set()
        return {r[0] for r in c.execute("SELECT migration_id FROM _yoyo_migration")}


def file_state(path) -> tuple:
    """Bytes and mtime of a file and its -wal/-journal siblings: 'unchanged' means all equal."""
    state = []
    for suffix in ("", "-wal", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            state.append((suffix, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns))
    return tuple(state)


def build_ef_database(path, with_rows=True) -> Path:
    """A database as the Orchestra API made it: EF Core's exact script, then app rows."""
    with connect(path) as c:
        c.execute(EF_SCRIPT.read_text())
        if with_rows:
            add_rows(c)
    return Path(path)


def add_rows(c: apsw.Connection, sessions=3, messages=5) -> None:
    """Rows in core and chat tables, and a Hangfire-like table the tool does not manage."""
    c.execute("PRAGMA foreign_keys = ON")
    c.execute("""INSERT INTO Repositories VALUES ('r1','repo','/src/repo',NULL,0,1,'2025-01-01','2025-01-01',
                 NULL,NULL,'main','[]',0,0,0,0,'[]')""")
    c.execute("""INSERT INTO Agents VALUES ('a1','agent','claude','/src/repo',0,'2025-01-01',NULL,
                 '2025-01-01','2025-01-01',0,NULL,1,30,0,0,0,0.0,NULL,'r1')""")
    c.execute("""INSERT INTO Tasks VALUES ('t1','ls','a1','/src/repo',1,0,'2025-01-01',NULL,NULL,NULL,
                 NULL,NULL,0,NULL,NULL,NULL,0,'2025-01-01','r1')""")
    for s in range(sessions):
        c.execute("INSERT INTO ChatSessions VALUES (?, 'u1', 'i1', 'title', '2025-01-01', '2025-01-02')",
                  (f"s{s}",))
        for m in range(messages):
            c.execute("INSERT INTO ChatMessages VALUES (?, ?, 'user', 'hello', 0, '2025-01-01', NULL)",
                      (f"s{s}m{m}", f"s{s}"))
    c.execute("CREATE TABLE IF NOT EXISTS [HangFire.Job] (Id INTEGER PRIMARY KEY, State TEXT)")
    c.execute("INSERT INTO [HangFire.Job] (State) VALUES ('Succeeded'), ('Enqueued')")


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str):
    """A real small file system (a tmpfs of `size`) at `where`; skips where mounting is refused."""
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                            where], capture_output=True).returncode:
        pytest.skip("needs root, allowed to mount a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", where], check=True)


@pytest.fixture
def db(tmp_path) -> Path:
    """Path of a database with both migrations applied by the tool, and rows."""
    path = tmp_path / "orchestra.db"
    result = cli("--database", path, "apply")
    assert result.exit_code == 0, result.output
    with connect(path) as c:
        add_rows(c)
    return path


def ef_history(path) -> dict[str, str] | None:
    """__EFMigrationsHistory as {MigrationId: ProductVersion}; None without the table."""
    with connect(path) as c:
        if not c.execute("SELECT 1 FROM sqlite_schema WHERE name='__EFMigrationsHistory'").fetchall():
            return None
        return dict(c.execute('SELECT "MigrationId", "ProductVersion" FROM "__EFMigrationsHistory"'))


@pytest.fixture
def ef_db(tmp_path) -> Path:
    """An orchestra.db as EF Core made it (rows, a Hangfire table), adopted by the tool."""
    path = build_ef_database(tmp_path / "orchestra.db")
    result = cli("--database", path, "adopt")
    assert result.exit_code == 0, result.output
    return path


def pytest_terminal_summary(terminalreporter):
    """The fault-injection figures of this run (tests/faults.py), at the very end."""
    faults = sys.modules.get("faults")
    if faults is None or not faults.FIGURES:
        return
    terminalreporter.section("fault injection")
    for line in faults.figures_table():
        terminalreporter.write_line(line)


@pytest.fixture
def unwritable_dir(tmp_path):
    """make({name: text}) -> a directory holding those files that nobody can write, root
    included: as root a read-only tmpfs (permissions do not stop root), else mode 0500."""
    made = []

    def make(contents=None) -> Path:
        d = tmp_path / f"unwritable{len(made)}"
        d.mkdir()
        root = os.geteuid() == 0
        if root and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                                   capture_output=True).returncode:
            pytest.skip("root, but not allowed to mount a tmpfs")
        made.append((d, root))
        for name, text in (contents or {}).items():
            (d / name).write_text(text)
        if root:
            subprocess.run(["mount", "-o", "remount,ro", d], check=True)
        else:
            d.chmod(0o500)
        return d

    yield make
    for d, root in made:
        if root:
            subprocess.run(["umount", d], check=True)
        else:
            d.chmod(0o700)
