"""The rehearsal's snapshot: a view of the live file, its changes in a sparse scratch file."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import apsw
import pytest

from backup_helpers import add_padding, add_pairs, pairs_state
from helpers import connect
from orchestra_schema.engines.sqlite import overlay, rawcopy
from orchestra_schema.engines.sqlite.database import Database


@contextlib.contextmanager
def viewed(live: Path, scratch: Path):
    """The live database held still, and a connection to its view at `scratch`."""
    with rawcopy.still_file(live, readers=1, timeout=5, void="test") as (reader,), \
            overlay.view(reader, scratch) as vfs, Database.open(scratch, create=True, vfs=vfs) as db:
        yield db.connection


def settled(live: Path, wal: bool) -> bytes:
    """The live file's hash once nothing is left in its WAL to checkpoint."""
    if wal:
        with connect(live) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return hashlib.sha256(live.read_bytes()).digest()


@pytest.mark.parametrize("wal", [True, False])
def test_the_view_reads_the_live_file_and_stores_only_what_it_writes(tmp_path, wal):
    live, scratch = tmp_path / "live.db", tmp_path / "view" / "live.db"
    scratch.parent.mkdir()
    add_pairs(live, 1_000, wal=wal)
    add_padding(live, 8)
    before = settled(live, wal)
    with viewed(live, scratch) as view:
        assert view.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        view.execute("DROP TABLE padding")
        view.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")
        assert view.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert view.execute("SELECT count(*) FROM pairs").fetchone()[0] == 2_002
        stored = scratch.stat().st_blocks * 512
    assert stored < 512 << 10, stored  # the 8 MB dropped were read from the live file, not copied
    assert sorted(p.name for p in scratch.parent.iterdir()) == ["live.db"]  # no -wal, no journal left
    assert hashlib.sha256(live.read_bytes()).digest() == before
    assert pairs_state(live) == (2_000, 1_000, 1_000)


def test_a_wal_commit_after_the_view_began_is_not_in_it(tmp_path):
    live, scratch = tmp_path / "live.db", tmp_path / "view.db"
    add_pairs(live, 100, wal=True)
    with viewed(live, scratch) as view, connect(live) as app:
        app.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")  # WAL: not blocked
        app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # may not write past the view's mark
        assert view.execute("SELECT count(*) FROM pairs").fetchone()[0] == 200
    assert pairs_state(live)[0] == 202


def test_rollback_journal_writers_wait_while_the_view_is_open(tmp_path):
    live, scratch = tmp_path / "live.db", tmp_path / "view.db"
    add_pairs(live, 100, wal=False)
    with viewed(live, scratch) as view, connect(live) as app:
        view.execute("DELETE FROM pairs")
        with pytest.raises(apsw.BusyError):
            with app:
                app.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")
    with connect(live) as app, app:
        app.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")
    assert pairs_state(live)[0] == 202


@pytest.mark.parametrize("live_size, view_size", [(8192, 4096), (4096, 8192)])
def test_pages_of_another_size_written_in_part_keep_the_rest(tmp_path, live_size, view_size):
    """A VACUUM to another page size writes the view in pieces of the live file's
    pages (copied up first) or across several of them (read from both sides)."""
    live, scratch = tmp_path / "live.db", tmp_path / "view.db"
    with connect(live) as c:
        c.execute(f"PRAGMA page_size = {live_size}")
    add_pairs(live, 2_000, wal=False)
    with connect(live) as c:
        c.execute("DELETE FROM pairs WHERE id % 3 = 0")  # free pages inside, for the VACUUM to move
        expected = c.execute("SELECT sum(id), total(half) FROM pairs").fetchone()
    before = settled(live, wal=False)
    with viewed(live, scratch) as view:
        view.execute(f"PRAGMA page_size = {view_size}")
        view.execute("VACUUM")
        assert view.execute("PRAGMA page_size").fetchone()[0] == view_size
        assert view.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert view.execute("SELECT sum(id), total(half) FROM pairs").fetchone() == expected
    assert hashlib.sha256(live.read_bytes()).digest() == before


def test_the_view_file_partial_writes_mixed_reads_and_truncation(tmp_path):
    """What SQLite itself seldom asks for, asked directly of the view's file."""
    live = tmp_path / "live.db"
    add_pairs(live, 100, wal=False)
    raw = live.read_bytes()
    page = lambda n: raw[(n - 1) * 4096:n * 4096]  # noqa: E731 (page n, 1-based)
    flags = [apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE, 0]
    with rawcopy.still_file(live, readers=1, timeout=5, void="test") as (reader,):
        f = overlay._ViewFile(str(tmp_path / "view.db"), flags, reader, len(raw), 4096)
        try:
            assert f.xFileSize() == len(raw) and f.xRead(4096, 4096) == page(2)
            f.xWrite(b"X" * 100, 4096 + 10)  # part of page 2: the rest is the live page's
            changed = page(2)[:10] + b"X" * 100 + page(2)[110:]
            assert f.xRead(4096, 4096) == changed
            assert f.xRead(3 * 4096, 0) == page(1) + changed + page(3)  # live, own, live
            f.xTruncate(2 * 4096 + 100)  # keeps 100 bytes of page 3, copied before the cut
            assert f.xFileSize() == 2 * 4096 + 100
            assert f.xRead(4096, 2 * 4096) == page(3)[:100]  # short: the file ends there
            f.xTruncate(4096)
            f.xWrite(b"Y" * 4096, 2 * 4096)  # grows again: page 2 is a hole, not the live page
            assert f.xRead(2 * 4096, 4096) == bytes(4096) + b"Y" * 4096
        finally:
            f.xClose()
