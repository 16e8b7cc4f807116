"""backup's fast path: the file's bytes, copied while SQLite's locks hold it still (rawcopy)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from backup_helpers import (LOCK_HOLDER, READ_HOLDER, WRITER, add_padding, add_pairs, backup_json,
                            files_in, pairs_state, spawn)
from helpers import cli, connect, count, file_state, run
from orchestra_schema.engines.sqlite import backup as backups
from orchestra_schema.engines.sqlite import rawcopy
from orchestra_schema.context import Context
from orchestra_schema.errors import DatabaseUnavailable


def logical_bytes(db: Path) -> bytes:
    """The database file's pages as its header counts them."""
    with connect(db) as c:
        size = c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
    return db.read_bytes()[:size]


@pytest.mark.parametrize("wal", [True, False])
def test_a_quiet_databases_backup_is_its_file_byte_for_byte(tmp_path, wal):
    db = tmp_path / "orchestra.db"
    add_pairs(db, 5_000, wal=wal)
    out = backup_json(db)
    assert out["copy_mode"] == "raw" and out["integrity"] == "ok"
    copy = Path(out["path"]).read_bytes()
    # WAL: the backup checkpointed the WAL into the file first, so the file is the snapshot.
    assert copy == logical_bytes(db)
    assert out["digest"] == {"algorithm": "blake3", "value": blake3.blake3(copy).hexdigest()}
    assert out["journal_mode"] == ("wal" if wal else "rollback")


def test_checkpoints_after_every_commit_never_write_the_file_under_the_copy(tmp_path):
    """A writer checkpointing after each commit while 3 backups copy 40 MB raw:
    were a checkpoint to write the file mid-copy, the backup would refuse (file changed)
    or hold half a pair."""
    db = tmp_path / "orchestra.db"
    add_pairs(db, 2_000, wal=True)
    add_padding(db, 40)
    stop = tmp_path / "stop"
    writer = spawn(WRITER, db, stop, 0, 0, 1)
    try:
        outs = []
        for _ in range(3):
            result = run("--database", db, "--json", "backup")
            assert result.returncode == 0, result.stderr
            outs.append(json.loads(result.stdout))
    finally:
        stop.touch()
        commits, busy = map(int, writer.communicate(timeout=30)[0].split())
    assert busy == 0 and commits > 0
    for out in outs:
        assert out["integrity"] == "ok" and out["copy_mode"] in ("raw", "snapshot")
        rows, first, second = pairs_state(Path(out["path"]))
        assert rows % 2 == 0 and first == second
    assert any(out["copy_mode"] == "raw" for out in outs)


def test_wal_behind_an_old_reader_falls_back_to_the_backup_api(tmp_path):
    """A reader's old snapshot keeps a commit in the WAL: the file is not the newest
    state, so the copy goes through SQLite, and has that commit."""
    db = tmp_path / "orchestra.db"
    add_pairs(db, 1_000, wal=True)
    holder = spawn(READ_HOLDER, db)
    try:
        with connect(db) as c:
            c.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")
        out = backup_json(db)
    finally:
        holder.communicate("\n", timeout=30)
    assert out["copy_mode"] == "snapshot" and out["integrity"] == "ok"
    assert pairs_state(Path(out["path"]))[0] == 2_002


def test_rollback_journal_behind_a_held_write_lock_falls_back(tmp_path):
    """No write lock to begin under (another writer holds it): the incremental backup
    API, which copies the committed state, not the holder's uncommitted row."""
    db = tmp_path / "orchestra.db"
    add_pairs(db, 1_000, wal=False)
    with connect(db) as c:
        c.execute('CREATE TABLE "HangFire.Job" (State TEXT)')
    holder = spawn(LOCK_HOLDER, db, "IMMEDIATE")
    try:
        out = backup_json(db)
    finally:
        holder.communicate("\n", timeout=30)
    assert out["copy_mode"] == "incremental" and out["integrity"] == "ok"
    assert count(Path(out["path"]), "HangFire.Job") == 0


def test_a_file_written_behind_sqlites_back_is_never_published(tmp_path):
    """Something that ignores SQLite's locks changes the file during the copy
    (here: its mtime moves): the copy is discarded and nothing is left behind."""
    db = tmp_path / "orchestra.db"
    add_pairs(db, 5_000, wal=False)
    add_padding(db, 12)  # several chunks, so progress is called mid-copy
    names = files_in(tmp_path)

    def meddle(done, total):
        if done < total:
            os.utime(db, ns=(1, 1))

    with pytest.raises(DatabaseUnavailable, match="changed while it was read"):
        backups.backup(Context(db), progress=meddle)
    assert files_in(tmp_path) == names


def test_without_direct_io_the_copy_is_buffered_and_the_same(tmp_path, monkeypatch):
    db = tmp_path / "orchestra.db"
    add_pairs(db, 5_000, wal=False)
    monkeypatch.delattr(os, "O_DIRECT")  # as on macOS
    result = backups.backup(Context(db))
    assert result.copy_mode == "raw" and result.integrity == "ok"
    assert result.path.read_bytes() == logical_bytes(db)


def test_a_switch_to_wal_just_before_the_lock_is_not_copied_raw(tmp_path, monkeypatch):
    """The journal mode is read before the write lock: had the app switched the database
    to WAL and committed in between, the commits would be in the -wal only. Under the
    lock the mode is read again, and the copy goes through SQLite, commits included."""
    db = tmp_path / "orchestra.db"
    add_pairs(db, 1_000, wal=False)
    real_mode, calls = rawcopy._mode, []

    def mode_read_before_the_switch(conn):
        if not calls:
            calls.append(1)
            return "delete"  # what it was an instant ago
        return real_mode(conn)

    monkeypatch.setattr(rawcopy, "_mode", mode_read_before_the_switch)
    with connect(db) as app:  # the app switches to WAL and commits; its WAL stays un-checkpointed
        app.execute("PRAGMA journal_mode = WAL").fetchall()
        app.execute("PRAGMA wal_autocheckpoint = 0")
        app.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")
        result = backups.backup(Context(db))
    assert calls and result.copy_mode == "snapshot" and result.integrity == "ok"
    assert pairs_state(result.path)[0] == 2_002


def test_a_full_disk_under_the_rehearsal_snapshot_is_exit_6_and_changes_nothing(tmp_path):
    db = tmp_path / "orchestra.db"
    assert cli("--database", db, "apply").exit_code == 0
    add_padding(db, 2)
    before = file_state(db)
    result = subprocess.run([sys.executable, "-m", "orchestra_schema", "--database", str(db),
                             "rehearse", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192)))
    assert result.returncode == 6, result.stderr
    assert "cannot write the rehearsal's snapshot" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(tmp_path) == {"orchestra.db"}
