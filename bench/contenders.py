"""What is measured: each group's contenders (commands), reference and target.

A contender is one or more commands run one after the other as real
processes; their times add up and its peak memory is the largest max RSS
among them. A contender whose program or subcommand is missing is kept in the
table as "not available", with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import apsw

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql" / "sqlite"
CORE = "20250922204128_OrchestraCore"
CHAT = "20250922204129_AddChatTables"
CHAT_ROLLBACK = SQL_DIR / f"{CHAT}.rollback.sql"
CHAT_TABLES = {"ChatMessages", "ChatSessions"}


def program(name: str) -> str | None:
    """A program from this Python's venv first (orchestra-schema, yoyo), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@dataclass
class Run:
    seconds: float
    max_rss_kb: int | None  # None without GNU time
    ok: bool
    error: str = ""


# GNU time reports its child's peak RSS (os.wait4's ru_maxrss). Waiting on our
# own child would not do: Linux carries the high-water mark of the forked copy
# of this harness (about 40 MB of Python) over exec into the command's count.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_timed(argv: list[str], timeout: float | None = None, expect_stdout: str | None = None,
              on_spawn: Callable[[], None] | None = None) -> Run:
    """One process, timed from spawn to exit (startup included), with its peak memory:
    the larger of GNU time's max RSS (its largest process) and the summed PSS of its
    process tree, sampled every 20 ms (copy-to's workers run beside it; PSS shares the
    pages of Python and its libraries among the processes that map them, where RSS would
    count them once per process).

    on_spawn: called once the process exists (the writer-stall window watches for its work).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        full = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        start = time.perf_counter()
        # A session of its own, so a timeout kills the command too, not just GNU time.
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        if on_spawn:
            on_spawn()
        tree = TreeMemory(proc.pid, skip_root=bool(GNU_TIME))
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            tree.stop()
        seconds = time.perf_counter() - start
        report = rss.read().split()  # empty when killed: GNU time died too
        peak = int(report[-1]) if report and report[-1].isdigit() else None
        if tree.peak_kb and (peak is None or tree.peak_kb > peak):
            peak = tree.peak_kb
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if code != 0:
        why = f"killed after {timeout:.0f} s" if code is None else f"exit {code}"
        last = (stderr.strip().splitlines() or [""])[-1][:160]
        return Run(seconds, peak, False, f"{why}: {last}".rstrip(": "))
    if expect_stdout is not None and stdout.strip() != expect_stdout:
        return Run(seconds, peak, False, f"unexpected output: {stdout.strip()[:160]}")
    return Run(seconds, peak, True)


def warm(path: Path) -> None:
    """Read the whole file so the trial starts with the page cache warm.

    Done before every trial, not once: some hosts (this one: DAMON proactive
    reclaim) page out file pages idle for a minute, even between two trials.
    """
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


class TreeMemory:
    """The peak of the summed PSS of a process's descendants (and of itself unless
    skip_root: GNU time), read from /proc every 20 ms in a thread (Linux; else 0)."""

    def __init__(self, pid: int, skip_root: bool):
        self.pid, self.skip_root, self.peak_kb = pid, skip_root, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            pids = _descendants(self.pid) + ([] if self.skip_root else [self.pid])
            self.peak_kb = max(self.peak_kb, sum(map(_pss_kb, pids)))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
    return children + [d for c in children for d in _descendants(c)]


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Paths:
    """The files of one trial: the database to work on and where outputs go."""

    db: Path
    out: Path


@dataclass
class Step:
    argv: list[str]
    expect_stdout: str | None = None


@dataclass
class Contender:
    name: str
    steps: Callable[[Paths], list[Step]]
    missing: str | None = None  # why it cannot run here; None when it can
    note: str = ""
    check: Callable[[Paths], str | None] | None = None  # untimed: did it do the work?

    def run(self, paths: Paths, timeout: float | None = None,
            on_spawn: Callable[[], None] | None = None) -> Run:
        """on_spawn: called when its first command's process exists."""
        total, peak = 0.0, None
        prepare = getattr(self.check, "prepare", None)
        if prepare:
            prepare(paths)  # untimed: what the check compares against
        for n, step in enumerate(self.steps(paths)):
            r = run_timed(step.argv, timeout, step.expect_stdout, on_spawn if n == 0 else None)
            total = total + r.seconds
            peak = r.max_rss_kb if peak is None else max(peak, r.max_rss_kb or 0)
            if not r.ok:
                return Run(total, peak, False, r.error)
        problem = self.check(paths) if self.check else None
        return Run(total, peak, not problem, problem or "")


def tables(path: Path) -> set[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(60_000)  # the writer-stall runs check while the writer still commits
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    finally:
        conn.close()


class CopiedEveryRow:
    """The copy has every table with as many rows as the source had: between its count
    before the backup and after it (a writer may commit meanwhile), table by table."""

    def prepare(self, p: Paths) -> None:
        self.before = row_counts(p.db)

    def __call__(self, p: Paths) -> str | None:
        if not p.out.exists():
            return "no output file"
        after, copied = row_counts(p.db), row_counts(p.out)
        lacking = sorted(set(self.before) - set(copied))
        if lacking:
            return f"the copy lacks {', '.join(lacking)}"
        wrong = [f"{t}: {copied[t]} rows, the source had {n}" + (f" to {after[t]}" if after.get(t, n) != n else "")
                 for t, n in sorted(self.before.items())
                 if not n <= copied[t] <= max(n, after.get(t, n))]
        return f"the copy's rows differ: {'; '.join(wrong)}" if wrong else None


def row_counts(path: Path) -> dict[str, int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(60_000)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
                for n in names}
    finally:
        conn.close()


def dropped_chat_only(p: Paths) -> str | None:
    left = tables(p.db)
    wrong = (CHAT_TABLES & left) | ({"Repositories", "HangFire.Job"} - left)
    return f"after the rollback, wrong tables: {', '.join(sorted(wrong))}" if wrong else None


@dataclass
class Target:
    contender: str
    text: str  # shown in the table, e.g. "<= 1.1x sqlite3 shell"
    check: Callable[[dict[str, float]], bool | None]  # medians by contender -> pass/fail/None


@dataclass
class Group:
    name: str
    title: str
    database: str  # "ef" (made by EF Core) or "history" (has the tool's yoyo history)
    contenders: list[Contender]
    references: list[str]  # the first available one is the ratio's denominator
    targets: list[Target] = field(default_factory=list)
    fresh_copy: bool = False  # each trial changes the database: work on a fresh copy

    def reference(self) -> str | None:
        usable = {c.name for c in self.contenders if not c.missing}
        return next((r for r in self.references if r in usable), None)


# -- finding out what is installed ---------------------------------------------


class Tool:
    """orchestra-schema as installed beside this Python, and which commands it has."""

    def __init__(self):
        self.exe = program("orchestra-schema")
        self._help: dict[str, str | None] = {}

    def help(self, command: str) -> str | None:
        """The command's --help text, or None when the tool lacks the command."""
        if command not in self._help:
            self._help[command] = None
            if self.exe:
                r = subprocess.run([self.exe, command, "--help"], capture_output=True, text=True)
                if r.returncode == 0:
                    self._help[command] = r.stdout
                elif "No such command" not in r.stderr:
                    raise RuntimeError(f"orchestra-schema {command} --help: {r.stderr.strip()}")
        return self._help[command]

    def missing(self, command: str, option: str | None = None) -> str | None:
        if not self.exe:
            return "orchestra-schema not installed"
        text = self.help(command)
        if text is None:
            return f"not available: no `{command}` command yet"
        if option and option not in text:
            return f"not available: `{command}` has no {option} option"
        return None

    def has_option(self, command: str, option: str) -> bool:
        return option in (self.help(command) or "")

    def argv(self, db: Path, *args: str, timeout: float | None = None) -> list[str]:
        glob = ["--timeout", str(timeout)] if timeout else []
        return [self.exe or "orchestra-schema", *glob, "-q", "-d", str(db), *args]


def shell_secure_delete() -> bool:
    """Whether the sqlite3 shell zeroes freed pages by default (Debian builds it so)."""
    if not program("sqlite3"):
        return False
    r = subprocess.run(sqlite3_argv(":memory:", "PRAGMA secure_delete"), capture_output=True, text=True)
    return r.stdout.strip() == "1"


def _absent(*programs: str) -> str | None:
    lacking = [p for p in programs if not program(p)]
    return f"not installed: {', '.join(lacking)}" if lacking else None


# -- contenders shared by several groups ---------------------------------------


def sqlite3_argv(*args: str, timeout_ms: int | None = None) -> list[str]:
    # -cmd .timeout: the shell has no busy timeout unless asked (only the
    # writer-stall runs need it; a DBA typing .backup by hand does not add it).
    wait = ["-cmd", f".timeout {timeout_ms}"] if timeout_ms else []
    return [program("sqlite3") or "sqlite3", *wait, *args]


def tool_backup(tool: Tool, name="orchestra-schema backup", timeout=None) -> Contender:
    return Contender(name, lambda p: [Step(tool.argv(p.db, "backup", "--output", str(p.out),
                                                     timeout=timeout))],
                     tool.missing("backup", "--output"),
                     "online; quick_check of the snapshot copied (raw copy), fsynced", CopiedEveryRow())


def sqlite3_backup(name="sqlite3 .backup", timeout_ms=None) -> Contender:
    return Contender(name, lambda p: [Step(sqlite3_argv(str(p.db), f".backup '{p.out}'",
                                                        timeout_ms=timeout_ms))],
                     _absent("sqlite3"), check=CopiedEveryRow())


def sqlite3_backup_checked() -> Contender:
    return Contender("sqlite3 .backup + quick_check",
                     lambda p: [Step(sqlite3_argv(str(p.db), f".backup '{p.out}'")),
                                Step(sqlite3_argv(str(p.out), "PRAGMA quick_check"), "ok")],
                     _absent("sqlite3"), "what a careful DBA runs by hand", CopiedEveryRow())


def vacuum_into(timeout_ms=None) -> Contender:
    return Contender("sqlite3 VACUUM INTO",
                     lambda p: [Step(sqlite3_argv(str(p.db), f"VACUUM INTO '{p.out}'",
                                                  timeout_ms=timeout_ms))],
                     _absent("sqlite3"), "rebuilds the copy (defragmented)", CopiedEveryRow())


# The online backup API in one step, as the tool's backup falls back to it: one read
# transaction, so WAL writers carry on and no commit restarts it.
APSW_BACKUP = """import apsw, sys
source = apsw.Connection(sys.argv[1], flags=apsw.SQLITE_OPEN_READONLY)
source.setbusytimeout(int(float(sys.argv[3]) * 1000))
with apsw.Connection(sys.argv[2]).backup("main", source, "main") as backup:
    backup.step(-1)
"""


def apsw_backup(timeout_s: float = 10) -> Contender:
    return Contender("apsw backup, one step",
                     lambda p: [Step([sys.executable, "-c", APSW_BACKUP, str(p.db), str(p.out),
                                      str(timeout_s)])],
                     None, "the API the tool's backup falls back to; no check", CopiedEveryRow())


def _ratio_at_most(limit: float, contender: str, reference: str):
    def check(medians: dict[str, float]) -> bool | None:
        if contender not in medians or reference not in medians:
            return None
        return medians[contender] <= limit * medians[reference]
    return check


# -- the groups ----------------------------------------------------------------


def groups(tool: Tool) -> list[Group]:
    return [backup_group(tool), backup_group(tool, wal=True), rollback_group(tool), status_group(tool),
            verify_group(tool), rehearse_group(tool)]


def backup_group(tool: Tool, wal: bool = False) -> Group:
    checked = "sqlite3 .backup + quick_check"
    return Group(
        "backup-wal" if wal else "backup",
        f"Backup of the live database (made by EF Core), {'WAL' if wal else 'rollback journal'}",
        "ef-wal" if wal else "ef",
        [Contender("cp", lambda p: [Step(["cp", str(p.db), str(p.out)])], None,
                   "physical limit; no fsync, not safe on a live database", CopiedEveryRow()),
         sqlite3_backup(), sqlite3_backup_checked(), vacuum_into(), apsw_backup(),
         tool_backup(tool)],
        [checked],
        [Target("orchestra-schema backup", f"<= 1.0x {checked}",
                _ratio_at_most(1.0, "orchestra-schema backup", checked))],
    )


def rollback_group(tool: Tool) -> Group:
    rollback = ["rollback", "--to", CORE, "--yes"]
    no_backup = ["--no-backup"] if tool.has_option("rollback", "--no-backup") else []
    yoyo = program("yoyo")
    zeroing = shell_secure_delete()
    contenders = [
        Contender("sqlite3 shell, rollback file",
                  lambda p: [Step(sqlite3_argv(str(p.db), f".read '{CHAT_ROLLBACK}'"))],
                  _absent("sqlite3"), "history not updated" + (
                      "; this SQLite zeroes freed pages (SECURE_DELETE)" if zeroing else ""),
                  dropped_chat_only),
        Contender("orchestra-schema rollback", lambda p: [Step(tool.argv(p.db, *rollback, *no_backup))],
                  tool.missing("rollback"),
                  "--no-backup" if no_backup else "no --no-backup option: includes its backup, if any",
                  dropped_chat_only),
        Contender("yoyo rollback (stock)",
                  lambda p: [Step([yoyo or "yoyo", "rollback", "--batch", "--no-config-file",
                                   "--database", f"sqlite:///{p.db.resolve()}",
                                   "--revision", CHAT, str(SQL_DIR)])],
                  _absent("yoyo"), "stock SQLite backend (Python's sqlite3: the system SQLite)",
                  dropped_chat_only),
    ]
    if zeroing:  # the same work as apsw's SQLite, which leaves freed pages as they were
        contenders.append(Contender(
            "sqlite3 shell, secure_delete off",
            lambda p: [Step(sqlite3_argv("-cmd", "PRAGMA secure_delete = OFF", str(p.db),
                                         f".read '{CHAT_ROLLBACK}'"))],
            None, "same work as apsw's SQLite: freed pages keep their old bytes", dropped_chat_only))
    if no_backup:
        contenders.append(Contender("orchestra-schema rollback, with its backup",
                                    lambda p: [Step(tool.argv(p.db, *rollback))], None,
                                    "the default: backup first", dropped_chat_only))
    return Group("rollback", "Chat rollback (drop ChatMessages, ChatSessions)", "history",
                 contenders, ["sqlite3 shell, rollback file"],
                 [Target("orchestra-schema rollback", "<= 1.1x sqlite3 shell",
                         _ratio_at_most(1.1, "orchestra-schema rollback",
                                        "sqlite3 shell, rollback file"))],
                 fresh_copy=True)


def status_group(tool: Tool) -> Group:
    yoyo = program("yoyo")
    return Group(
        "status", "Status (which migrations are applied)", "history",
        [Contender("orchestra-schema status", lambda p: [Step(tool.argv(p.db, "status"))],
                   tool.missing("status")),
         Contender("yoyo list (stock)",
                   lambda p: [Step([yoyo or "yoyo", "list", "--batch", "--no-config-file",
                                    "--database", f"sqlite:///{p.db.resolve()}", str(SQL_DIR)])],
                   _absent("yoyo")),
         Contender("sqlite3 SELECT history",
                   lambda p: [Step(sqlite3_argv(str(p.db), "SELECT * FROM _yoyo_migration"))],
                   _absent("sqlite3"), "the floor: one query")],
        ["orchestra-schema status"],
        [Target("orchestra-schema status", "<= 1.0x yoyo list (stock)",
                _ratio_at_most(1.0, "orchestra-schema status", "yoyo list (stock)"))],
    )


def verify_group(tool: Tool) -> Group:
    return Group(
        "verify", "Verify (integrity, history, drift)", "history",
        [Contender("sqlite3 PRAGMA quick_check",
                   lambda p: [Step(sqlite3_argv(str(p.db), "PRAGMA quick_check"), "ok")],
                   _absent("sqlite3")),
         Contender("sqlite3 quick_check + foreign_key_check",
                   lambda p: [Step(sqlite3_argv(str(p.db), "PRAGMA quick_check",
                                                "PRAGMA foreign_key_check"), "ok")],
                   _absent("sqlite3"), "the same two PRAGMAs verify runs"),
         Contender("orchestra-schema verify", lambda p: [Step(tool.argv(p.db, "verify"))],
                   tool.missing("verify"))],
        ["sqlite3 PRAGMA quick_check"],
    )


def rehearse_group(tool: Tool) -> Group:
    to = ["--to", CORE] if tool.has_option("rehearse", "--to") else []
    backup = tool_backup(tool)
    # Against the tool's backup; while it does not exist, against its stand-in.
    reference = "sqlite3 .backup + quick_check" if backup.missing else backup.name
    return Group(
        "rehearse", "Rehearsal of the chat rollback on a snapshot", "history",
        [backup, sqlite3_backup_checked(),
         Contender("orchestra-schema rehearse", lambda p: [Step(tool.argv(p.db, "rehearse", *to))],
                   tool.missing("rehearse"),
                   "view of the live file, its changes in a temporary file; live database never changed"),
         Contender("orchestra-schema rehearse --memory",
                   lambda p: [Step(tool.argv(p.db, "rehearse", *to, "--memory"))],
                   tool.missing("rehearse", "--memory"), "snapshot in memory"),
         Contender("by hand: cp + sqlite3 rollback file",
                   lambda p: [Step(["cp", str(p.db), str(p.out)]),
                              Step(sqlite3_argv(str(p.out), f".read '{CHAT_ROLLBACK}'"))],
                   _absent("sqlite3"), "the procedure's manual test; no checks")],
        [backup.name, "sqlite3 .backup + quick_check"],
        [Target("orchestra-schema rehearse", f"<= 1.5x {reference}",
                _ratio_at_most(1.5, "orchestra-schema rehearse", reference))],
    )


def writer_contenders(tool: Tool, timeout_s: float) -> list[Contender]:
    """Backups run while a writer commits; every one waits on locks (busy timeout)."""
    ms = int(timeout_s * 1000)
    return [tool_backup(tool, timeout=timeout_s), sqlite3_backup(timeout_ms=ms),
            vacuum_into(timeout_ms=ms), apsw_backup(timeout_s)]
