"""A -wal file read frame by frame, past the point where SQLite stops reading it.

SQLite replays the WAL up to the first frame whose salts or cumulative checksum
do not hold and ignores everything after it, committed or not
(https://www.sqlite.org/fileformat2.html, section 4 "The WAL file format"). One
flipped bit thus hides every later commit while every check passes. This walk
finds those commits, so verify can say so, recover can read them and backup
can keep them. Plain file reads only: nothing here writes the -wal.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

HEADER = 32  # bytes of the WAL header
FRAME_HEADER = 24
MAGIC = {0x377F0682: "<", 0x377F0683: ">"}  # the checksum's byte order
SIZES = {512 << i for i in range(8)}
ATTEMPTS = 3  # walks of a -wal that a writer restarts or appends to meanwhile
SETTLE = 0.02  # seconds between two walks that must agree


@dataclass
class Walk:
    """What a -wal holds: the frames SQLite reads, and committed ones it ignores."""

    page_size: int | None = None
    frames: int = 0  # whole frames in the file
    read: dict[int, int] = field(default_factory=dict)  # page -> data offset of its newest frame SQLite reads
    stop: int | None = None  # the first frame SQLite does not read, if a later commit follows it
    why: str = ""  # why SQLite stops there
    ignored: dict[int, int] = field(default_factory=dict)  # page -> newest vouched frame past `stop`
    transactions: int = 0  # committed transactions past `stop`
    damaged: dict[int, int] = field(default_factory=dict)  # frame -> page its header names, inside them
    fixed: dict[int, bytes] = field(default_factory=dict)  # data offset -> page corrected (_one_bit)

    @property
    def committed(self) -> dict[int, int]:
        """Every committed page's newest frame: SQLite's, overlaid with the ignored ones."""
        return {**self.read, **self.ignored}

    @property
    def lost_pages(self) -> list[int]:
        """Pages of damaged frames that no later vouched frame replaces."""
        return sorted({p for f, p in self.damaged.items() if self._newest_frame(p) < f})

    def _newest_frame(self, page: int) -> int:
        offset = self.ignored.get(page)
        return 0 if offset is None else (offset - HEADER) // (FRAME_HEADER + self.page_size) + 1

    def summary(self) -> str:
        fixed = f", {len(self.fixed)} frame(s) with one flipped bit corrected" if self.fixed else ""
        return (f"{self.transactions} committed transaction(s) ({len(self.ignored)} page(s)) "
                f"after frame {self.stop} ({self.why}{fixed})")


def walk(path: Path, page_size: int | None = None) -> Walk:
    """Walk the -wal at `path` (a missing, unreadable or short file holds nothing we can read;
    SQLite names an unreadable one when it opens the database).

    A writer that restarts the WAL meanwhile rewrites its header: walk again. A frame read
    while the application was writing it looks damaged, with the commits it wrote after it
    behind: damage stays where it is, so ignored commits count only when two walks agree
    on the frame SQLite stops at and on why.
    """
    previous = None
    for _ in range(2 * ATTEMPTS):
        found = _walk_once(path, page_size)
        if found is None:
            continue  # restarted meanwhile
        if not found.transactions or (previous is not None
                                      and (previous.stop, previous.why) == (found.stop, found.why)):
            return found
        previous = found
        time.sleep(SETTLE)
    return Walk(page_size=found.page_size if found else None, frames=found.frames if found else 0,
                read=found.read if found else {})  # never still: a writer at work, not damage


def _walk_once(path: Path, page_size: int | None) -> Walk | None:
    """One walk; None when the header changed under it."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER)
            found = _walk(f, head, page_size)
            f.seek(0)
            return found if f.read(HEADER) == head else None
    except OSError:
        return Walk()


def _walk(f, head: bytes, page_size: int | None) -> Walk:
    magic = int.from_bytes(head[:4], "big") if len(head) == HEADER else 0
    size = int.from_bytes(head[8:12], "big") if magic in MAGIC else None
    size = size if size in SIZES else page_size
    if magic not in MAGIC or size is None:
        return Walk()
    order, salts = MAGIC[magic], head[16:24]
    computed, seed = checksum(head[:24], (0, 0), order), _stored(head, 24)
    header_ok = computed == seed
    if _one_bit_apart(computed, seed) and not _one_bit(head[:24], (0, 0), seed, order):
        seed = computed  # only its stored checksum took a flipped bit: frame 1 chains from the true one
    frames = _plausible(list(_frames(f, size, seed, order)))
    if not header_ok and frames and frames[0].linked:
        salts = frames[0].salts  # the header's own bytes are damaged: trust frame 1's salts
    _currency(frames, salts)
    out = Walk(size, len(frames))
    end, bad = _sqlite_end(frames, salts) if header_ok else (0, 0)
    out.read = _committed(frames[:end])
    _ignored(out, frames[end:], salts)
    if out.transactions:
        out.stop = bad + 1
        out.why = (_why(frames[bad], salts) if header_ok
                   else "the WAL header's checksum fails, SQLite reads no frame")
    return out


def _plausible(frames: list[Frame]) -> list[Frame]:
    """A corrected frame is a guess: one naming a page past any the checksums vouch for, plus
    one per frame (the most a transaction can grow the file), is not used (read as damaged)."""
    limit = max((f.page for f in frames if f.linked), default=0) + len(frames)
    for frame in frames:
        if frame.fixed is not None and frame.page > limit:
            frame.sound, frame.fixed, (frame.page, frame.commit) = False, None, frame.header
    return frames


def _stored(header: bytes, at: int) -> tuple[int, int]:
    return struct.unpack_from(">II", header, at)


@dataclass
class Frame:
    index: int  # 1 for the first
    offset: int  # of its page data in the file
    page: int
    commit: bool  # its header gives the database's size: it ends a transaction
    salts: bytes
    linked: bool  # its checksum holds from the frame before (as SQLite checks)
    sound: bool = False
    current: bool = False
    fixed: bytes | None = None  # its page, one flipped bit corrected (the file still has it)
    one_bit_off: bool = False  # damaged by one flipped bit, but which one is ambiguous (_one_bit)
    checksum_flipped: bool = False  # as written; its stored checksum took one flipped bit
    header: tuple[int, bool] = (0, False)  # page and commit as read, before a correction


# A frame is sound when its checksum holds seeded from the checksum stored in
# the frame before it (the WAL header's for frame 1): the writer wrote it right
# after that frame, and its page number, commit mark and page are as written.
# Also sound: a frame whose stored checksum alone is damaged, when the next
# frame holds seeded from the checksum computed for it, or when the stored one
# is one flipped bit off the computed one and no flipped bit of its page would
# explain that (the last frame too); and a frame whose
# checksum holds once one bit of its page number, commit mark or page is
# flipped back (corrected: _one_bit). Sound frames count only in the current
# generation: with the current salts, or chained to a sound frame that has
# them (a damaged salt); never old frames past a restart by a checkpoint,
# which carry older salts and chain only among themselves. A sound commit
# frame vouches for the sound frames since the commit before it; damaged
# frames among them are skipped (their pages are read as they were before).
# Limit: if the application wrote over the end SQLite saw, the older frames
# after its new ones keep the current salts and look the same as frames past
# damage.
def _frames(f, size: int, seed: tuple[int, int], order: str):
    """Every whole frame, its checksum checked as above; the page data is not kept."""
    f.seek(HEADER)
    before, alternative, index = None, None, 0
    while len(raw := f.read(FRAME_HEADER + size)) == FRAME_HEADER + size:
        index += 1
        page, commit = struct.unpack_from(">II", raw)
        stored = _stored(raw, 16)
        computed = checksum(raw[:8] + raw[FRAME_HEADER:], seed, order)
        frame = Frame(index, HEADER + (index - 1) * len(raw) + FRAME_HEADER, page, commit != 0,
                      raw[8:16], computed == stored and page != 0)
        frame.sound = frame.linked
        if not frame.sound and alternative is not None and page != 0 \
                and checksum(raw[:8] + raw[FRAME_HEADER:], alternative, order) == stored:
            frame.sound = before.sound = True  # the frame before: only its checksum was damaged
        if not frame.sound:
            _correct(frame, raw, seed, computed, order)
        if before is not None:
            yield before
        own = frame.checksum_flipped
        alternative = None if frame.linked or frame.fixed or own else computed
        before, seed = frame, computed if own else stored  # the next was written from it
    if before is not None:
        yield before


def _one_bit_apart(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return (a[0] ^ b[0]).bit_count() + (a[1] ^ b[1]).bit_count() == 1


def _correct(frame: Frame, raw: bytes, seed: tuple[int, int], computed: tuple[int, int],
             order: str) -> None:
    stored = _stored(raw, 16)
    candidates = _one_bit(raw[:8] + raw[FRAME_HEADER:], seed, stored, order)
    # Its stored checksum one bit off the computed one: that field took the bit and the frame
    # is as written, unless a flipped bit of its page also explains it (high bits can: the
    # sums carry a difference up to the top), and then which is unknown.
    own = frame.page != 0 and _one_bit_apart(computed, stored)
    if own and not candidates:
        frame.sound = frame.checksum_flipped = True
        return
    # Flips of a word's top bit can cancel out in the checksum's sums, so several bits may
    # fit: the frame was written whole (a torn write fits none), which bit is unknown.
    frame.one_bit_off = len(candidates) + own > 1
    fixed = candidates[0] if len(candidates) == 1 and not own else None
    if fixed is not None and fixed[:4] != bytes(4):
        page, commit = struct.unpack_from(">II", fixed)
        frame.header = (frame.page, frame.commit)  # as read, should the guess be dropped
        frame.sound, frame.fixed, frame.page, frame.commit = True, fixed[8:], page, commit != 0


def _one_bit(data: bytes, seed: tuple[int, int], stored: tuple[int, int], order: str) -> list[bytes]:
    """data with each one bit flipped that makes its checksum `stored` from `seed`.

    The checksum runs over pairs of words and each step can be undone: the
    states before each pair going forward from the seed, and going back from
    the stored checksum, must meet across the pair that holds the flipped bit.
    """
    words = list(struct.unpack(f"{order}{len(data) // 4}I", data))
    mask, pairs = 0xFFFFFFFF, len(words) // 2
    forward, (s0, s1) = [seed], seed
    for k in range(pairs):
        s0 = (s0 + words[2 * k] + s1) & mask
        s1 = (s1 + words[2 * k + 1] + s0) & mask
        forward.append((s0, s1))
    back, (s0, s1) = [stored] * (pairs + 1), stored
    for k in range(pairs - 1, -1, -1):
        s1 = (s1 - words[2 * k + 1] - s0) & mask
        s0 = (s0 - words[2 * k] - s1) & mask
        back[k] = (s0, s1)
    found = []
    for k in range(pairs):
        (p0, p1), (t0, t1), (a, b) = forward[k], back[k + 1], words[2 * k:2 * k + 2]
        need_a, need_b = (t0 - p0 - p1) & mask, (t1 - p1 - t0) & mask
        if need_b == b and (need_a ^ a).bit_count() == 1:
            found.append((2 * k, need_a))
        if need_a == a and (need_b ^ b).bit_count() == 1:
            found.append((2 * k + 1, need_b))
    out = []
    for at, value in found:
        fixed = list(words)
        fixed[at] = value
        out.append(struct.pack(f"{order}{len(fixed)}I", *fixed))
    return out


def _currency(frames: list[Frame], salts: bytes) -> None:
    """Current: sound, with the current salts or chained to a current frame either side. A
    restart writes the new generation from frame 1 on, so an older frame never stands before
    a current one that chains from it: that is a damaged salt, not an older generation."""
    for i, frame in enumerate(frames):
        frame.current = frame.sound and (frame.salts == salts or (i > 0 and frames[i - 1].current))
    for i in range(len(frames) - 2, -1, -1):
        after = frames[i + 1]
        if frames[i].sound and after.current and after.linked:
            frames[i].current = True


def _sqlite_end(frames: list[Frame], salts: bytes) -> tuple[int, int]:
    """(frames SQLite replays: up to its last commit before the first it rejects; that one)."""
    end = 0
    for i, frame in enumerate(frames):
        if not frame.linked or frame.salts != salts:
            return end, i
        if frame.commit:
            end = i + 1
    return end, len(frames)


def _committed(frames: list[Frame]) -> dict[int, int]:
    committed, pending = {}, {}
    for frame in frames:
        pending[frame.page] = frame.offset
        if frame.commit:
            committed.update(pending)
            pending.clear()
    return committed


def _ignored(out: Walk, frames: list[Frame], salts: bytes) -> None:
    """The transactions past SQLite's end that a sound commit frame vouches for."""
    pending, damaged = {}, {}
    for frame in frames:
        if not frame.current:
            if frame.salts == salts:  # an older generation's frame is not damage
                damaged[frame.index] = frame.page
                if frame.one_bit_off and frame.commit:  # a commit all the same, its page lost
                    _vouch(out, pending, damaged)
            continue
        pending[frame.page] = frame.offset
        if frame.fixed:
            out.fixed[frame.offset] = frame.fixed
        if frame.commit:
            _vouch(out, pending, damaged)


def _vouch(out: Walk, pending: dict[int, int], damaged: dict[int, int]) -> None:
    """A commit frame ends a transaction: its frames count, its damaged ones are named."""
    out.ignored.update(pending)
    out.damaged.update(damaged)
    out.transactions += 1
    pending.clear()
    damaged.clear()


def _why(frame: Frame, salts: bytes) -> str:
    if frame.salts != salts:
        return f"frame {frame.index}'s salt differs from the WAL header's"
    return f"frame {frame.index}'s checksum fails"


def checksum(data: bytes, seed: tuple[int, int], order: str) -> tuple[int, int]:
    """SQLite's WAL checksum of data (a multiple of 8 bytes), continuing from seed."""
    s0, s1 = seed
    words = iter(struct.unpack(f"{order}{len(data) // 4}I", data))
    mask = 0xFFFFFFFF
    for a, b in zip(words, words):  # pairs of words
        s0 = (s0 + a + s1) & mask
        s1 = (s1 + b + s0) & mask
    return s0, s1


def ignored(database: Path) -> Walk:
    """The walk of database's -wal (nothing ignored when there is none)."""
    return walk(Path(f"{database}-wal"))


WRITING = "writing now would let SQLite overwrite them"  # its checkpoint, then the next commit


def refuse(database: Path, because: str = WRITING) -> None:
    """Refused (exit 5) while SQLite ignores commits in the -wal, `because` says why."""
    found = ignored(database)
    if found.transactions:
        from ...errors import Refused
        raise Refused(f"{database}-wal: SQLite ignores {found.summary()}; {because}; nothing "
                      "changed; run `orchestra-schema recover` first, which brings them back")


def problems(database: Path) -> list[str]:
    """verify's answer: committed transactions SQLite ignores are data it does not show."""
    found = ignored(database)
    if not found.transactions:
        return []
    return [f"{database.name}-wal: SQLite ignores {found.summary()}: their rows are missing from "
            "every query; stop the application (its next checkpoint can overwrite them), then run "
            "`orchestra-schema recover` to bring them back"]
