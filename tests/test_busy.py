"""A locked database is exit 3 ("busy"), never 70 (internal error), whichever step meets the lock.

Another process holds the lock for real (backup_helpers.LOCK_HOLDER and the
holders below); where the lock must come in the middle of a command (after
its first commit, during the copy), a hook starts the holder just then.
"""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest

from backup_helpers import LOCK_HOLDER, READ_HOLDER, spawn
from helpers import CHAT, CORE, add_rows, assert_refused, cli, connect, count, file_state, history, run

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
    from orchestra_schema.engines import runner as engine
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


@pytest.mark.parametrize("step", ["raw", "backup-api"])
def test_a_lock_met_during_a_backup_copy_is_exit_3(db, tmp_path, monkeypatch, step):
    """The lock comes after the command opened the database: as the raw copy's own
    connections begin, or (raw copy given up) between the backup API's steps."""
    from orchestra_schema.engines.sqlite import copying, rawcopy
    holders = []

    def lock_first(real):
        def locked(*args, **kwargs):
            holders.append(held(db))
            return real(*args, **kwargs)
        return locked

    if step == "raw":
        monkeypatch.setattr(rawcopy, "still_file", lock_first(rawcopy.still_file))
    else:
        def unstable(*args, **kwargs):
            raise rawcopy.Unstable("given up for this test")
        monkeypatch.setattr(rawcopy, "still_file", unstable)
        monkeypatch.setattr(copying, "_steps", lock_first(copying._steps))
    (tmp_path / "out").mkdir()
    try:
        result = cli("-d", db, "--timeout", "0.3", "backup", "--dir", tmp_path / "out")
    finally:
        for holder in holders:
            release(holder)
    assert holders and result.exit_code == 3, result.stderr
    assert "locked" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list((tmp_path / "out").iterdir()) == []  # no backup, no temporary file left


def test_an_untranslated_busy_error_is_still_exit_3(db, monkeypatch):
    """The last line of defence (cli): an apsw lock error no command translated."""
    from orchestra_schema.commands import migrate as commands

    def status(ctx):
        raise apsw.BusyError("database is locked")

    monkeypatch.setattr(commands, "status", status)
    result = cli("-d", db, "--json", "status")
    assert result.exit_code == 3, result.stderr
    assert result.stderr.strip() == (f"orchestra-schema: error: {db}: database is locked by "
                                     "another process while running status; retry later or "
                                     "raise --timeout")


def test_a_reader_arriving_as_restore_switches_the_journal_mode_back_loses_nothing(db, tmp_path,
                                                                                   monkeypatch):
    """A WAL backup restored into a rollback-journal database makes it WAL; switching it back
    needs every other connection gone. A reader arriving just then must not turn the finished
    restore into "locked, retry" with its pre-restore copy deleted (the only copy of the data
    the restore replaced): the restore stands, the copy is kept, a warning says what to run."""
    from orchestra_schema.engines.sqlite import restore
    wal_copy = tmp_path / "wal.db"
    assert cli("-d", db, "backup", "-o", wal_copy).exit_code == 0
    with connect(wal_copy) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()
        c.execute("DELETE FROM ChatMessages")
    saved = tmp_path / "saved" / "wal.db.backup"
    saved.parent.mkdir()
    assert cli("-d", wal_copy, "backup", "-o", saved).exit_code == 0
    real, holders = restore._keep_journal_mode, []

    def keep_journal_mode(live, mode, result):
        holders.append(spawn(READ_HOLDER, db))
        assert holders[-1].first_line == "reading"
        return real(live, mode, result)

    monkeypatch.setattr(restore, "_keep_journal_mode", keep_journal_mode)
    try:
        result = cli("-d", db, "--timeout", "0.3", "--json", "restore", saved, "--yes")
    finally:
        for holder in holders:
            release(holder)
    assert holders and result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert count(db, "ChatMessages") == 0  # restored
    pre_restore = Path(report["backup"])
    assert pre_restore.exists() and count(pre_restore, "ChatMessages") > 0  # kept
    assert any("PRAGMA journal_mode = delete" in w for w in report["warnings"]), report["warnings"]
