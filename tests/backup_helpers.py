"""Helpers for the backup, restore and recover tests: writer processes, damage, waiting."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import apsw

from helpers import cli, connect

# Commits pairs of rows, each pair in one transaction, until the stop file exists;
# then prints "<commits> <busy errors>". A backup must never hold half a pair.
# Arguments: database, stop file, busy timeout (ms), pause between commits (ms),
# optionally the WAL autocheckpoint (pages; 1 checkpoints after every commit).
# While STOP.hold exists it commits nothing, and says so by creating STOP.held (see quiet).
WRITER = r"""
import apsw, os, sys, time
path, stop, timeout_ms, pause_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = apsw.Connection(path)
c.setbusytimeout(timeout_ms)
if len(sys.argv) > 5:
    c.execute("PRAGMA wal_autocheckpoint = " + str(int(sys.argv[5])))
commits = busy = 0
print("started", flush=True)
while not os.path.exists(stop):
    if os.path.exists(stop + ".hold"):
        open(stop + ".held", "w").close()
        time.sleep(0.001)
        continue
    try:
        with c:
            c.execute("INSERT INTO pairs (half, pad) VALUES (1, randomblob(100))")
            c.execute("INSERT INTO pairs (half, pad) VALUES (2, randomblob(100))")
        commits += 1
    except apsw.BusyError:
        busy += 1
    time.sleep(pause_ms / 1000)
print(commits, busy, flush=True)
"""

# Writes one row with checkpoints off and keeps its connection open, so the frame
# stays in the -wal; after a line on stdin it reads what it sees and exits.
WAL_HOLDER = r"""
import apsw, sys
c = apsw.Connection(sys.argv[1])
c.execute("PRAGMA wal_autocheckpoint = 0")
c.execute("INSERT INTO [HangFire.Job] (State) VALUES ('only in the wal')")
print("ready", flush=True)
sys.stdin.readline()
seen = c.execute("SELECT count(*) FROM ChatMessages").fetchone()[0]
ok = c.execute("PRAGMA integrity_check").fetchone()[0]
print(seen, ok, flush=True)
"""

# Holds a read transaction (an old WAL snapshot) open until a line arrives on stdin.
READ_HOLDER = r"""
import apsw, sys
c = apsw.Connection(sys.argv[1])
c.execute("BEGIN")
c.execute("SELECT count(*) FROM sqlite_schema").fetchall()
print("reading", flush=True)
sys.stdin.readline()
c.execute("COMMIT")
"""

# Holds a write transaction (argv[2]: IMMEDIATE or EXCLUSIVE) open until a line arrives on stdin.
LOCK_HOLDER = r"""
import apsw, sys
c = apsw.Connection(sys.argv[1])
c.execute("BEGIN " + sys.argv[2])
c.execute("INSERT INTO [HangFire.Job] (State) VALUES ('uncommitted')")
print("locked", flush=True)
sys.stdin.readline()
c.execute("ROLLBACK")
"""


def backup_json(db, *args) -> dict:
    """`backup --json` in this process; its output, after checking it exited 0."""
    result = cli("--database", db, "--json", "backup", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def spawn(script: str, *args) -> subprocess.Popen:
    """A Python process running script; waits for its first line (it is ready)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.first_line = proc.stdout.readline().strip()
    return proc


def add_pairs(path: Path, n: int, wal: bool) -> None:
    with connect(path) as c:
        if wal:
            c.execute("PRAGMA journal_mode = WAL").fetchall()
        c.execute("CREATE TABLE IF NOT EXISTS pairs (id INTEGER PRIMARY KEY, half INTEGER, pad BLOB)")
        with c:
            c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                      "INSERT INTO pairs (half, pad) SELECT 1 + i % 2, randomblob(200) FROM n", (2 * n,))


def pairs_state(path: Path) -> tuple[int, int, int]:
    """(rows, first halves, second halves) of pairs, read without touching the file."""
    c = apsw.Connection(f"file:{path}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return c.execute("SELECT count(*), total(half = 1), total(half = 2) FROM pairs").fetchone()
    finally:
        c.close()


def add_padding(path: Path, megabytes: int) -> None:
    """Make the database big enough that copying it takes many backup steps."""
    with connect(path) as c:
        c.execute("CREATE TABLE IF NOT EXISTS padding (id INTEGER PRIMARY KEY, blob BLOB)")
        with c:
            c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                      "INSERT INTO padding (blob) SELECT randomblob(1000) FROM n", (megabytes * 1000,))


def leaf_pages(path: Path, table: str) -> list[tuple[int, int]]:
    """(page number, rows on it) of a table's b-tree leaves, from the dbstat table."""
    with connect(path) as c:
        return c.execute("SELECT pageno, ncell FROM dbstat WHERE name = ? AND pagetype = 'leaf' "
                         "ORDER BY pageno", (table,)).fetchall()


def root_page(path: Path, table: str) -> int:
    with connect(path) as c:
        return c.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]


def overwrite_pages(path: Path, pages, fill: bytes | None = None) -> None:
    """Damage the file the way a bad disk does: whole pages replaced by garbage."""
    page_size = int.from_bytes(Path(path).read_bytes()[16:18], "big")
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(fill * page_size if fill else os.urandom(page_size))


@contextlib.contextmanager
def quiet(stop: Path):
    """The WRITER given `stop` commits nothing inside this block (it may be between commits
    when the block begins; it has finished that commit when the block is entered)."""
    hold, held = Path(f"{stop}.hold"), Path(f"{stop}.held")
    held.unlink(missing_ok=True)  # only a writer that has seen this hold may say it holds
    hold.touch()
    try:
        wait_for(held.exists)
        yield
    finally:
        hold.unlink()


def wait_for(condition, timeout: float = 30.0, interval: float = 0.001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {condition}")


def files_in(directory: Path) -> set[str]:
    return {p.name for p in Path(directory).iterdir()}

