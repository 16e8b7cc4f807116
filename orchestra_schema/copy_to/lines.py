"""A table's rows in COPY's binary format, made by SQLite, with the digest the proof compares.

Used as is by copy-to for a small source, and by each copy worker (copy_workers.py)
for its share of rowid ranges. Each row is one SQLite expression (pg_values); Python
only hashes it and joins rows into pieces of about BATCH_BYTES, so memory stays flat
whatever the size of a table. (The rows are still called lines: COPY numbers them so.)
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from operator import methodcaller
from typing import Iterator

try:
    from _md5 import md5 as _md5  # CPython's own md5, as hashlib's fallback
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import md5 as _md5

from . import values as pg_values
from ..engines.sqlite.database import quote

BATCH_BYTES = 1 << 20  # COPY data goes in pieces of about this size
LOWEST, HIGHEST = -2**63, 2**63 - 1  # every rowid
RANGE = "WHERE rowid BETWEEN ? AND ? ORDER BY rowid"  # one range, in rowid order
DIGEST_BITS = 64  # digests are compared modulo 2**64 (the sum of each row's md5's first 8 bytes)
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY's header: no flags, no extension
TRAILER = b"\xff\xff"
_DIGEST = methodcaller("digest")


@dataclass(frozen=True)
class Select:
    """The statement making a table's rows for one rowid range, and with
    --truncate-long-text the statement finding the range's values it cuts."""
    sql: str
    cuts: str | None = None  # rows: Id, then per column in `limits` its length or NULL
    limits: tuple[tuple[str, int], ...] = ()  # (column, characters kept)


@dataclass
class Piece:
    """Whole lines of one rowid range: `rows` lines in `data`, the first of them the
    `offset`-th row (from 0) of the range starting at rowid `start`."""
    data: bytes
    rows: int
    start: int
    offset: int


def select(table: str, cols: list[pg_values.Column], truncate: bool) -> Select:
    longs = [c for c in cols if c.limit is not None] if truncate else []
    return Select(f"SELECT {pg_values.source_row(cols, truncate)} FROM {quote(table)} {RANGE}",
                  _cuts_sql(table, longs) if longs else None,
                  tuple((c.name, c.limit) for c in longs))


def _cuts_sql(table: str, longs: list[pg_values.Column]) -> str:
    """The range's rows holding a value over its varchar limit: Id, then each column's
    length (a value of at most `limit` bytes fits without counting its characters, which
    scans it)."""
    names = [(pg_values.q(c.name), c.limit) for c in longs]
    over = " OR ".join(f"(octet_length({x}) > {n} AND length({x}) > {n})" for x, n in names)
    return (f'SELECT "Id", {", ".join(f"length({x})" for x, _ in names)} FROM {quote(table)} '
            f"WHERE rowid BETWEEN ? AND ? AND ({over}) ORDER BY rowid")


def digest(texts: list[bytes]) -> int:
    """The sum of the first 8 bytes of each text's md5 (big-endian, unsigned): no order of
    the texts changes it. No Python per row: md5 mapped over the list, the digests joined,
    and every other 8-byte word of them summed as an array (slicing each digest and
    int.from_bytes cost 0.3 us a row more, CPython's md5 0.2 us less than OpenSSL's, whose
    every call begins and ends an EVP context)."""
    joined = b"".join(map(_DIGEST, map(_md5, texts)))
    firsts = array.array("Q", memoryview(joined).cast("Q")[::2])
    if sys.byteorder == "little":
        firsts.byteswap()
    return sum(firsts)


class Lines:
    """Iterating gives the Pieces of rows start..end (rowids) in rowid order; then
    `digest` holds copy_lines.digest of every row, and `cuts` what --truncate-long-text
    cut: [column, Id, length, limit]."""

    def __init__(self, conn, statement: Select, start: int = LOWEST, end: int = HIGHEST):
        self.conn, self.statement, self.start, self.end = conn, statement, start, end
        self.digest = 0
        self.cuts: list[list] = []

    def __iter__(self) -> Iterator[Piece]:
        # The loop body is all the Python a row costs, so it stays this bare (a star-
        # unpacking `for text, *rest` and a conditional took 0.14 s more CPU per 400k
        # rows); hashing goes by batch, 0.2 s less than an md5 call per row.
        total, size, offset = 0, 0, 0
        batch: list[bytes] = []
        append = batch.append
        for (row,) in self.conn.execute(self.statement.sql, (self.start, self.end)):
            append(row)
            size += len(row)
            if size >= BATCH_BYTES:
                total += digest(batch)
                yield Piece(b"".join(batch), len(batch), self.start, offset)
                offset, size = offset + len(batch), 0
                batch.clear()
        self.digest = total + digest(batch)
        if batch:
            yield Piece(b"".join(batch), len(batch), self.start, offset)
        if self.statement.cuts:  # the range's pages were just read: still in SQLite's cache
            self.cuts = [[name, str(row_id), length, limit]
                         for row_id, *lengths in self.conn.execute(
                             self.statement.cuts, (self.start, self.end))
                         for (name, limit), length in zip(self.statement.limits, lengths)
                         if length is not None and length > limit]
