"""Fault-injection helpers: many small migrations, kill -9 at random instants, invariants."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import connect

ROWS = 20000


def many_migrations(directory: Path, n: int = 25) -> Path:
    """n migrations, each a table with ROWS rows and an index, in a chain."""
    directory.mkdir(exist_ok=True)
    previous = None
    for i in range(n):
        depends = f"-- depends: {previous}\n" if previous else ""
        (directory / f"m{i:03d}.sql").write_text(
            f"-- table t{i}\n{depends}"
            f"CREATE TABLE t{i} (n INTEGER PRIMARY KEY, payload BLOB);\n"
            f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {ROWS})\n"
            f"INSERT INTO t{i} SELECT n, randomblob(64) FROM r;\n"
            f"CREATE INDEX t{i}_payload ON t{i} (payload);\n")
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


def check_history_matches_schema(db: Path, n: int) -> set[str]:
    """Each migration's table exists exactly when history and checksum say it is applied."""
    with connect(db) as c:  # a read-write open rolls back a hot journal, as the app would
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        applied = set()
        if "_yoyo_migration" in names:
            applied = {r[0] for r in c.execute("SELECT migration_id FROM _yoyo_migration")}
        summed = set()
        if "_orchestra_schema_checksum" in names:
            summed = {r[0] for r in c.execute("SELECT migration_id FROM _orchestra_schema_checksum")}
        for i in range(n):
            mid = f"m{i:03d}"
            present = f"t{i}" in names
            assert present == (mid in applied) == (mid in summed), (mid, present, mid in applied)
            if present:
                assert c.execute(f"SELECT count(*) FROM t{i}").fetchone()[0] == ROWS
    return applied


def kill_trials(db: Path, sql: Path, n: int, trials: int, seed: int) -> dict:
    """Alternate apply and rollback runs, each killed at a random instant of its run time."""
    rng = random.Random(seed)
    commands = [["apply"], ["rollback", "--to", "0", "--yes"]]
    spans = [timed_run("-d", db, "--sql-dir", sql, *c) for c in commands]
    killed = midway = 0
    for trial in range(trials):
        command, span = commands[trial % 2], spans[trial % 2]
        proc = start("-d", db, "--sql-dir", sql, "--timeout", "30", *command)
        killed += kill_at(proc, rng.uniform(0.0, span))
        midway += 0 < len(check_history_matches_schema(db, n)) < n
    return {"trials": trials, "killed": killed, "left_midway": midway}
