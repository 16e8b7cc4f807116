"""restore: verified before anything changes, through the backup API, old or new never mixed."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from backup_helpers import (LOCK_HOLDER, WAL_HOLDER, add_padding, files_in, overwrite_pages,
                            root_page, spawn, wait_for)
from helpers import CHAT, CHAT_TABLES, CORE, cli, connect, count, file_state, history, tables
from orchestra_schema.engines.sqlite import backup as backups
from orchestra_schema.context import Context


def restore(db, *args):
    return cli("--database", db, "--json", "restore", *args)


def a_backup(db) -> Path:
    return backups.backup(Context(db)).path


def add_messages(db, n, session="s0"):
    with connect(db) as c:
        with c:
            for i in range(n):
                c.execute("INSERT INTO ChatMessages VALUES (?, ?, 'user', 'later', 0, '2025-02-01', NULL)",
                          (f"later{i}", session))


def test_restore_brings_back_what_a_rollback_dropped(db):
    """The issue's 'done when': backup, roll back the chat tables (a backup appears), restore."""
    backup = a_backup(db)
    rolled = json.loads(cli("--database", db, "--json", "rollback", "--to", CORE, "--yes").stdout)
    assert Path(rolled["backup"]).exists() and not CHAT_TABLES & tables(db)

    before = file_state(db)
    refused = restore(db, backup)
    assert refused.exit_code == 5 and file_state(db) == before
    assert "table ChatMessages: only in the backup" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    result = restore(db, backup, "--yes")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert count(db, "ChatMessages") == 15 and count(db, "ChatSessions") == 3
    assert history(db) == {CORE, CHAT} and out["applied_migrations"] == [CORE, CHAT]
    assert out["method"] == "backup-api" and out["integrity"] == "ok"
    safety = Path(out["backup"])
    assert re.fullmatch(r"orchestra\.db\.pre-restore_\d{8}_\d{6}", safety.name)
    assert not CHAT_TABLES & tables(safety)  # the state just before the restore
    assert set(out) == {"database", "restored_from", "backup", "live_integrity", "has_manifest",
                        "schema_differences", "method", "integrity", "applied_migrations",
                        "moved_aside", "warnings"}


def test_restore_replaces_rows_and_keeps_a_pre_restore_copy(db):
    backup = a_backup(db)
    add_messages(db, 7)
    out = json.loads(restore(db, backup).stdout)
    assert count(db, "ChatMessages") == 15 and out["schema_differences"] == []
    assert count(Path(out["backup"]), "ChatMessages") == 22
    assert backups.check_backup(Path(out["backup"])).ok


def damaged_copy(backup: Path) -> None:
    overwrite_pages(backup, [root_page(backup, "ChatMessages")])


@pytest.mark.parametrize("spoil, code, words", [
    (lambda b: b.write_bytes(b.read_bytes()[: b.stat().st_size // 2]), 5, "differs from its manifest"),
    (lambda b: (b.write_bytes(b.read_bytes()[:8192]), Path(f"{b}.json").unlink()), 5, "truncated"),
    (lambda b: b.write_text("name,value\n" * 500), 5, "not an SQLite database"),
    (lambda b: (damaged_copy(b), Path(f"{b}.json").unlink()), 5, "fails its integrity check"),
    (damaged_copy, 5, "blake3 digest differs"),
    (lambda b: b.unlink(), 2, "no such backup"),
])
def test_untrustworthy_backups_are_refused_and_change_nothing(db, spoil, code, words):
    backup = a_backup(db)
    spoil(backup)
    add_messages(db, 1)
    before, names = file_state(db), files_in(db.parent)
    result = restore(db, backup)
    assert result.exit_code == code and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(db.parent) == names


def test_backup_without_manifest_is_trusted_on_integrity_and_says_so(db):
    backup = a_backup(db)
    Path(f"{backup}.json").unlink()
    result = restore(db, backup)
    assert result.exit_code == 0 and json.loads(result.stdout)["has_manifest"] is False
    assert "no manifest" in result.stderr


def test_restore_while_another_process_holds_frames_in_the_wal(db):
    backup = a_backup(db)
    with connect(db) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()
    add_messages(db, 5)
    holder = spawn(WAL_HOLDER, db)
    assert holder.first_line == "ready" and Path(f"{db}-wal").stat().st_size > 0
    result = restore(db, backup)
    seen, ok = holder.communicate("go\n", timeout=30)[0].split()
    assert result.exit_code == 0, result.stderr
    assert (int(seen), ok) == (15, "ok")  # the other connection sees the backup, whole
    assert count(db, "ChatMessages") == 15 and count(db, "HangFire.Job") == 2
    with connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_busy_past_timeout_exits_3_and_changes_nothing(db):
    backup = a_backup(db)
    add_messages(db, 2)
    holder = spawn(LOCK_HOLDER, db, "IMMEDIATE")
    try:
        before, names = file_state(db), files_in(db.parent)
        result = cli("--database", db, "--timeout", "0.3", "restore", backup)
        assert result.exit_code == 3, result.stderr
        assert file_state(db) == before and files_in(db.parent) == names
    finally:
        holder.communicate("done\n", timeout=30)
    assert count(db, "ChatMessages") == 17


def test_damaged_live_database_is_copied_then_restored_in_place(db):
    backup = a_backup(db)
    overwrite_pages(db, [root_page(db, "ChatMessages")])
    damaged = db.read_bytes()
    out = json.loads(restore(db, backup, "--no-backup").stdout)  # a damaged one is kept anyway
    assert out["method"] == "backup-api" and out["live_integrity"] != "ok"
    copy = Path(out["backup"])
    assert re.fullmatch(r"orchestra\.db\.corrupted_\d{8}_\d{6}", copy.name)
    assert copy.read_bytes()[4096:] == damaged[4096:]  # page 1's change counter moves on
    assert json.loads(Path(f"{copy}.json").read_text())["integrity"] != "ok"
    assert count(db, "ChatMessages") == 15 and out["integrity"] == "ok"


def test_unopenable_live_database_is_moved_aside_and_replaced(db):
    backup = a_backup(db)
    db.chmod(0o640)
    overwrite_pages(db, [1])
    damaged = db.read_bytes()
    out = json.loads(restore(db, backup).stdout)
    assert out["method"] == "replaced" and out["live_integrity"].startswith("unreadable")
    aside = Path(out["backup"])
    assert re.fullmatch(r"orchestra\.db\.corrupted_\d{8}_\d{6}", aside.name)
    assert aside.read_bytes() == damaged and out["moved_aside"] == [str(aside)]
    assert count(db, "ChatMessages") == 15 and out["integrity"] == "ok"
    assert stat.S_IMODE(db.stat().st_mode) == 0o640  # the application's user can still open it


def test_missing_live_database_is_restored_from_the_backup(db):
    backup = a_backup(db)
    db.unlink()
    out = json.loads(restore(db, backup).stdout)
    assert out["live_integrity"] == "missing" and out["backup"] is None
    assert count(db, "ChatMessages") == 15


def test_other_page_size_into_a_wal_database_is_refused(db, tmp_path):
    other = tmp_path / "other-page-size.db"
    with connect(db) as c:
        c.execute("PRAGMA page_size = 8192")
        c.execute(f"VACUUM INTO '{other}'")  # same schema and rows, 8 KiB pages
        c.execute("PRAGMA journal_mode = WAL").fetchall()
    # Any read-only reader (the running application, too) leaves -wal and -shm behind.
    reader = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    reader.execute("SELECT 1 FROM Agents").fetchall()
    reader.close()
    before, names = file_state(db), files_in(tmp_path)
    result = restore(db, other)
    assert result.exit_code == 5 and "page size 8192" in result.stderr
    assert file_state(db) == before and files_in(tmp_path) == names


def test_no_backup_skips_the_pre_restore_copy(db):
    backup = a_backup(db)
    names = files_in(db.parent)
    out = json.loads(restore(db, backup, "--no-backup").stdout)
    assert out["backup"] is None and files_in(db.parent) == names


SMALL, BIG = (15, 0), (215, 1)  # (chat messages, padding tables) of the two states


def _state(db: Path) -> tuple[int, int]:
    with connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return c.execute("SELECT (SELECT count(*) FROM ChatMessages), "
                         "(SELECT count(*) FROM sqlite_schema WHERE name = 'padding')").fetchone()


def _grow(db: Path) -> None:
    add_messages(db, 200)
    add_padding(db, 20)


def _shrink(db: Path) -> None:
    with connect(db) as c:
        c.execute("DROP TABLE padding; DELETE FROM ChatMessages WHERE Id LIKE 'later%'")


def _kill_restore_once(db: Path, backup: Path, delay: float) -> tuple[tuple, bool]:
    """Kill a restore `delay` s after its write began: (state after, whether it was killed)."""
    proc = subprocess.Popen([sys.executable, "-m", "orchestra_schema", "--database", str(db),
                             "restore", str(backup), "--no-backup", "--yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal, wal = Path(f"{db}-journal"), Path(f"{db}-wal")
    # The write transaction is open while a -journal exists, or once the -wal grows.
    wait_for(lambda: journal.exists() or (wal.exists() and wal.stat().st_size > 2**20)
             or proc.poll() is not None)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = _state(db)
    assert state in (SMALL, BIG), state  # old or new, never a mix
    return state, proc.returncode == -signal.SIGKILL


def _two_states(db: Path, wal: bool):
    """A big backup and a small live database: the restore writes for a while."""
    if wal:
        with connect(db) as c:
            c.execute("PRAGMA journal_mode = WAL").fetchall()
    _grow(db)
    backup = a_backup(db)
    _shrink(db)
    return backup


def test_kill_during_restore_leaves_old_or_new(db):
    backup = _two_states(db, wal=False)
    assert _kill_restore_once(db, backup, 0) == (SMALL, True)  # killed inside the write transaction


def test_the_live_database_itself_is_not_a_backup(db):
    before = file_state(db)
    result = restore(db, db, "--no-backup")
    assert result.exit_code == 2 and "is the live database itself" in result.stderr
    assert file_state(db) == before


def test_a_copied_pair_with_a_wal_is_refused_not_restored_without_its_frames(db, tmp_path):
    """Read as one file, such a copy would silently lack every commit still in its -wal."""
    with connect(db) as c:
        c.execute("PRAGMA journal_mode=WAL").fetchall()
        c.execute("PRAGMA wal_autocheckpoint=0")
        c.execute("INSERT INTO ChatMessages VALUES ('w1', 's0', 'user', 'in the wal', 0, 'c', NULL)")
        snap = tmp_path / "snap.db"  # copied while the commit is only in the -wal
        snap.write_bytes(db.read_bytes())
        Path(f"{snap}-wal").write_bytes(Path(f"{db}-wal").read_bytes())
    before = file_state(db)
    result = restore(db, snap, "--no-backup")
    assert result.exit_code == 5 and "snap.db-wal beside it holds changes" in result.stderr
    assert file_state(db) == before


def test_a_wal_backup_restored_into_a_rollback_journal_database_keeps_rollback_mode(db, tmp_path):
    wal_db = tmp_path / "wal" / "orchestra.db"
    wal_db.parent.mkdir()
    wal_db.write_bytes(db.read_bytes())
    with connect(wal_db) as c:
        c.execute("PRAGMA journal_mode=WAL").fetchall()
    backup = a_backup(wal_db)
    assert restore(db, backup, "--no-backup").exit_code == 0
    with connect(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not Path(f"{db}-wal").exists()


def test_kill_during_a_wal_restore_mid_write_leaves_the_old_state(db):
    """Killed while it holds the WAL write lock with frames written but not committed:
    the next opener ignores those frames, and the database is the old one, whole."""
    from faults import holds_write_lock, stop, wal_frames
    backup = _two_states(db, wal=True)
    proc = subprocess.Popen([sys.executable, "-m", "orchestra_schema", "--database", str(db),
                             "restore", str(backup), "--no-backup", "--yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wal = Path(f"{db}-wal")
    wait_for(lambda: (holds_write_lock(proc.pid, db) and wal.exists() and wal.stat().st_size > 2**20)
             or proc.poll() is not None, interval=0.0005)
    stop(proc.pid)
    writing = holds_write_lock(proc.pid, db)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and writing, "the kill did not land inside the write"
    assert wal_frames(db)[1] > 0  # uncommitted frames: the write was under way
    assert _state(db) == SMALL
