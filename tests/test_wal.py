"""Committed -wal transactions SQLite ignores after one damaged frame: verify, recover, backup.

Real WAL databases SQLite wrote (several commits left in the -wal), damaged one
bit at a time the way disks damage them. SQLite stops reading the WAL at the
first bad frame, so every later commit vanishes from its view while
quick_check passes; the tool must say so, bring the rows back and keep them.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

import pytest

from helpers import cli
from orchestra_schema.engines.sqlite import wal
from orchestra_schema.engines.sqlite.backup import check_backup
from salvage_helpers import TABLES, _message, build, no_checkpoint, rows

PAGE = 4096
FRAME = 24 + PAGE
COMMITS = 6  # transactions left in the -wal after the build's own


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, dict[str, set]]:
    """A chat database with COMMITS more transactions in its -wal, and its rows as SQLite saw them."""
    db = build(tmp_path_factory.mktemp("wal") / "orchestra.db", 1000, wal=True)
    rng = random.Random(7)
    with no_checkpoint(db) as c:
        c.execute("PRAGMA wal_autocheckpoint = 0")
        for t in range(COMMITS):
            with c:
                c.executemany("INSERT INTO ChatMessages VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [_message(rng, 1000 + t * 100 + m, 20) for m in range(100)])
                c.execute(f"UPDATE [HangFire.Job] SET StateName = 'commit {t}' WHERE Id = 1")
    return db, {t: rows(db, t) for t in TABLES}


def frames(wal_bytes: bytes) -> list[tuple[int, int, bool]]:
    """(frame, page, commit?) of every frame, from the headers."""
    out = []
    for i in range((len(wal_bytes) - 32) // FRAME):
        page, size = struct.unpack_from(">II", wal_bytes, 32 + i * FRAME)
        out.append((i + 1, page, size != 0))
    return out


def mid_wal_frame(wal_bytes: bytes, superseded: bool = True) -> tuple[int, int]:
    """(frame, page) of a table's leaf page (rows), not a commit frame, in the third
    transaction, with commits after it; its page written again by a later transaction
    (superseded) or never again."""
    listed = frames(wal_bytes)
    commits = [f for f, _, c in listed if c]
    later = {p for g, p, _ in listed if g > commits[-4]}
    for f, page, commit in listed[commits[-5]:commits[-4]]:
        leaf = wal_bytes[32 + (f - 1) * FRAME + 24] == 13
        if leaf and not commit and (page in later) == superseded:
            return f, page
    raise AssertionError("no such frame")


DAMAGE = {  # where in the frame one bit flips (None: in the WAL header's salt)
    "page data": [24 + PAGE - 100],  # in the first row written on the page
    "salt": [9],
    "page number": [2],
    "checksum": [17],
    "WAL header's salt": None,
}


def damaged_copy(original, tmp_path: Path, where: list[int] | None,
                 frame: int | None = None) -> tuple[Path, bytes, int]:
    """orchestra.db with its -wal damaged: a bit at each of `where` in `frame` (default: a
    mid-WAL frame whose page no later transaction writes); returns the path, the damaged -wal's
    bytes and the committed transactions after the damage."""
    source, _ = original
    db = tmp_path / "orchestra.db"
    shutil.copy(source, db)
    data = bytearray(Path(f"{source}-wal").read_bytes())
    if where is None:  # the WAL header's second salt, at byte 17
        frame, where = 0, [17 - 32 + FRAME]
    elif frame is None:
        frame = mid_wal_frame(bytes(data), superseded=False)[0]
    for at in where:
        data[32 + (frame - 1) * FRAME + at] ^= 0x10
    Path(f"{db}-wal").write_bytes(bytes(data))
    after = sum(1 for f, _, c in frames(bytes(data)) if c and f > frame)
    return db, bytes(data), after


def counts(db: Path) -> dict[str, int]:
    return {t: len(rows(db, t)) for t in TABLES}


KINDS = list(DAMAGE)
TWO_BITS = [24 + PAGE - 100, 24 + PAGE - 300]  # one flipped bit is corrected; two are not


def damage(original, tmp_path, kind):
    return damaged_copy(original, tmp_path, DAMAGE[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_verify_names_the_transactions_sqlite_ignores(original, tmp_path, kind):
    db, wal_bytes, after = damage(original, tmp_path, kind)
    assert counts(db)["ChatMessages"] < len(original[1]["ChatMessages"])  # SQLite lost them
    result = cli("--database", db, "verify")
    assert result.exit_code == 1, result.output
    ignored = wal.walk(Path(f"{db}-wal"))
    assert ignored.transactions == after >= 3
    assert f"FAIL  wal" in result.stdout
    assert f"SQLite ignores {after} committed transaction(s) ({len(ignored.ignored)} page(s))" \
        in result.stdout
    assert Path(f"{db}-wal").read_bytes() == wal_bytes  # read, never written or checkpointed away


@pytest.mark.parametrize("kind", KINDS)
def test_recover_brings_back_every_committed_row(original, tmp_path, kind):
    db, wal_bytes, after = damage(original, tmp_path, kind)
    result = cli("--json", "--database", db, "recover")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["wal_ignored"]["transactions"] == after
    assert "read from the -wal, where SQLite ignored them" in result.stderr
    for table in TABLES:
        assert rows(db, table) == original[1][table], table
    aside = Path(report["backup"])
    assert Path(f"{aside}-wal").read_bytes() == wal_bytes  # the damaged file kept as it was
    assert aside.name.startswith("orchestra.db.corrupted_")


def test_a_frame_damaged_beyond_correction_is_read_from_its_newer_version(original, tmp_path):
    source, before = original
    frame, _ = mid_wal_frame(Path(f"{source}-wal").read_bytes(), superseded=True)
    db, _, _ = damaged_copy(original, tmp_path, TWO_BITS, frame)
    assert wal.walk(Path(f"{db}-wal")).damaged
    result = cli("--database", db, "recover")
    assert result.exit_code == 0, result.output
    assert all(rows(db, table) == before[table] for table in TABLES)


def test_a_frame_damaged_beyond_correction_that_nothing_replaces_is_a_gap(original, tmp_path):
    source, before = original
    frame, page = mid_wal_frame(Path(f"{source}-wal").read_bytes(), superseded=False)
    db, _, _ = damaged_copy(original, tmp_path, TWO_BITS, frame)
    result = cli("--database", db, "recover")
    assert result.exit_code == 1, result.output
    assert f"damaged frame(s) of page(s) {page} " in result.stderr
    left = rows(db, "ChatMessages")
    assert left < before["ChatMessages"] and len(left) > len(before["ChatMessages"]) - 100


def flipped(original, tmp_path, where, mask: int):
    """A copy of the database whose -wal has the bits of mask flipped at where(offset of the
    last frame): (db, the last frame as frames() gives it, the walk of its -wal)."""
    source, _ = original
    db = tmp_path / "orchestra.db"
    shutil.copy(source, db)
    data = bytearray(Path(f"{source}-wal").read_bytes())
    last = frames(bytes(data))[-1]
    assert last[2]  # the last frame commits
    data[where(32 + (last[0] - 1) * FRAME)] ^= mask
    Path(f"{db}-wal").write_bytes(bytes(data))
    return db, last, wal.walk(Path(f"{db}-wal"))


def test_a_last_commit_frame_one_ambiguous_bit_off_is_a_gap_not_a_torn_write(original, tmp_path):
    """The top bit of a page word flipped in the last commit frame: flips of other words' top
    bits fit the checksum as well, so which bit is unknown, but a torn write fits none: the
    transaction was committed. verify fails and recover names the page (exit 1), never exit 0
    with the commit's rows gone (the fuzz test found this)."""
    # a word's top bit, big-endian, in the last frame's page
    db, last, found = flipped(original, tmp_path, lambda at: at + 24 + PAGE - 100 + 3, 0x80)
    assert not found.fixed and found.transactions == 1 and found.lost_pages == [last[1]]
    assert cli("--database", db, "verify").exit_code == 1
    result = cli("--database", db, "recover")
    assert result.exit_code == 1, result.output
    assert f"damaged frame(s) of page(s) {last[1]} " in result.stderr


def test_a_flipped_bit_in_the_first_frames_salt(tmp_path):
    """SQLite stops at frame 1; its salt differs from the header's, as an older generation's
    would, but the frame after it chains from it: a damaged salt (the fuzz test's seed 5550148:
    exit 0 with the transaction's rows gone). Here, as there, one transaction of two frames
    whose pages no other frame holds: every row comes back."""
    db = build(tmp_path / "orchestra.db", 150, wal=True)
    seen = {t: rows(db, t) for t in TABLES}
    data = bytearray(Path(f"{db}-wal").read_bytes())
    assert [c for _, _, c in frames(bytes(data))] == [False, True]
    data[32 + 15] ^= 1 << 2  # frame 1's salt-2
    Path(f"{db}-wal").write_bytes(bytes(data))
    found = wal.walk(Path(f"{db}-wal"))
    assert found.transactions == 1 and found.lost_pages == [] and found.stop == 1
    assert cli("--database", db, "verify").exit_code == 1
    result = cli("--database", db, "recover")
    assert result.exit_code == 0, result.output
    assert {t: rows(db, t) for t in TABLES} == seen


def test_a_flipped_bit_in_the_wal_headers_own_checksum(original, tmp_path):
    """SQLite then reads no frame at all; the frames are as written, chained from the true
    checksum: every commit comes back."""
    db, _, found = flipped(original, tmp_path, lambda at: 24 + 3, 1 << 5)  # header checksum-1
    assert found.transactions == COMMITS + 1 and found.lost_pages == [] and found.stop == 1
    assert cli("--database", db, "verify").exit_code == 1
    result = cli("--database", db, "recover")
    assert result.exit_code == 0, result.output
    assert {t: rows(db, t) for t in TABLES} == original[1]


@pytest.mark.parametrize("bit, whole", [(5, True), (31, False)])
def test_a_flipped_bit_in_the_last_commit_frames_own_checksum(original, tmp_path, bit, whole):
    """The stored checksum of the last commit frame one bit off (the fuzz test's seed 31337698:
    exit 0 with that commit's rows gone): the frame is as written, so the commit comes back
    whole. Bit 31 is ambiguous (a page word's top bit moves the sum the same way): the commit
    counts and its page is named lost, exit 1, never exit 0 with rows gone."""
    # the last frame's checksum-1, big-endian
    db, last, found = flipped(original, tmp_path, lambda at: at + 16 + 3 - bit // 8, 1 << bit % 8)
    assert found.transactions == 1 and found.lost_pages == ([] if whole else [last[1]])
    assert cli("--database", db, "verify").exit_code == 1
    result = cli("--database", db, "recover")
    assert result.exit_code == (0 if whole else 1), result.output
    if whole:
        assert {t: rows(db, t) for t in TABLES} == original[1]


@pytest.mark.parametrize("kind", ["page data", "WAL header's salt"])
def test_backup_keeps_the_wal_sqlite_ignores_and_it_recovers_every_row(original, tmp_path, kind):
    db, wal_bytes, after = damage(original, tmp_path, kind)
    (tmp_path / "b").mkdir()
    result = cli("--json", "--database", db, "backup", "--dir", tmp_path / "b")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    kept = Path(report["original_wal"])
    assert kept.read_bytes() == wal_bytes and Path(f"{db}-wal").read_bytes() == wal_bytes
    assert report["wal_ignored"].startswith(f"{after} committed transaction(s)")
    assert f"the -wal is kept as {kept}" in result.stderr
    manifest = json.loads(Path(report["manifest"]).read_text())
    assert manifest["original_wal"]["file"] == kept.name
    assert cli("--database", db, "verify").exit_code == 1  # the backup's checkpoint kept them too
    assert Path(f"{db}-wal").read_bytes() == wal_bytes
    # The backup with its kept -wal beside it holds every row.
    pair = tmp_path / "pair" / "orchestra.db"
    pair.parent.mkdir()
    shutil.copy(report["path"], pair)
    shutil.copy(kept, f"{pair}-wal")
    assert cli("--database", pair, "recover").exit_code == 0
    assert counts(pair) == {t: len(r) for t, r in original[1].items()}


def test_a_kept_wal_that_changed_fails_the_backup_check(original, tmp_path):
    db, _, _ = damage(original, tmp_path, "page data")
    report = json.loads(cli("--json", "--database", db, "backup").stdout)
    assert check_backup(report["path"]).ok
    kept = Path(report["original_wal"])
    kept.write_bytes(kept.read_bytes()[:-1])
    assert any("the -wal kept with it, differs" in p for p in check_backup(report["path"]).problems)


def test_older_generation_frames_after_the_end_are_not_data_loss(tmp_path):
    """A checkpoint, then a smaller transaction: the WAL restarts with new salts over the old frames."""
    db = build(tmp_path / "orchestra.db", 300, wal=True)
    with no_checkpoint(db) as c:
        c.execute("PRAGMA wal_autocheckpoint = 0")
        for t in range(3):
            with c:
                c.executemany("INSERT INTO [HangFire.Job] (StateName, CreatedAt) VALUES ('x', ?)",
                              [(i,) for i in range(300)])
        before = Path(f"{db}-wal").stat().st_size
        assert c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        with c:
            c.execute("UPDATE [HangFire.Job] SET StateName = 'restarted' WHERE Id = 1")
    data = Path(f"{db}-wal").read_bytes()
    assert len(data) == before and len({data[32 + i * FRAME + 8:32 + i * FRAME + 16]
                                        for i in range(len(frames(data)))}) == 2  # two generations
    assert wal.walk(Path(f"{db}-wal")).transactions == 0
    assert cli("--database", db, "verify").exit_code == 0
    assert cli("--database", db, "recover").exit_code == 5  # nothing to recover


def test_an_uncommitted_tail_is_not_data_loss(original, tmp_path):
    """A writer killed before its commit frame: SQLite ignores those frames, rightly."""
    source, _ = original
    db = tmp_path / "orchestra.db"
    shutil.copy(source, db)
    data = Path(f"{source}-wal").read_bytes()
    last_commit = max(f for f, _, c in frames(data) if c)
    Path(f"{db}-wal").write_bytes(data[:32 + (last_commit - 1) * FRAME])
    assert wal.walk(Path(f"{db}-wal")).transactions == 0
    assert cli("--database", db, "verify").exit_code == 0


@pytest.mark.parametrize("command, because", [
    (["apply"], "writing now would let SQLite overwrite them"),
    (["rollback", "--to", "0", "--yes"], "writing now would let SQLite overwrite them"),
    (["copy-to", "postgresql://nobody@127.0.0.1:9/none"], "copying now would leave them behind"),
])
def test_commands_that_write_or_copy_refuse_while_the_wal_holds_ignored_commits(
        original, tmp_path, command, because):
    """A writing connection checkpoints (and, closing last, deletes the -wal): the frames would
    go; a copy would silently lack them."""
    db, wal_bytes, _ = damage(original, tmp_path, "page data")
    result = cli("--database", db, *command)
    assert result.exit_code == 5, result.output
    assert f"{because}; nothing changed" in result.stderr
    assert Path(f"{db}-wal").read_bytes() == wal_bytes
    assert not list(tmp_path.glob("orchestra.db.*"))  # no backup either: nothing began


def test_restore_refuses_before_its_pre_restore_copy(original, tmp_path):
    source, _ = original
    (tmp_path / "b").mkdir()
    backup = tmp_path / "b" / "orchestra.db.backup_20260101_000000"
    shutil.copy(source, backup)
    shutil.copy(f"{source}-wal", f"{backup}-wal")
    with no_checkpoint(backup) as c:  # fold its -wal in: a backup is one file
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    Path(f"{backup}-wal").unlink(missing_ok=True)
    db, wal_bytes, _ = damage(original, tmp_path, "salt")
    result = cli("--database", db, "restore", backup)
    assert result.exit_code == 5, result.output
    assert "run `orchestra-schema recover` first" in result.stderr
    assert Path(f"{db}-wal").read_bytes() == wal_bytes and not list(tmp_path.glob("orchestra.db.*"))


def test_a_correction_naming_a_page_far_past_the_others_is_not_used():
    """A one-bit 'correction' is a guess; one that names page 2**24 (a file of 64 GB) where
    the vouched frames name pages up to 9 is dropped, not scanned up to (recover read every
    page number up to it: minutes of zero pages)."""
    frames = [wal.Frame(1, 56, 9, False, b"s" * 8, True, sound=True),
              wal.Frame(2, 4176, 2 ** 24 + 3, True, b"s" * 8, False, sound=True, fixed=b"p",
                        header=(3, True))]
    kept = wal._plausible(frames)
    assert [(f.page, f.commit, f.sound, f.fixed) for f in kept] == [
        (9, False, True, None), (3, True, False, None)]
