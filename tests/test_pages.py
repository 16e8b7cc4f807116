"""pages.py, the SQLite file format reader, on real files SQLite wrote."""

from __future__ import annotations

import pytest

from helpers import connect
from orchestra_schema.engines.sqlite import pages
from salvage_helpers import no_checkpoint


def test_varints_of_one_to_nine_bytes():
    assert pages.varint(bytes([0x7F]), 0) == (127, 1)
    assert pages.varint(bytes([0x81, 0x00]), 0) == (128, 2)
    assert pages.varint(b"\xff" * 9, 0) == (-1, 9)  # the ninth byte carries 8 bits
    with pytest.raises(pages.Damaged):
        pages.varint(bytes([0x81]), 0)


def rows_db(path, page_size=4096, wal=False):
    with connect(path) as c:
        c.execute(f"PRAGMA page_size = {page_size}")
        if wal:
            c.execute("PRAGMA journal_mode = WAL").fetchall()
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        with c:
            c.executemany("INSERT INTO t (v) VALUES (?)", [(f"value {i}" * 5,) for i in range(2000)])
    return path


def leaf_values(path) -> list:
    with pages.PageFile(path) as pf:
        reader = pages.Reader(pf)
        found = []
        for number, data in pf.pages():
            node = pages.parse_btree(data, number, pf.usable)
            if node is not None and node.kind == pages.TABLE_LEAF and number != 1:
                found += [(c.rowid, c.values[1]) for c in reader.cells(node, data)]
        return found


def test_a_wrong_page_size_in_the_header_is_detected_from_the_pages(tmp_path):
    db = rows_db(tmp_path / "a.db", page_size=1024)
    with open(db, "r+b") as f:
        f.seek(16)
        f.write((8192).to_bytes(2, "big"))  # sane, but wrong
    with pages.PageFile(db) as pf:
        assert (pf.page_size, pf.size_detected) == (1024, True)
    assert sorted(leaf_values(db)) == [(i + 1, f"value {i}" * 5) for i in range(2000)]


def test_committed_wal_frames_replace_their_pages_and_a_bad_frame_ends_the_wal(tmp_path):
    db = rows_db(tmp_path / "w.db", wal=True)
    with no_checkpoint(db) as c:
        c.execute("PRAGMA wal_autocheckpoint = 0")
        c.execute("UPDATE t SET v = 'new' WHERE id = 1")
    assert (1, "new") in leaf_values(db)
    wal = tmp_path / "w.db-wal"
    data = bytearray(wal.read_bytes())
    data[32 + 24 + 100] ^= 0xFF  # the first frame's page bytes: its checksum no longer holds
    wal.write_bytes(bytes(data))
    assert (1, "value 0" * 5) in leaf_values(db) and (1, "new") not in leaf_values(db)
