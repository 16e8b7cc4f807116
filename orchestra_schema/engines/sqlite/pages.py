"""A reader of the SQLite file format, page by page, with plain file I/O.

For salvaging a file SQLite itself refuses: nothing here trusts page 1 more
than any other page. The page size comes from the header when it is sane and
the pages agree, else from the size at which most pages parse as b-tree pages.
Committed frames of a -wal beside the file are read in place of the pages they
replace (the newest committed frame of each page), as SQLite would, and so are
committed frames SQLite ignores past a damaged one (wal.py).
Layouts: https://www.sqlite.org/fileformat2.html (sections 1.3, 1.6, 2.1, 4).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from . import wal

MAGIC = b"SQLite format 3\x00"
SIZES = [512 << i for i in range(8)]  # 512 .. 65536
INDEX_INTERIOR, TABLE_INTERIOR, INDEX_LEAF, TABLE_LEAF = 2, 5, 10, 13
BTREE_KINDS = (INDEX_INTERIOR, TABLE_INTERIOR, INDEX_LEAF, TABLE_LEAF)
SAMPLE_BYTES = 4 << 20  # what page-size detection reads


class Damaged(Exception):
    """A cell, record or overflow chain that does not hold together."""


class RawText(bytes):
    """A text value whose bytes are not valid in the database's encoding, kept as stored:
    SQLite stores and returns such text as it is, so it is the user's data."""


def varint(buf: bytes, at: int) -> tuple[int, int]:
    """(value, offset after it) of the varint at `at` (1 to 9 bytes, big-endian)."""
    if at < len(buf) and buf[at] < 0x80:  # the common case: one byte
        return buf[at], at + 1
    value = 0
    for i in range(8):
        if at + i >= len(buf):
            raise Damaged("varint runs past its page")
        byte = buf[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    if at + 8 >= len(buf):
        raise Damaged("varint runs past its page")
    value = (value << 8) | buf[at + 8]
    return (value - (1 << 64) if value >= 1 << 63 else value), at + 9


@dataclass
class BTreePage:
    number: int
    kind: int
    cells: list[int]  # offsets of the cells in the page
    right: int = 0  # right-most child (interior pages)

    @property
    def leaf(self) -> bool:
        return self.kind in (INDEX_LEAF, TABLE_LEAF)

    @property
    def table(self) -> bool:
        return self.kind in (TABLE_LEAF, TABLE_INTERIOR)


def parse_btree(data: bytes, number: int, usable: int) -> BTreePage | None:
    """The page's b-tree header and cell pointers, or None if they do not hold together."""
    at = 100 if number == 1 else 0
    if len(data) < at + 8 or data[at] not in BTREE_KINDS:
        return None
    kind = data[at]
    ncells, content = struct.unpack_from(">HH", data, at + 3)
    content = content or 65536
    header = 8 if kind in (INDEX_LEAF, TABLE_LEAF) else 12
    pointers = at + header
    end = pointers + 2 * ncells
    if end > usable or content > usable or (ncells and content < end):
        return None
    cells = list(struct.unpack_from(f">{ncells}H", data, pointers))
    if any(c < content or c >= usable for c in cells):
        return None
    right = struct.unpack_from(">I", data, at + 8)[0] if header == 12 else 0
    return BTreePage(number, kind, cells, right)


@dataclass
class Header:
    magic_ok: bool
    page_size: int | None  # None: not a sane value
    reserved: int
    freelist_trunk: int
    freelist_count: int
    encoding: str


def read_header(raw: bytes) -> Header:
    raw = raw.ljust(100, b"\x00")
    size = int.from_bytes(raw[16:18], "big")
    size = 65536 if size == 1 else size
    encoding = {1: "utf-8", 2: "utf-16-le", 3: "utf-16-be"}.get(int.from_bytes(raw[56:60], "big"), "utf-8")
    reserved = raw[20] if raw[20] < 64 else 0
    trunk, count = struct.unpack_from(">II", raw, 32)
    return Header(raw[:16] == MAGIC, size if size in SIZES else None, reserved, trunk, count, encoding)


class PageFile:
    """The pages of one database file (and its -wal's committed frames), read on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = open(self.path, "rb")
        self.size = os.fstat(self.file.fileno()).st_size
        self.header = read_header(self.file.read(100))
        self.wal = Wal(Path(f"{path}-wal"))
        self.page_size = self._page_size()
        self.usable = self.page_size - self.header.reserved if self.header.magic_ok else self.page_size
        self.encoding = self.header.encoding if self.header.magic_ok else "utf-8"
        self.wal_frames = self.wal.frames(self.page_size)
        pages_in_file = -(-self.size // self.page_size)
        self.page_count = max([pages_in_file, *self.wal_frames.keys()], default=0)
        self.size_detected = self.header.page_size != self.page_size

    def close(self) -> None:
        self.file.close()
        self.wal.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def page(self, number: int) -> bytes:
        frame = self.wal_frames.get(number)
        if frame is not None:
            return self.wal.read(frame, self.page_size)
        self.file.seek((number - 1) * self.page_size)
        return self.file.read(self.page_size).ljust(self.page_size, b"\x00")

    def pages(self):
        """(number, bytes) of every page, read in order, 1 MiB at a time."""
        chunk = max(1, (1 << 20) // self.page_size)
        self.file.seek(0)
        number = 1
        while number <= self.page_count:
            block = self.file.read(chunk * self.page_size)
            for i in range(chunk):
                if number > self.page_count:
                    return
                if number in self.wal_frames:
                    yield number, self.page(number)  # the -wal's copy, read from the -wal
                else:
                    part = block[i * self.page_size:(i + 1) * self.page_size]
                    yield number, part.ljust(self.page_size, b"\x00")
                number += 1

    def _page_size(self) -> int:
        """The header's page size if the pages agree with it, else the best-parsing size."""
        self.file.seek(0)
        sample = self.file.read(SAMPLE_BYTES)
        wal_size = self.wal.page_size
        scores = {size: _parsing_pages(sample, size) for size in SIZES}
        best = max(SIZES, key=lambda s: (scores[s], s == self.header.page_size, s == wal_size))
        for trusted in (self.header.page_size, wal_size):
            if trusted and scores[trusted] * 2 >= scores[best]:
                return trusted
        return best if scores[best] else (self.header.page_size or wal_size or 4096)


def _parsing_pages(sample: bytes, size: int) -> int:
    """How many pages of `sample` parse as b-tree pages at this page size."""
    found = 0
    for number in range(1, len(sample) // size + 1):
        page = sample[(number - 1) * size: number * size]
        if parse_btree(page, number, size) is not None:
            found += 1
    return found


class Wal:
    """The committed frames of a -wal file: page number -> file offset of its newest frame."""

    def __init__(self, path: Path):
        self.path = path
        self.walk = wal.Walk()
        self.file = open(path, "rb") if path.is_file() else None
        head = self.file.read(32) if self.file else b""
        magic = int.from_bytes(head[:4], "big") if len(head) == 32 else 0
        self.ok = magic in wal.MAGIC
        self.page_size = int.from_bytes(head[8:12], "big") if self.ok else None
        if self.page_size not in SIZES:
            self.ok, self.page_size = False, None

    def close(self) -> None:
        if self.file:
            self.file.close()

    def read(self, offset: int, size: int) -> bytes:
        if offset in self.walk.fixed:
            return self.walk.fixed[offset]
        self.file.seek(offset)
        return self.file.read(size)

    def frames(self, page_size: int) -> dict[int, int]:
        """Committed frames, with those SQLite ignores past a damaged frame (wal.py)."""
        if not self.ok or page_size != self.page_size:
            return {}
        self.walk = wal.walk(self.path, page_size)
        return self.walk.committed


@dataclass
class Cell:
    """One leaf cell: its row (table leaf: rowid and values; index leaf: values only)."""

    page: int
    index: int
    rowid: int | None
    values: list = field(default_factory=list)
    complete: bool = True  # False: the payload or its overflow chain was damaged
    overflow: list[int] = field(default_factory=list)  # overflow pages it used


class Reader:
    """Cells and records of b-tree pages of one PageFile."""

    def __init__(self, pf: PageFile):
        self.pf = pf
        u = pf.usable
        self.max_local = {True: u - 35, False: (u - 12) * 64 // 255 - 23}
        self.min_local = (u - 12) * 32 // 255 - 23

    def children(self, page: BTreePage, data: bytes) -> list[tuple[int, int | None]]:
        """(child page, key) of an interior page; the key is the rowid bound (table trees)."""
        out = []
        for offset in page.cells:
            child = struct.unpack_from(">I", data, offset)[0]
            key = varint(data, offset + 4)[0] if page.kind == TABLE_INTERIOR else None
            out.append((child, key))
        out.append((page.right, None))
        return out

    def cells(self, page: BTreePage, data: bytes):
        """Every leaf cell of the page, decoded; a cell that cannot be read at all is None."""
        for i, offset in enumerate(page.cells):
            try:
                yield self.cell(page, data, i, offset)
            except Damaged:
                yield None

    def cell(self, page: BTreePage, data: bytes, i: int, offset: int) -> Cell:
        if page.kind == INDEX_INTERIOR:  # its cells are index entries too, after a child pointer
            offset += 4
        size, at = varint(data, offset)
        rowid = None
        if page.kind == TABLE_LEAF:
            rowid, at = varint(data, at)
        if size < 0 or size > 1 << 31:
            raise Damaged("payload size out of range")
        cell = Cell(page.number, i, rowid)
        payload = self._payload(data, at, size, page.table, cell)
        cell.values, whole = self.record(payload)
        cell.complete = cell.complete and whole
        return cell

    def _payload(self, data: bytes, at: int, size: int, table: bool, cell: Cell) -> bytes:
        usable = self.pf.usable
        x = self.max_local[table]
        local = size
        if size > x:
            k = self.min_local + (size - self.min_local) % (usable - 4)
            local = k if k <= x else self.min_local
        if at + local > usable:
            raise Damaged("cell runs past its page")
        if local == size:
            return data[at:at + size]
        parts = [data[at:at + local]]
        got, nxt = local, struct.unpack_from(">I", data, at + local)[0]
        seen = set()
        while got < size:
            if not 2 <= nxt <= self.pf.page_count or nxt in seen:
                cell.complete = False
                break
            seen.add(nxt)
            cell.overflow.append(nxt)
            over = self.pf.page(nxt)
            take = min(size - got, usable - 4)
            parts.append(over[4:4 + take])
            got += take
            nxt = struct.unpack_from(">I", over, 0)[0]
        if got >= size and nxt != 0:
            cell.complete = False  # the chain goes on: a page of it was replaced
        return b"".join(parts)

    def record(self, payload: bytes) -> tuple[list, bool]:
        """(values, whole?) of a record; values cut short where the payload ends."""
        header_size, at = varint(payload, 0)
        if header_size < 1 or header_size > len(payload):
            raise Damaged("record header out of range")
        types = payload[at:header_size]
        if types and max(types) >= 0x80:  # a serial type of more than one byte
            types = []
            while at < header_size:
                serial, at = varint(payload, at)
                types.append(serial)
            if at != header_size:
                raise Damaged("record header overruns")
        values, body, end = [], header_size, len(payload)
        for serial in types:
            if serial >= 13 and serial % 2:  # text, the common case
                n = (serial - 13) >> 1
                try:
                    value = payload[body:body + n].decode(self.pf.encoding)
                except UnicodeDecodeError:
                    value = self.text(payload[body:body + n])
                body += n
            else:
                value, body = self._value(payload, body, serial)
            if body > end:
                return values, False
            values.append(value)
        return values, body == end

    def _value(self, buf: bytes, at: int, serial: int):
        if serial == 0:
            return None, at
        if 1 <= serial <= 6:
            n = (1, 2, 3, 4, 6, 8)[serial - 1]
            return int.from_bytes(buf[at:at + n], "big", signed=True), at + n
        if serial == 7:
            if at + 8 > len(buf):
                return None, at + 8
            return struct.unpack_from(">d", buf, at)[0], at + 8
        if serial in (8, 9):
            return serial - 8, at
        if serial in (10, 11):
            raise Damaged("reserved serial type")
        n = (serial - 12) // 2
        raw = buf[at:at + n]
        if serial % 2 == 0:
            return raw, at + n
        return self.text(raw), at + n

    def text(self, raw: bytes) -> str | RawText:
        try:
            return raw.decode(self.pf.encoding)
        except UnicodeDecodeError:  # UTF-16 text goes into a UTF-8 database: converted, as SQLite would
            return RawText(raw) if self.pf.encoding == "utf-8" else raw.decode(self.pf.encoding, "replace")
