"""Helpers the tests import: real SQLite files in tmp_path, the CLI in-process or as a process.

Fixtures live in conftest.py; everything a test imports by name lives here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner

from orchestra_schema import ef
from orchestra_schema.cli import main

CORE, CHAT = ef.CORE, ef.CHAT  # the SQLite migrations' ids: one definition, in ef.py

DATA = Path(__file__).parent / "data"
# Upstream material the tests read, copied into tests/data so a fresh clone needs nothing beside it
# (tests/data/README.md says where each file came from).
EF_PG_DIR = DATA / "ef-postgresql"  # EF Core's C# migrations for PostgreSQL
REAL_DB = DATA / "orchestra-5960ab9.db"  # a real orchestra.db (WAL mode, Hangfire's tables too)
EF_SCRIPT = DATA / "ef-core-9-initial-script.sql"
CHAT_TABLES = {"ChatSessions", "ChatMessages"}
CORE_TABLES = {"Repositories", "TaskTemplates", "WorkflowDefinitions", "Agents",
               "UserPreferences", "PerformanceMetrics", "Tasks", "OrchestrationLogs"}


def unavailable(reason: str):
    """Skip a test this machine cannot run; under CI=true fail it instead: CI must run them all."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run this test (.ci/run installs what it needs)", pytrace=False)
    pytest.skip(reason)


def device(tmp_path, name, minor):
    """A node of the memory device (1, minor) like /dev/null or /dev/zero, made in tmp_path.

    Never the system's own: run against code that replaces what --database names
    (as recover did), a test on /dev/null would rename it and leave a regular file there.
    """
    path = Path(tmp_path) / name
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        unavailable("needs root (CAP_MKNOD) to make a device node")
    return path


def assert_refused(result, code, *words):
    """A process (run), or the CLI in this process (cli), that exited `code` with one error
    line holding every word."""
    exit_code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestra-schema: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


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
def mounted_tmpfs(where: Path, size: str, read_only: bool = False):
    """A real small file system (a tmpfs of `size`) at `where`; skips where mounting is refused
    (fails under CI=true: see unavailable).

    read_only: mounted ro, so unwritable even for root (which ignores permission bits).
    """
    where.mkdir()
    options = f"{'ro,' if read_only else ''}size={size}"
    if os.geteuid() != 0:
        unavailable("needs root, allowed to mount a tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", where],
                             capture_output=True, text=True)
    if mounted.returncode:
        unavailable(f"mounting a tmpfs was refused: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", where], check=True)


def ef_history(path) -> dict[str, str] | None:
    """__EFMigrationsHistory as {MigrationId: ProductVersion}; None without the table."""
    with connect(path) as c:
        if not c.execute("SELECT 1 FROM sqlite_schema WHERE name='__EFMigrationsHistory'").fetchall():
            return None
        return dict(c.execute('SELECT "MigrationId", "ProductVersion" FROM "__EFMigrationsHistory"'))
