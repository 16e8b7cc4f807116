"""staging.py and sqlitefile.py on real files: staged names, publishing, leftovers, headers."""

from __future__ import annotations

import fcntl
import os
import stat
from datetime import datetime, timezone

import pytest

from orchestra_schema.engines.sqlite import files as sqlitefile
from orchestra_schema.files import staging
from orchestra_schema.errors import Refused


def test_staged_file_is_private_and_gone_unless_published(tmp_path):
    with staging.Staged(tmp_path / "b.db") as staged:
        assert stat.S_IMODE(staged.path.stat().st_mode) == 0o600
        assert staging.TEMP_MARK in staged.path.name
    assert list(tmp_path.iterdir()) == []


def test_publish_takes_the_first_free_name_and_never_replaces_one(tmp_path):
    (tmp_path / "b.db").write_text("someone else's")
    with staging.Staged(tmp_path / "b.db") as staged:
        staged.path.write_text("ours")
        final = staged.publish(staging.unique_names(tmp_path / "b.db"))
    assert final == tmp_path / "b.db_2" and final.read_text() == "ours"
    assert (tmp_path / "b.db").read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.db", "b.db_2"]


def test_publish_when_every_name_is_taken_refuses_and_leaves_them(tmp_path):
    (tmp_path / "b.db").write_text("x")
    with staging.Staged(tmp_path / "b.db") as staged, pytest.raises(Refused, match="b.db"):
        staged.publish([tmp_path / "b.db"])
    assert [p.name for p in tmp_path.iterdir()] == ["b.db"]


def test_publish_with_no_name_is_a_bug_said_plainly(tmp_path):
    with staging.Staged(tmp_path / "b.db") as staged, pytest.raises(ValueError, match="at least one name"):
        staged.publish([])


def test_staging_removes_nothing_by_itself(tmp_path):
    left = tmp_path / f".b.db{staging.TEMP_MARK}1-deadbeef"
    left.write_text("left by a killed run")
    with staging.Staged(tmp_path / "b.db"):
        assert left.exists()


def test_clean_stale_removes_leftovers_but_never_a_live_writers_file(tmp_path):
    left = tmp_path / f".b.db{staging.TEMP_MARK}1-deadbeef"
    left.write_text("killed run")
    (tmp_path / f"{left.name}-journal").write_text("its journal")
    with staging.Staged(tmp_path / "b.db") as live:
        assert sorted(staging.clean_stale(tmp_path)) == sorted([left, tmp_path / f"{left.name}-journal"])
        assert live.path.exists()
        fd = os.open(live.path, os.O_RDONLY)  # the writer's flock is what protects it
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_unique_names_and_aside_names():
    names = staging.unique_names(staging.Path("/d/o.db.backup_x"))
    assert [str(next(names)) for _ in range(3)] == ["/d/o.db.backup_x", "/d/o.db.backup_x_2",
                                                   "/d/o.db.backup_x_3"]
    when = datetime(2025, 9, 27, 10, 31, 32, tzinfo=timezone.utc)
    assert staging.aside_name(staging.Path("/d/o.db"), "corrupted", when) == staging.Path(
        "/d/o.db.corrupted_20250927_103132")


def _database(path, pages=3, page_size=4096, mode=1):
    head = bytearray(sqlitefile.SQLITE_HEADER + bytes(84))
    head[16:18] = page_size.to_bytes(2, "big")
    head[18] = head[19] = mode
    head[24:28] = head[92:96] = (7).to_bytes(4, "big")
    head[28:32] = pages.to_bytes(4, "big")
    path.write_bytes(bytes(head) + bytes(pages * page_size - 100))
    return path


def test_header_facts(tmp_path):
    db = _database(tmp_path / "a.db")
    assert sqlitefile.is_sqlite(db) and sqlitefile.journal_mode(db) == "rollback" and sqlitefile.truncation(db) is None
    assert sqlitefile.journal_mode(_database(tmp_path / "w.db", mode=2)) == "wal"
    (tmp_path / "t.txt").write_text("not a database at all, but long enough " * 4)
    assert not sqlitefile.is_sqlite(tmp_path / "t.txt")


@pytest.mark.parametrize("cut, says", [(50, "shorter than an SQLite header"),
                                       (4096 + 10, "not a whole number"),
                                       (4096 * 2, "its header says 3 pages")])
def test_truncation_says_how(tmp_path, cut, says):
    db = _database(tmp_path / "a.db")
    os.truncate(db, cut)
    assert says in sqlitefile.truncation(db)
