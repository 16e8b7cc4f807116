"""Reading what is still readable from a damaged SQLite file, row by row.

apsw's SQLite has neither the recovery extension (sqlite3_recover) nor the
sqlite_dbpage table, so this works through plain SQL: a table is scanned in
rowid order; when a damaged page stops the scan, a search over rowids (seeks
are cheap) finds the first rowid after the damage that can be read again, and
the scan resumes there. The rows of the damaged pages are lost; how many is
told by counting the table through its indexes, which are separate b-trees and
often intact when the table's pages are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import apsw

from .database import quote

LOWEST, HIGHEST = -(2 ** 63), 2 ** 63 - 1


@dataclass
class Damage:
    read: int = 0  # rows read
    regions: int = 0  # damaged stretches skipped
    stopped: bool = False  # reading stopped at damage it could not skip (WITHOUT ROWID)
    rowid_gap: int | None = 0  # rowids skipped over: at most this many rows lost (None: no bound)

    def skipped(self, before: int | None, after: int | None) -> None:
        """Rowids strictly between `before` and `after` were passed over (rowids start at 1)."""
        if after is None or self.rowid_gap is None:
            self.rowid_gap = None
        else:
            self.rowid_gap += max(after - (0 if before is None else before) - 1, 0)


def rows(conn: apsw.Connection, table: str, columns: list[str], without_rowid: bool,
         damage: Damage) -> Iterator[tuple]:
    """Every readable row's `columns`, skipping damaged stretches; counts in `damage`."""
    selected = ", ".join(quote(c) for c in columns) or "NULL"
    if without_rowid:
        yield from _plain_scan(conn, f"SELECT {selected} FROM {quote(table)}", damage)
        return
    scan = f"SELECT rowid, {selected} FROM {quote(table)} NOT INDEXED WHERE rowid >= ? ORDER BY rowid"
    start, previous, damaged = LOWEST, None, False  # previous: the last rowid read
    while start is not None:
        try:
            for row in conn.execute(scan, (start,)):
                if damaged:
                    damage.skipped(previous, row[0])
                    damaged = False
                previous = row[0]
                damage.read += 1
                yield row[1:]
            break
        except apsw.Error:
            damage.regions += 1
            damaged = True
        if previous == HIGHEST:
            break
        # Nothing read from `start`: skip past it, so every pass makes progress.
        floor = start + 1 if previous is None or previous < start else previous + 1
        start = _next_readable(conn, scan + " LIMIT 1", floor)
    if damaged:  # the damage ran to the end: up to the largest rowid, if that is readable
        damage.skipped(previous, _max_rowid(conn, table, previous))


def _max_rowid(conn: apsw.Connection, table: str, previous: int | None) -> int | None:
    try:
        highest = conn.execute(f"SELECT max(rowid) FROM {quote(table)}").fetchone()[0]
    except apsw.Error:
        return None
    return None if highest is None else max(highest + 1, previous or 0)


def _plain_scan(conn: apsw.Connection, sql: str, damage: Damage) -> Iterator[tuple]:
    try:
        for row in conn.execute(sql):
            damage.read += 1
            yield row
    except apsw.Error:
        damage.regions += 1
        damage.stopped = True


def _next_readable(conn: apsw.Connection, probe: str, floor: int) -> int | None:
    """The smallest rowid >= floor from which reading works again (None: none).

    Doubling steps find a readable point past the damage, bisection the first one.
    """
    def readable(rowid: int) -> bool:
        try:
            conn.execute(probe, (rowid,)).fetchall()
            return True
        except apsw.Error:
            return False

    if readable(floor):
        return floor
    low, step = floor, 1
    while True:
        high = min(floor + step, HIGHEST)
        if readable(high):
            break
        if high == HIGHEST:
            return None
        low, step = high, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if readable(middle):
            high = middle
        else:
            low = middle
    return high


def count_lost(conn: apsw.Connection, table: str, read: int) -> tuple[int | None, bool]:
    """(rows lost, exact?) for a damaged table of which `read` rows were read.

    Exact when the table's b-tree or one of its indexes can still be counted
    whole; otherwise at least the rows that the readable parts of its indexes
    list but the table cannot deliver; None when nothing tells.
    """
    q = quote(table)
    try:
        indexes = [quote(name) for _, name, _, _, partial in conn.execute(f"PRAGMA index_list({q})")
                   if not partial]
    except apsw.Error:
        indexes = []
    for sql in [f"SELECT count(*) FROM {q} NOT INDEXED"] + [
            f"SELECT count(*) FROM {q} INDEXED BY {ix}" for ix in indexes]:
        try:
            return max(conn.execute(sql).fetchone()[0] - read, 0), True
        except apsw.Error:
            continue
    missing: set[int] = set()
    for ix in indexes:
        missing |= _listed_but_unreadable(conn, q, ix, missing)
    return (len(missing), False) if indexes else (None, False)


def _listed_but_unreadable(conn: apsw.Connection, q: str, ix: str, known: set[int]) -> set[int]:
    """Rowids an index lists (up to its own damage) whose table row cannot be read."""
    missing = set()
    try:
        for (rowid,) in conn.execute(f"SELECT rowid FROM {q} INDEXED BY {ix}"):
            if rowid in known or rowid in missing:
                continue
            try:
                found = conn.execute(f"SELECT * FROM {q} NOT INDEXED WHERE rowid = ?", (rowid,)).fetchall()
            except apsw.Error:
                found = []
            if not found:
                missing.add(rowid)
    except apsw.Error:
        pass  # the index is damaged too: what it listed so far still counts
    return missing
