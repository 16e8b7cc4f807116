"""Fault-injection helpers: a database of many small migrations, kill -9 inside a
command's work, the evidence a killed run leaves, the invariants, and the figures.

A kill counts as landing inside the work only if, at the instant of the signal,
the process held a file of the database's directory open (read from /proc): a
kill during Python's start-up proves nothing. Evidence of a run interrupted
part-way is read from the files before anything opens the database again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from helpers import connect
from orchestra_schema.engines.sqlite import files as sqlitefile
from orchestra_schema.files import staging
from orchestra_schema.engines.sqlite.database import open_immutable
from orchestra_schema.engines.sqlite.backup import check_backup

ROWS = 20000
HOT_JOURNAL, UNCOMMITTED = "hot journal", "uncommitted WAL frame(s)"
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # a rollback journal's first 8 bytes
_PENDING_BYTE = 0x40000000  # SQLite's lock bytes: PENDING, then RESERVED, then SHARED
FOREIGN = "jobs"  # a table no migration owns, like Hangfire's: never touched, never lost
CAN_SEE_OPEN_FILES = Path("/proc/self/fd").is_dir()


def sqlite_table(i: int, rows: int) -> str:
    return (f"CREATE TABLE t{i} (n INTEGER PRIMARY KEY, payload BLOB);\n"
            f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {rows})\n"
            f"INSERT INTO t{i} SELECT n, randomblob(64) FROM r;\n"
            f"CREATE INDEX t{i}_payload ON t{i} (payload);\n")


def many_migrations(directory: Path, n: int = 25, rows: int = ROWS, table_sql=sqlite_table) -> Path:
    """n migrations, each a table with `rows` rows and an index, in a chain
    (table_sql(i, rows): its statements in the engine's SQL)."""
    directory.mkdir(exist_ok=True)
    previous = None
    for i in range(n):
        depends = f"-- depends: {previous}\n" if previous else ""
        (directory / f"m{i:03d}.sql").write_text(f"-- table t{i}\n{depends}" + table_sql(i, rows))
        (directory / f"m{i:03d}.rollback.sql").write_text(f"DROP TABLE t{i};\n")
        previous = f"m{i:03d}"
    return directory


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestra_schema", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def kill_at(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL proc after `seconds`; True if it was still running then."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def timed_run(*args) -> float:
    started = time.perf_counter()
    proc = start(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.perf_counter() - started


# ---- the invariants

def check_history_matches_schema(db: Path, n: int, rows: int = ROWS, readonly: bool = False) -> set[str]:
    """The database passes integrity_check and its history is its schema.

    Each migration's table exists, whole, exactly when yoyo's history and our
    checksums say it is applied; every applied migration's dependency is
    applied; and yoyo's log alternates apply and rollback per migration,
    ending where the history is (nothing applied twice).
    """
    with _open(db, readonly) as c:  # a read-write open rolls back a hot journal, as the app would
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        applied = _ids(c, names, "_yoyo_migration")
        summed = _ids(c, names, "_orchestra_schema_checksum")
        for i in range(n):
            mid = f"m{i:03d}"
            present = f"t{i}" in names
            assert present == (mid in applied) == (mid in summed), (mid, present, mid in applied)
            if present:
                assert c.execute(f"SELECT count(*) FROM t{i}").fetchone()[0] == rows
            if i and mid in applied:
                assert f"m{i - 1:03d}" in applied, f"{mid} applied without its dependency m{i - 1:03d}"
        if "_yoyo_log" in names:
            check_log(c, applied)
    return applied


def _ids(c, names: set[str], table: str) -> set[str]:
    return {r[0] for r in c.execute(f"SELECT migration_id FROM {table}")} if table in names else set()


_DIRECTION = {"apply": 1, "mark": 1, "rollback": -1, "unmark": -1}


def check_log(c, applied: set[str]) -> None:
    """In yoyo's log (commit order), no migration is applied or rolled back twice in a row."""
    last: dict[str, int] = {}
    for mid, operation in c.execute("SELECT migration_id, operation FROM _yoyo_log ORDER BY rowid"):
        direction = _DIRECTION[operation]
        assert last.get(mid, -1) != direction, f"_yoyo_log: {mid} {operation} twice in a row"
        last[mid] = direction
    assert {mid for mid, d in last.items() if d == 1} == applied, "_yoyo_log disagrees with the history"


@contextlib.contextmanager
def _open(path: Path, readonly: bool):
    if not readonly:
        with connect(path) as c:
            yield c
        return
    c = open_immutable(path)
    try:
        yield c
    finally:
        c.close()


def contents(path: Path, readonly: bool = False) -> dict[str, str]:
    """{table: SHA-256 of its rows in rowid order}: equal contents, equal dicts."""
    with _open(path, readonly) as c:
        names = [r[0] for r in c.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        return {name: _digest(c.execute(f'SELECT * FROM "{name}" ORDER BY rowid')) for name in names}


def _digest(rows) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(row).encode())
    return h.hexdigest()


def final_copies(directory: Path, database: Path) -> dict[str, list[Path]]:
    """Copies of database under a final (not temporary) name, by kind."""
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        name = path.name
        if not name.startswith(database.name + ".") or staging.TEMP_MARK in name:
            continue
        if name.endswith((".json",) + sqlitefile.SIDECARS):
            continue
        kind = name[len(database.name) + 1:].split("_")[0]  # backup, pre-restore, corrupted...
        found.setdefault(kind, []).append(path)
    return found


def check_copies(directory: Path, database: Path) -> int:
    """Every backup and safety copy under a final name passes check_backup; returns how many."""
    copies = final_copies(directory, database)
    checked = 0
    for kind in ("backup", "pre-restore"):
        for path in copies.get(kind, []):
            check = check_backup(path)
            assert check.ok, f"{path.name}: {check.problems}"
            checked += 1
    return checked


def remove_copies(directory: Path, database: Path, keep=()) -> None:
    """Remove every copy of database (and its manifest, -wal, -shm) but `keep`,
    and the temporary files of killed runs: the directory as a run first found it."""
    kept = {Path(p).name for p in keep} | {f"{Path(p).name}.json" for p in keep}
    for path in Path(directory).iterdir():
        if path.name.startswith(database.name + ".") and path.name not in kept:
            path.unlink()
    staging.clean_stale(directory)


def settle(database: Path) -> None:
    """Open and close the database so it lies in its main file alone, no -wal, no -shm."""
    with connect(database) as c:
        c.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    Path(f"{database}-shm").unlink(missing_ok=True)


# ---- killing a run inside its work

def holds_files_in(pid: int, directory: Path) -> bool:
    """Has process pid a file of `directory` open right now?"""
    prefix = str(Path(directory).resolve()) + os.sep
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
    return False


def wait_until_working(proc: subprocess.Popen, directory: Path, timeout: float = 60) -> bool:
    """Wait until proc opens a file in directory (its work began); False if it exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if holds_files_in(proc.pid, directory):
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.args}: never opened a file in {directory}")
        time.sleep(0.001)
    return False


@dataclass
class Kill:
    landed: bool  # killed while it held a file of the directory open: inside the work
    returncode: int
    stderr: str
    evidence: list[str]  # what the interrupted work left behind
    worked: float  # seconds from the start of its work to its kill or its end
    writing: bool = False  # killed holding SQLite's write lock: inside a write transaction

    @property
    def in_transaction(self) -> bool:
        """Killed inside a write transaction on the database: SQLite rolls it back."""
        return any(e == HOT_JOURNAL or e.endswith(UNCOMMITTED) for e in self.evidence)


def kill_during(argv, directory: Path, database: Path, delay: float) -> Kill:
    """Start a run, wait until its work begins, SIGKILL it `delay` s later.

    The run is stopped (SIGSTOP) first, so what it holds then is what the kill interrupts.
    """
    proc = start(*argv)
    held, writing, began = False, False, None
    if wait_until_working(proc, directory):
        began = time.perf_counter()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
        with contextlib.suppress(ProcessLookupError):
            stop(proc.pid)
            held = holds_files_in(proc.pid, directory)
            writing = holds_write_lock(proc.pid, database)
            os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    worked = time.perf_counter() - began if began is not None else 0.0
    landed = held and proc.returncode == -signal.SIGKILL
    return Kill(landed, proc.returncode, err, interrupted_work(directory, database, proc.pid), worked,
                landed and writing)


def stop(pid: int) -> None:
    """SIGSTOP pid and wait until it is stopped (or gone): the signal is delivered asynchronously."""
    os.kill(pid, signal.SIGSTOP)
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in "TtZX":
            return
        time.sleep(0.0002)


def holds_write_lock(pid: int, database: Path) -> bool:
    """Does pid hold SQLite's write lock on database (from /proc/locks)?

    Rollback journal: the RESERVED byte of the file (or PENDING/EXCLUSIVE past it);
    WAL: the WAL_WRITE_LOCK byte of the -shm (offset 120). Held for exactly the
    span of a write transaction.
    """
    wanted = {}
    for path, first, last in ((database, _PENDING_BYTE + 1, _PENDING_BYTE + 1),
                              (Path(f"{database}-shm"), 120, 120)):
        with contextlib.suppress(OSError):
            wanted[os.stat(path).st_ino] = (first, last)
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields:  # a waiter, not a holder
                continue
            try:
                kind, owner, device, start, end = fields[3], int(fields[4]), fields[5], fields[6], fields[7]
            except (IndexError, ValueError):
                continue
            inode = int(device.rsplit(":", 1)[1])
            if owner == pid and kind == "WRITE" and inode in wanted:
                first, last = wanted[inode]
                if int(start) <= last and (end == "EOF" or int(end) >= first):
                    return True
    return False


def interrupted_work(directory: Path, database: Path, pid: int) -> list[str]:
    """What a run killed part-way leaves: its temporary files, a hot journal, WAL
    frames (uncommitted, or committed but the connection not yet closed: the last
    connection's close checkpoints and deletes the WAL). Read before any open."""
    evidence = [f"temporary file {p.name}" for p in sorted(Path(directory).iterdir())
                if f"{staging.TEMP_MARK}{pid}-" in p.name]
    journal = Path(f"{database}-journal")
    with contextlib.suppress(OSError):
        if journal.stat().st_size and journal.read_bytes()[:8] == JOURNAL_MAGIC:
            evidence.append(HOT_JOURNAL)
    frames, uncommitted = wal_frames(database)
    if uncommitted:
        evidence.append(f"{uncommitted} {UNCOMMITTED}")
    elif frames:
        evidence.append(f"{frames} committed WAL frame(s), the writer's connection still open")
    return evidence


def wal_frames(database: Path) -> tuple[int, int]:
    """(frames, frames after the last commit frame) of the WAL's current generation."""
    try:
        data = Path(f"{database}-wal").read_bytes()
    except OSError:
        return 0, 0
    if len(data) < 32:
        return 0, 0
    page_size, salt = int.from_bytes(data[8:12], "big"), data[16:24]
    offset, frames, since_commit = 32, 0, 0
    while offset + 24 + page_size <= len(data) and data[offset + 8:offset + 16] == salt:
        committed = int.from_bytes(data[offset + 4:offset + 8], "big")  # db size: commit frames only
        frames, since_commit = frames + 1, 0 if committed else since_commit + 1
        offset += 24 + page_size
    return frames, since_commit


def run_to_end(argv, timeout: float = 300, code: int = 0) -> subprocess.CompletedProcess:
    """A run that must succeed (the next run after a kill, without manual repair);
    code: its exit code (recover exits 1 when it rebuilt a database that lost rows)."""
    proc = start(*argv)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == code, f"{' '.join(map(str, argv[-4:]))}: exit {proc.returncode}: {err.strip()}"
    assert "Traceback" not in err
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def work_span(argv, directory: Path) -> float:
    """Seconds a complete run holds files of directory open: from its first open to
    its last close, not counting Python's start-up and shutdown."""
    proc = start(*argv)
    wait_until_working(proc, directory)
    began = last = time.perf_counter()
    while proc.poll() is None:
        if holds_files_in(proc.pid, directory):
            last = time.perf_counter()
        time.sleep(0.001)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return last - began


# ---- the figures

@contextlib.contextmanager
def recorded(failures: list[str], what: str):
    """Record a failed invariant and go on, so a long run reports every failure."""
    try:
        yield
    except AssertionError as err:
        failures.append(f"{what}: {err}")


@dataclass
class Tally:
    """One command's kill trials: printed at the end of the run (conftest)."""

    HEADER = (f"{'killed':9} {'journal':8} {'span s':>7} {'trials':>7} {'mid-run':>8} "
              f"{'writing':>8} {'interrupted':>12} {'finished':>9} {'failures':>9}")
    command: str
    mode: str
    span: float = 0.0  # seconds of work in a complete run, the kills' range
    trials: int = 0
    landed: int = 0  # kills that landed inside the work
    writing: int = 0  # of those, kills inside a write transaction (SQLite's write lock held)
    interrupted: int = 0  # of those, runs that left interrupted work behind
    finished_first: int = 0  # runs that ended before the kill came (exit 0 required)
    failures: list[str] = field(default_factory=list)

    def count(self, kill: Kill) -> None:
        self.trials += 1
        self.landed += kill.landed
        self.writing += kill.writing
        self.interrupted += kill.landed and bool(kill.evidence)
        if kill.returncode != -signal.SIGKILL:
            self.finished_first += 1
            if kill.returncode != 0:
                self.failures.append(f"trial {self.trials}: exit {kill.returncode}: {kill.stderr.strip()}")
        if "Traceback" in kill.stderr:
            self.failures.append(f"trial {self.trials}: traceback: {kill.stderr.strip()[-300:]}")

    def checking(self, what: str):
        return recorded(self.failures, f"trial {self.trials}: {what}")

    def line(self) -> str:
        return (f"{self.command:9} {self.mode:8} {self.span:7.2f} {self.trials:7} {self.landed:8} "
                f"{self.writing:8} {self.interrupted:12} {self.finished_first:9} {len(self.failures):9}")


@dataclass
class Rounds:
    """Rounds of several runs at once on one database: printed at the end of the run."""

    HEADER = (f"{'at once':9} {'journal':8} {'rounds':>7} {'runs':>7} {'exit 0':>7} {'exit 3':>7} "
              f"{'backups':>8} {'failures':>9}")
    mode: str
    rounds: int = 0
    runs: int = 0
    exit0: int = 0
    exit3: int = 0
    backups: int = 0  # backups published, each checked
    succeeded: set[str] = field(default_factory=set)  # commands that ran to exit 0
    failures: list[str] = field(default_factory=list)

    def count(self, results) -> None:
        """results: (command, exit code, stderr) of each run: 0 or 3, one line, no traceback."""
        self.rounds += 1
        for command, code, err in results:
            self.runs += 1
            self.exit0 += code == 0
            self.exit3 += code == 3
            if code == 0:
                self.succeeded.add(command.split()[0])
            if code not in (0, 3) or "Traceback" in err or "internal error" in err:
                self.failures.append(f"round {self.rounds}: {command}: exit {code}: {err.strip()[-300:]}")

    def checking(self, what: str):
        return recorded(self.failures, f"round {self.rounds}: {what}")

    def line(self) -> str:
        return (f"{'mixed':9} {self.mode:8} {self.rounds:7} {self.runs:7} {self.exit0:7} {self.exit3:7} "
                f"{self.backups:8} {len(self.failures):9}")


FIGURES: list = []  # Tally and Rounds objects of this session, in order


def tally(command: str, mode: str, span: float = 0.0) -> Tally:
    t = Tally(command, mode, span)
    FIGURES.append(t)
    return t


def kill_trials(scenario, trials: int, seed: int,
                enough: Callable[[Tally], bool] | None = None) -> dict[str, Tally]:
    """Kill `trials` runs inside their work, at random instants of its measured span.

    enough: whether a command's kills prove something (landed in the work); if
    not every tally is enough after `trials`, up to three times as many again are
    run (a loaded machine stretches start-up and moves the kills, and a command
    whose work is a few tens of ms leaves evidence in only some of its kills).

    A run that ends before its kill shortens its command's span to its own.
    The instants are stratified: a command's k-th of n kills falls at a uniform
    random point of the k-th n-th of the span, so even a short run covers all of it.
    scenario: .mode, .directory, .database, .spans() -> {command: seconds} (complete runs),
    .argv(trial) -> (command, argv), .check(command, kill) after each kill,
    .finish(command) runs the next run to its end and checks again.
    """
    rng = random.Random(seed)
    spans = scenario.spans()
    tallies = {command: tally(command, scenario.mode, span) for command, span in spans.items()}
    share = -(-trials // len(spans))  # kills per command: the scenario takes its commands in turn
    for trial in range(4 * trials):
        if trial >= trials and (enough is None or all(map(enough, tallies.values()))):
            break
        command, argv = scenario.argv(trial)
        t = tallies[command]
        delay = spans[command] * (t.trials % share + rng.random()) / share
        kill = kill_during(argv, scenario.directory, scenario.database, delay)
        if kill.returncode == 0 and kill.worked:  # a shorter run than the calibration's
            spans[command] = t.span = min(spans[command], kill.worked)
        with t.checking("after the kill"):
            scenario.check(command, kill)
        t.count(kill)
        with t.checking("the next run"):
            scenario.finish(command)
    return tallies


# ---- killing a run after each of its file-name changes

# Runs orchestra-schema, SIGKILLing itself right after its N-th rename, replace,
# link or unlink of a path in DIRECTORY: every point where a crash can leave
# the directory between two names. Arguments: DIRECTORY N ARGS...
STEP_KILLER = r"""
import os, signal, sys
directory, limit = os.path.realpath(sys.argv[1]), int(sys.argv[2])
steps = 0
def killing(operation):
    def step(*args, **kwargs):
        global steps
        result = operation(*args, **kwargs)
        paths = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
        if any(os.path.realpath(p).startswith(directory + os.sep) for p in paths):
            steps += 1
            if steps == limit:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    return step
for name in ("rename", "replace", "link", "unlink"):
    setattr(os, name, killing(getattr(os, name)))
from orchestra_schema.cli import main
main(sys.argv[3:], prog_name="orchestra-schema")
"""


def kill_after_step(directory: Path, step: int, *args) -> subprocess.CompletedProcess:
    """Run orchestra-schema and kill it right after its step-th file-name change in directory."""
    return subprocess.run([sys.executable, "-c", STEP_KILLER, str(directory), str(step), *map(str, args)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def every_step_killed(directory: Path, *args, prepare=lambda: None):
    """Yield (step, result) killing the run after step 1, 2, ... until one runs to its end."""
    for step in range(1, 100):
        prepare()
        result = kill_after_step(directory, step, *args)
        yield step, result
        if result.returncode != -signal.SIGKILL:
            return
    raise AssertionError("more than 99 file-name changes")


def figures_table() -> list[str]:
    lines = []
    for kind in (Tally, Rounds):
        rows = [f.line() for f in FIGURES if isinstance(f, kind)]
        if rows:
            lines += ([""] if lines else []) + [kind.HEADER] + rows
    return lines
