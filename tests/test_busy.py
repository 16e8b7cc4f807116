"""A locked database is exit 3 ("busy"), never 70 (internal error), whichever step meets the lock.

Another process holds the lock for real (backup_helpers.LOCK_HOLDER and the
holders below); where the lock must come in the middle of a command (after
its first commit, during the copy), a hook starts the holder just then.
"""

from __future__ import annotations

import apsw
import pytest

from backup_helpers import LOCK_HOLDER, READ_HOLDER, spawn
from helpers import CHAT, CORE, add_rows, assert_refused, cli, connect, file_state, history, run

# Holds an exclusive lock readers cannot pass, in either journal mode: in WAL mode only a
# connection in locking_mode EXCLUSIVE keeps readers out.
EXCLUSIVE_HOLDER = r"""
import apsw, sys
c = apsw.Connection(sys.argv[1])
c.execute("PRAGMA locking_mode = EXCLUSIVE")
c.execute("BEGIN EXCLUSIVE")
c.execute("INSERT INTO [HangFire.Job] (State) VALUES ('uncommitted')")
print("locked", flush=True)
sys.stdin.readline()
c.execute("ROLLBACK")
"""

COMMANDS = [["status"], ["verify"], ["checklist"], ["backup"], ["apply"],
            ["rollback", "--to", "0", "--yes", "--no-backup"], ["restore", "BACKUP", "--yes"],
            ["rehearse"], ["recover", "--yes"], ["history", "forget", CHAT, "--yes"]]


def held(db, script=EXCLUSIVE_HOLDER, mode="EXCLUSIVE"):
    holder = spawn(script, db, mode)
    assert holder.first_line == "locked"
    return holder


def release(holder) -> None:
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(30)


def assert_busy(result) -> None:
    assert_refused(result, 3, "locked")


@pytest.fixture(params=["delete", "wal"])
def locked_db(request, db, tmp_path):
    """db in each journal mode, a backup of it in tmp_path/saved.db, for the commands to use."""
    if request.param == "wal":
        with connect(db) as c:
            c.execute("PRAGMA journal_mode = WAL").fetchall()
    assert cli("-d", db, "backup", "-o", tmp_path / "saved.db").exit_code == 0
    return db


def test_every_command_meets_an_exclusive_lock_with_exit_3(locked_db, tmp_path):
    holder = held(locked_db)
    try:
        before = file_state(locked_db)
        for command in COMMANDS:
            command = [str(tmp_path / "saved.db") if c == "BACKUP" else c for c in command]
            result = run("-d", locked_db, "--timeout", "0.3", *command, timeout=60)
            assert result.returncode == 3, (command, result.stderr)
            assert_busy(result)
        assert file_state(locked_db) == before
    finally:
        release(holder)
    assert history(locked_db) == {CORE, CHAT}


def test_a_commit_that_waits_past_the_timeout_for_a_reader_is_exit_3(tmp_path):
    """Rollback journal: apply gets the write lock, but its COMMIT needs every reader gone."""
    db = tmp_path / "orchestra.db"
    assert cli("-d", db, "apply", "--to", CORE).exit_code == 0
    with connect(db) as c:
        add_rows(c, sessions=0)
    reader = spawn(READ_HOLDER, db)
    assert reader.first_line == "reading"
    try:
        assert_busy(run("-d", db, "--timeout", "0.3", "apply", timeout=60))
    finally:
        release(reader)
    assert history(db) == {CORE}


def test_a_lock_taken_after_a_rollback_committed_is_exit_3(db, monkeypatch):
    """Found by test_faults' concurrent runs (rollback exited 70, "BusyError: database is
    locked"): the read of EF's history after the rollback's commit was not translated."""
    from orchestra_schema import engine
    real, holders = engine.rollback_one, []

    def rollback_one(*args, **kwargs):
        done = real(*args, **kwargs)
        holders.append(held(db, LOCK_HOLDER))  # a writer in the middle of its commit, just then
        return done

    monkeypatch.setattr(engine, "rollback_one", rollback_one)
    try:
        with connect(db) as c:
            c.execute("PRAGMA journal_mode = DELETE").fetchall()
        result = cli("-d", db, "--timeout", "0.3", "rollback", "--to", CORE, "--yes", "--no-backup")
    finally:
        for holder in holders:
            release(holder)
    assert result.exit_code == 3, result.stderr
    assert "locked" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert history(db) == {CORE}  # the rollback itself committed before the lock came


def test_a_lock_met_during_a_backup_copy_is_exit_3(db, tmp_path, monkeypatch):
    """The copy's own connections (rawcopy, then the backup API) meet the lock after the
    command opened the database."""
    from orchestra_schema import rawcopy
    real, holders = rawcopy.still_file, []

    def still_file(path, *args, **kwargs):
        holders.append(held(db))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rawcopy, "still_file", still_file)
    (tmp_path / "out").mkdir()
    try:
        result = cli("-d", db, "--timeout", "0.3", "backup", "--dir", tmp_path / "out")
    finally:
        for holder in holders:
            release(holder)
    assert result.exit_code == 3, result.stderr
    assert list((tmp_path / "out").iterdir()) == []  # no backup, no temporary file left


def test_an_untranslated_busy_error_is_still_exit_3(db, monkeypatch):
    """The last line of defence (cli): an apsw lock error no command translated."""
    from orchestra_schema import commands

    def status(ctx):
        raise apsw.BusyError("database is locked")

    monkeypatch.setattr(commands, "status", status)
    result = cli("-d", db, "--json", "status")
    assert result.exit_code == 3, result.stderr
    assert result.stderr.strip() == (f"orchestra-schema: error: {db}: database is locked by "
                                     "another process while running status; retry later or "
                                     "raise --timeout")
