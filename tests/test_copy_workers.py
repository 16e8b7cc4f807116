"""Copy workers read the snapshot the main process reads, whatever the app commits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from helpers import connect
from test_copy_to import guid, orchestra_db

from orchestra_schema.copy_to import workers as copy_workers
from orchestra_schema.copy_to.lines import Select
from orchestra_schema.engines.sqlite.database import Database

IDS = Select('SELECT CAST("Id" || char(10) AS BLOB) FROM "ChatMessages" '
             "WHERE rowid BETWEEN ? AND ? ORDER BY rowid")  # one Id a line


def worker_ids(src: Database, workers: copy_workers.Workers) -> list[bytes]:
    """The ChatMessages Ids the workers read, given out in small ranges."""
    low, high = src.execute('SELECT min(rowid), max(rowid) FROM "ChatMessages"').fetchone()
    rows = src.execute('SELECT count(*) FROM "ChatMessages"').fetchone()[0]
    (share,) = workers.plan([(IDS, low, high, rows)])
    return [line for piece in copy_workers.Share(workers, share)
            for line in piece.data.splitlines()]


def main_ids(src: Database) -> list[bytes]:
    return [r[0] for r in src.execute(
        'SELECT CAST("Id" AS BLOB) FROM "ChatMessages" ORDER BY rowid')]


def move_one_message(path: Path, n: int) -> None:
    """What the app might do: one commit that deletes the oldest message and adds one."""
    with connect(path) as c:
        c.execute("BEGIN IMMEDIATE")
        c.execute('DELETE FROM "ChatMessages" WHERE rowid = (SELECT min(rowid) FROM "ChatMessages")')
        c.execute("INSERT INTO ChatMessages SELECT ?, SessionId, Author, Content, MessageType, "
                  "CreatedAt, Metadata FROM ChatMessages LIMIT 1", (guid(10_000_000 + n),))
        c.execute("COMMIT")


@pytest.mark.parametrize("mode, moment", [
    ("wal", "between the begins"),  # only WAL lets a commit land there: readers do not block it
    ("wal", "after the first probe"),
    ("delete", "after the first probe"),
])
def test_a_commit_while_beginning_is_seen_and_everyone_begins_again(tmp_path, monkeypatch,
                                                                    mode, moment):
    """The app commits while the readers begin: the data_version check sees it, all roll
    back and begin again, and then read one snapshot."""
    source = orchestra_db(tmp_path / "orchestra.db", sessions=4, messages=3000)
    with connect(source) as c:
        c.execute(f"PRAGMA journal_mode = {mode}")
    told, probed = [], []
    tell, version = copy_workers.Workers.tell, copy_workers._data_version

    def tell_then_commit(self, order, to=None):
        told.append(order)
        if moment == "between the begins" and order == "begin" and told.count("begin") == 1:
            move_one_message(source, 1)  # the main process's snapshot is already taken
        return tell(self, order, to)

    def probe_then_commit(conn):
        seen = version(conn)
        if moment == "after the first probe" and not probed:
            probed.append(seen)
            move_one_message(source, 1)
        return seen

    monkeypatch.setattr(copy_workers.Workers, "tell", tell_then_commit)
    monkeypatch.setattr(copy_workers, "_data_version", probe_then_commit)
    with Database.open(source, readonly=True) as src, \
            copy_workers.reading(src, 2, timeout=10) as workers:
        assert workers is not None and told.count("begin") == 2 and "rollback" in told
        assert sorted(worker_ids(src, workers)) == sorted(main_ids(src))  # in any order
        assert len(main_ids(src)) == 12_000


def test_no_quiet_moment_means_no_workers_and_one_snapshot(tmp_path, monkeypatch):
    """An app committing at every begin: after ATTEMPTS tries the copy goes on in the
    main process alone (its one snapshot), and the workers are gone."""
    source = orchestra_db(tmp_path / "orchestra.db", sessions=1, messages=100)
    tell = copy_workers.Workers.tell
    moves = iter(range(100))
    started = []

    def commit_at_every_begin(self, order, to=None):
        started.extend(p.pid for p in self.procs if p.pid not in started)
        if order == "begin":
            move_one_message(source, next(moves))
        return tell(self, order, to)

    monkeypatch.setattr(copy_workers.Workers, "tell", commit_at_every_begin)
    with Database.open(source, readonly=True) as src, \
            copy_workers.reading(src, 2, timeout=10) as workers:
        assert workers is None
        assert not src.connection.get_autocommit()  # in its read transaction
    assert next(moves) == copy_workers.ATTEMPTS
    for pid in started:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: not running, not a zombie


def test_a_worker_killed_mid_copy_is_an_error_not_a_short_copy(tmp_path):
    source = orchestra_db(tmp_path / "orchestra.db", sessions=4, messages=3000)
    with Database.open(source, readonly=True) as src, \
            copy_workers.reading(src, 2, timeout=10) as workers:
        os.kill(workers.procs[1].pid, signal.SIGKILL)
        time.sleep(0.1)
        with pytest.raises(Exception) as failed:
            worker_ids(src, workers)
    assert "a copy worker ended before its work was done" in str(failed.value)
    assert failed.value.exit_code == 6


def test_workers_by_default_only_where_they_pay_off(tmp_path, monkeypatch):
    from orchestra_schema.copy_to.transfer import AUTO_JOBS_FROM, auto_jobs

    assert auto_jobs(orchestra_db(tmp_path / "small.db")) == 0
    big = tmp_path / "big.db"
    big.write_bytes(b"")
    os.truncate(big, AUTO_JOBS_FROM)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert auto_jobs(big) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert auto_jobs(big) == 0


def test_sparse_rowids_make_few_ranges_and_every_row_is_in_one():
    from orchestra_schema.copy_to.workers import CHUNK_ROWIDS, _ranges

    assert _ranges(None, None, 0) == []
    assert _ranges(1, 10_000, 10_000) == [(1, 4096), (4097, 8192), (8193, 10_000)]
    sparse = _ranges(1, 2**62, 5001)  # 5000 rows, then one whose rowid was set by hand
    assert len(sparse) <= 2 and sparse[0][0] == 1 and sparse[-1][1] == 2**62
    assert all(b + 1 == c for (_, b), (c, _) in zip(sparse, sparse[1:]))
    dense = _ranges(-5, 20_000, 20_006)
    assert all(e - s + 1 == CHUNK_ROWIDS for s, e in dense[:-1])
    assert dense[0][0] == -5 and dense[-1][1] == 20_000
    assert all(b + 1 == c for (_, b), (c, _) in zip(dense, dense[1:]))


def test_a_worker_that_breaks_protocol_is_stopped_and_the_copy_fails():
    import subprocess
    import sys
    from orchestra_schema.errors import DatabaseUnavailable

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(DatabaseUnavailable, match="broke protocol .* nothing committed"):
        copy_workers._failed(proc, broke=True)
    assert proc.returncode == -signal.SIGKILL


def test_workers_run_our_code_whatever_directory_the_copy_runs_in(tmp_path, monkeypatch):
    """`python -m` looks in the working directory first: a DBA running copy-to from a
    checkout of another version must not get that version's workers. A relative source
    path still names the same file."""
    source = orchestra_db(tmp_path / "orchestra.db", sessions=2, messages=3000)
    other = tmp_path / "orchestra_schema"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "copy_workers.py").write_text("raise SystemExit('not our worker')\n")
    monkeypatch.chdir(tmp_path)
    with Database.open(Path("orchestra.db"), readonly=True) as src, \
            copy_workers.reading(src, 2, timeout=10) as workers:
        assert workers is not None
        assert sorted(worker_ids(src, workers)) == sorted(main_ids(src))
