"""Salvaging the rows of a damaged SQLite file, page by page, into a fresh database.

The file is read with pages.py, never opened by SQLite. A first pass notes
every page's kind and the interior page that points at it; each leaf then
belongs to the tree whose root its chain of parents reaches. The schema comes
from sqlite_master's tree (page 1), or, when that is damaged, from every leaf
cell shaped like a sqlite_master record (type, name, tbl_name, rootpage, sql).
A second pass copies each table leaf's rows into the table its tree belongs to.
Leaves whose chain is broken (a damaged root or interior page) are orphans:
each group of them (a surviving subtree, or a lone leaf) goes to the one table
whose shape (column count, types, NOT NULL, rowid alias) its rows fit, among
the tables whose own tree is damaged; what fits no table, or more than one,
stays in lost_and_found with its page and cell, as does every row a table
refuses (constraints) or that was cut short (a damaged overflow chain).
Losses are counted exactly where an intact index of the table lists its
rowids, bounded by the rowid keys of interior pages where those survive,
and "unknown" otherwise.
"""

from __future__ import annotations

import contextlib
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property

import apsw

from . import pages
from .database import quote

FREE = 1  # page marks
LOST_AND_FOUND = "lost_and_found"
SCHEMA_TYPES = ("table", "index", "view", "trigger")
FIT_SHARE = 0.9  # a group goes to a table only if this share of its rows fits it


@dataclass
class SchemaRow:
    type: str
    name: str
    tbl_name: str
    rootpage: int
    sql: str | None


@dataclass
class Shape:
    """How a table's rows are stored: what a record must look like to be one of them."""

    name: str
    columns: list[str]  # insertable columns, in record order
    affinity: list[str]
    notnull: list[bool]
    optional: int  # trailing columns a short record (ALTER TABLE ADD COLUMN) may lack
    ipk: int | None  # the INTEGER PRIMARY KEY column (stored as NULL, the rowid is its value)

    def fits(self, signature: tuple) -> bool:
        n = len(signature)
        if n > len(self.columns) or n < len(self.columns) - self.optional:
            return False
        for i, kind in enumerate(signature):
            if i == self.ipk:
                if kind != "null":
                    return False
            elif kind == "null":
                if self.notnull[i]:
                    return False
            elif kind not in _ACCEPTS[self.affinity[i]]:
                return False
        return True

    def row(self, rowid: int, values: list) -> list:
        values = list(values)
        if self.ipk is not None and self.ipk < len(values):
            values[self.ipk] = rowid
        return values


_ACCEPTS = {"INTEGER": {"int"}, "TEXT": {"text"}, "REAL": {"int", "real"},
            "NUMERIC": {"int", "real", "text"}, "BLOB": {"int", "real", "text", "blob"}}


def signature(values: list) -> tuple:
    return tuple("null" if v is None else "int" if isinstance(v, int) else "real"
                 if isinstance(v, float) else "text" if isinstance(v, (str, pages.RawText))
                 else "blob" for v in values)


def placeholders(values: list, first: int = 0) -> str:
    """?, one per value; text that is not UTF-8 goes in as its bytes, made text by SQLite."""
    return ", ".join(["?"] * first + ["CAST(? AS TEXT)" if isinstance(v, pages.RawText) else "?"
                                      for v in values])


def stored(column: str) -> str:
    """SQL reading a column without decoding its text (apsw refuses text that is not UTF-8):
    its type, then text as its bytes; as_stored() turns the pair back into the value."""
    return f"typeof({column}), iif(typeof({column}) = 'text', CAST({column} AS BLOB), {column})"


def as_stored(kind: str, value):
    if kind != "text":
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return pages.RawText(value)


def affinity(declared: str) -> str:
    """SQLite's column affinity rules (datatype3.html, 3.1)."""
    t = (declared or "").upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not t or "BLOB" in t:
        return "BLOB"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def shape_of(conn: apsw.Connection, table: str) -> Shape | None:
    """The shape of `table` in conn; None for a WITHOUT ROWID or virtual table."""
    listed = {name: (kind, wr) for _, name, kind, _, wr, _ in conn.execute("PRAGMA main.table_list")}
    if listed.get(table, ("table", 0)) != ("table", 0):
        return None
    info = [r for r in conn.execute(f"PRAGMA table_xinfo({quote(table)})") if r[6] in (0, 3)]
    pks = [r for r in info if r[5]]
    ipk = None
    if len(pks) == 1 and pks[0][2].upper() == "INTEGER":
        ipk = info.index(pks[0])
    optional = 0
    for r in reversed(info):  # trailing columns added later: nullable or with a default
        if r[3] and r[4] is None:
            break
        optional += 1
    return Shape(table, [r[1] for r in info if r[6] == 0], [affinity(r[2]) for r in info],
                 [bool(r[3]) for r in info], optional, ipk)


@dataclass
class Scan:
    """What the first pass learnt about the file's pages."""

    pf: pages.PageFile
    reader: pages.Reader
    kind: bytearray  # b-tree page kind per page (0: not a b-tree page)
    parent: array  # the interior page pointing at each page (0: none)
    marks: bytearray  # FREE for freelist pages
    broken: set[int] = field(default_factory=set)  # interior pages with a bad child
    schema: list[SchemaRow] = field(default_factory=list)
    schema_pages: set[int] = field(default_factory=set)
    schema_whole: bool = True  # sqlite_master's tree was read whole
    freelist_known: bool = True

    def root_of(self, page: int) -> int:
        """The top of the chain of surviving parents above `page`."""
        for _ in range(64):
            up = self.parent[page]
            if not up:
                return page
            page = up
        return page  # a cycle: a damaged page pointing back into its own subtree

    def whole(self, root: int, table: bool) -> bool:
        """Is the tree at `root` intact: a b-tree page of its family, no bad child below it?"""
        kind = self.kind[root] if 0 < root <= self.pf.page_count else 0
        if not kind or (kind in (pages.TABLE_LEAF, pages.TABLE_INTERIOR)) != table:
            return False
        return root not in self.broken_roots

    @cached_property
    def broken_roots(self) -> set[int]:
        """The trees with a bad child somewhere (asked once `broken` is complete)."""
        return {self.root_of(p) for p in self.broken}

    def key_range(self, page: int, up: int | None = None) -> tuple[int | None, int | None]:
        """(low, high]: the rowids a page of a table tree may hold, from its parents' keys.

        up: the interior page pointing at `page` (default: its parent); None bounds are unknown.
        """
        up = self.parent[page] if up is None else up
        if not up:
            return 0, None  # a root: rowids start at 1 (assumed), no upper bound known
        data = self.pf.page(up)
        children = self.reader.children(pages.parse_btree(data, up, self.pf.usable), data)
        low = high = None
        for i, (child, key) in enumerate(children):
            if child == page:
                low, high = (children[i - 1][1] if i else None), key
                break
        if low is None or high is None:
            outer_low, outer_high = self.key_range(up)
            low = outer_low if low is None else low
            high = outer_high if high is None else high
        return low, high

    def tree_cells(self, root: int):
        """The rows or entries of the tree at `root` (None for a cell that cannot be read)."""
        for page in range(1, self.pf.page_count + 1):
            # an index's interior pages hold entries too; a table's hold only keys
            if self.kind[page] in (pages.TABLE_LEAF, pages.INDEX_LEAF, pages.INDEX_INTERIOR) \
                    and self.root_of(page) == root:
                data = self.pf.page(page)
                yield from self.reader.cells(pages.parse_btree(data, page, self.pf.usable), data)


def scan(pf: pages.PageFile, progress=None) -> Scan:
    """First pass: page kinds, parents, the freelist and the schema."""
    n = pf.page_count
    found = Scan(pf, pages.Reader(pf), bytearray(n + 1), array("I", bytes(4 * (n + 1))),
                 bytearray(n + 1))
    _mark_freelist(found)
    children_of = {}
    for number, data in pf.pages():
        if found.marks[number] == FREE:
            continue
        node = pages.parse_btree(data, number, pf.usable)
        if node is None:
            continue
        found.kind[number] = node.kind
        if not node.leaf:
            try:
                children_of[number] = [c for c, _ in found.reader.children(node, data)]
            except pages.Damaged:
                found.broken.add(number)
        if progress and number % 4096 == 0:
            progress(number, 2 * n)
    for number, children in children_of.items():
        table = found.kind[number] == pages.TABLE_INTERIOR
        for child in children:
            if not 2 <= child <= n or found.marks[child] == FREE:
                found.broken.add(number)
                continue
            kind = found.kind[child]
            if not kind or (kind in (pages.TABLE_LEAF, pages.TABLE_INTERIOR)) != table:
                found.broken.add(number)
            elif not found.parent[child]:
                found.parent[child] = number
    _read_schema(found)
    return found


def _mark_freelist(found: Scan) -> None:
    header, pf = found.pf.header, found.pf
    if not header.magic_ok:
        found.freelist_known = False
        return
    trunk, seen = header.freelist_trunk, 0
    while trunk and seen <= header.freelist_count:
        if not 2 <= trunk <= pf.page_count or found.marks[trunk] == FREE:
            found.freelist_known = False
            return
        data = pf.page(trunk)
        found.marks[trunk] = FREE
        count = int.from_bytes(data[4:8], "big")
        if count > pf.usable // 4 - 2:
            found.freelist_known = False
            return
        for i in range(count):
            leaf = int.from_bytes(data[8 + 4 * i: 12 + 4 * i], "big")
            if 2 <= leaf <= pf.page_count:
                found.marks[leaf] = FREE
        seen += 1 + count
        trunk = int.from_bytes(data[:4], "big")


def _read_schema(found: Scan) -> None:
    """sqlite_master's rows: from its tree at page 1, else from leaves shaped like it."""
    pf = found.pf
    found.schema_whole = found.whole(1, table=True)
    leaves = _leaves(found, lambda p: found.root_of(p) == 1) if found.schema_whole else \
        _leaves(found, lambda p: _looks_like_schema(found, p))
    rows: dict[str, SchemaRow] = {}
    for page in leaves:
        found.schema_pages.add(page)
        data = pf.page(page)
        for cell in found.reader.cells(pages.parse_btree(data, page, pf.usable), data):
            row = _schema_row(cell)
            if row and (row.name not in rows or _root_fits(found, row)):
                rows[row.name] = row
    found.schema = list(rows.values())


def _leaves(found: Scan, wanted) -> list[int]:
    return [p for p in range(1, found.pf.page_count + 1)
            if found.kind[p] == pages.TABLE_LEAF and wanted(p)]


def _looks_like_schema(found: Scan, page: int) -> bool:
    data = found.pf.page(page)
    node = pages.parse_btree(data, page, found.pf.usable)
    for cell in found.reader.cells(node, data):
        return _schema_row(cell) is not None
    return False


def _schema_row(cell: pages.Cell | None) -> SchemaRow | None:
    if cell is None or not cell.complete or len(cell.values) != 5:
        return None
    kind, name, tbl, root, sql = cell.values
    if kind not in SCHEMA_TYPES or not isinstance(name, str) or not isinstance(tbl, str) \
            or not isinstance(root, int) or not (sql is None or isinstance(sql, str)):
        return None
    if sql is not None and not sql.upper().startswith("CREATE"):
        return None
    return SchemaRow(kind, name, tbl, root, sql)


def _root_fits(found: Scan, row: SchemaRow) -> bool:
    return found.whole(row.rootpage, table=row.type == "table")


@dataclass
class Salvaged:
    """What the second pass put where, per table."""

    copied: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)  # rows of the table kept in lost_and_found
    bad_cells: Counter = field(default_factory=Counter)  # cells that could not be read at all
    unplaced: int = 0  # rows in lost_and_found whose table is unknown
    groups: dict = field(default_factory=lambda: defaultdict(Counter))  # orphan root -> signatures
    sequences: list = field(default_factory=list)


class Writer:
    """Inserts salvaged rows into the fresh database; what it refuses goes to lost_and_found."""

    def __init__(self, fresh: apsw.Connection, shapes: dict[str, Shape]):
        self.fresh = fresh
        self.shapes = shapes
        self.width = 0
        self._statements: dict[tuple[str, int], str] = {}
        fresh.execute(f"CREATE TABLE IF NOT EXISTS {LOST_AND_FOUND} (id INTEGER PRIMARY KEY, "
                      "guess TEXT, reason TEXT, page INTEGER, cell INTEGER, tree INTEGER, "
                      "original_rowid INTEGER, nfield INTEGER)")

    def insert(self, table: str, rowid: int, values: list) -> str | None:
        """None if the row went in, else why not."""
        try:
            self.fresh.execute(self._sql(table, values), (rowid, *self.shapes[table].row(rowid, values)))
            return None
        except apsw.ConstraintError as err:
            return f"refused by {table}: {err}"
        except apsw.Error as err:
            return f"{table}: {err}"

    def insert_rows(self, table: str, rows: list[tuple[int, list]]) -> bool:
        """(rowid, values) rows all in one go (the common case); False: none went in."""
        shape = self.shapes[table]
        if not rows or len({len(values) for _, values in rows}) != 1 \
                or any(isinstance(v, pages.RawText) for _, values in rows for v in values):
            return False  # one at a time: text that is not UTF-8 needs its own statement
        try:
            with self.fresh:  # a savepoint: all or none
                self.fresh.executemany(self._sql(table, rows[0][1]),
                                       [(rowid, *shape.row(rowid, values)) for rowid, values in rows])
            return True
        except apsw.Error:
            return False

    def _sql(self, table: str, values: list) -> str:
        key = (table, len(values), *(isinstance(v, pages.RawText) for v in values))
        if key not in self._statements:
            cols = ", ".join(["rowid", *map(quote, self.shapes[table].columns[:len(values)])])
            self._statements[key] = (f"INSERT INTO {quote(table)} ({cols}) VALUES "
                                     f"({placeholders(values, first=1)})")
        return self._statements[key]

    def keep(self, cell: pages.Cell, tree: int, guess: str | None, reason: str) -> None:
        values = cell.values
        while self.width < len(values):
            self.fresh.execute(f"ALTER TABLE {LOST_AND_FOUND} ADD COLUMN c{self.width}")
            self.width += 1
        cols = ", ".join(f"c{i}" for i in range(len(values)))
        self.fresh.execute(
            f"INSERT INTO {LOST_AND_FOUND} (guess, reason, page, cell, tree, original_rowid, nfield"
            f"{', ' if values else ''}{cols}) VALUES ({placeholders(values, first=7)})",
            (guess, reason, cell.page, cell.index, tree, cell.rowid, len(values), *values))


def copy_rows(found: Scan, writer: Writer, tables: dict[int, str], skip: set[str],
              progress=None) -> Salvaged:
    """Second pass: every table leaf's rows into its table, orphans into lost_and_found."""
    out = Salvaged()
    pf, n = found.pf, found.pf.page_count
    for number in range(1, n + 1):
        if progress and number % 4096 == 0:
            progress(n + number, 2 * n)
        if found.kind[number] != pages.TABLE_LEAF or number in found.schema_pages:
            continue
        root = found.root_of(number)
        table = tables.get(root)
        if table in skip:
            continue
        data = pf.page(number)
        cells = list(found.reader.cells(pages.parse_btree(data, number, pf.usable), data))
        if cells and table in writer.shapes and None not in cells \
                and all(c.complete for c in cells) \
                and writer.insert_rows(table, [(c.rowid, c.values) for c in cells]):
            out.copied[table] += len(cells)
            continue
        for cell in cells:
            if cell is None:
                out.bad_cells[table] += 1
            elif table == "sqlite_sequence":
                out.sequences.append(cell.values)
            elif table is None:
                writer.keep(cell, root, None, "orphan")
                out.groups[root][signature(cell.values)] += 1
            else:
                _place(writer, out, table, cell, root)
    return out


def _place(writer: Writer, out: Salvaged, table: str, cell: pages.Cell, root: int) -> None:
    shape = writer.shapes.get(table)
    if shape is None:
        reason = "its table could not be created"
    elif not cell.complete:
        reason = "cut short: a page of its overflow chain is damaged"
    elif not shape.fits(signature(cell.values)) and len(cell.values) > len(shape.columns):
        reason = f"more values than {table} has columns"
    else:
        reason = writer.insert(table, cell.rowid, cell.values)
    if reason is None:
        out.copied[table] += 1
    else:
        writer.keep(cell, root, table, reason)
        out.kept[table] += 1


def place_orphans(writer: Writer, out: Salvaged, candidates: list[str]) -> dict[int, str]:
    """Each orphan group into the one damaged table its rows fit; returns group -> table."""
    placed = {}
    shapes = [writer.shapes[t] for t in candidates if t in writer.shapes]
    for root, signatures in out.groups.items():
        total = sum(signatures.values())
        fit = sorted(((sum(c for s, c in signatures.items() if shape.fits(s)), shape.name)
                      for shape in shapes), reverse=True)
        if not fit or fit[0][0] < FIT_SHARE * total:
            continue
        tied = [name for count, name in fit if count == fit[0][0]]
        table = tied[0] if len(tied) == 1 else _by_foreign_keys(writer, root, tied)
        if table is None:
            continue
        placed[root] = table
        _move_group(writer, out, root, table)
    out.unplaced = writer.fresh.execute(
        f"SELECT count(*) FROM {LOST_AND_FOUND} WHERE guess IS NULL").fetchone()[0]
    return placed


def _by_foreign_keys(writer: Writer, root: int, tied: list[str]) -> str | None:
    """Of tables the group fits equally, the one whose foreign keys its rows satisfy most
    (a parent row exists for each non-NULL key); None if that does not single one out."""
    fresh = writer.fresh
    scores = []
    for table in tied:
        shape, score = writer.shapes[table], 0
        for _, _, parent, column, to, *_ in fresh.execute(f"PRAGMA foreign_key_list({quote(table)})"):
            if column not in shape.columns or to is None or shape.columns.index(column) >= writer.width:
                continue
            c = f"c{shape.columns.index(column)}"
            score += fresh.execute(
                f"SELECT count(*) FROM {LOST_AND_FOUND} WHERE tree = ? AND guess IS NULL AND {c} IN "
                f"(SELECT {quote(to)} FROM {quote(parent)})", (root,)).fetchone()[0]
        scores.append((score, table))
    scores.sort(reverse=True)
    if scores[0][0] and scores[0][0] > scores[1][0]:
        return scores[0][1]
    return None


def _move_group(writer: Writer, out: Salvaged, root: int, table: str, batch: int = 1000) -> None:
    """The group's rows from lost_and_found into `table`, a batch at a time (memory stays flat)."""
    fresh, shape, last = writer.fresh, writer.shapes[table], 0
    while True:
        values = ", ".join(stored(f"c{i}") for i in range(writer.width)) or "NULL"
        rows = fresh.execute(f"SELECT id, original_rowid, nfield, {values} FROM {LOST_AND_FOUND} "
                             "WHERE tree = ? AND guess IS NULL AND id > ? ORDER BY id LIMIT ?",
                             (root, last, batch)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        misfit = f"its page's other rows are {table}'s; this one does not fit"
        good, bad = [], []
        for key, rowid, nfield, values in ((r[0], r[1], r[2], [as_stored(*r[i:i + 2])
                                            for i in range(3, 3 + 2 * r[2], 2)]) for r in rows):
            (good if shape.fits(signature(values)) else bad).append((key, rowid, values))
        fresh.executemany(f"UPDATE {LOST_AND_FOUND} SET guess = ?, reason = ? WHERE id = ?",
                          [(table, misfit, key) for key, _, _ in bad])
        out.kept[table] += len(bad)
        if writer.insert_rows(table, [(rowid, values) for _, rowid, values in good]):
            moved = good
        else:
            moved = [g for g in good if _insert_or_keep(writer, out, table, *g)]
        fresh.executemany(f"DELETE FROM {LOST_AND_FOUND} WHERE id = ?", [(key,) for key, _, _ in moved])
        out.copied[table] += len(moved)


def _insert_or_keep(writer: Writer, out: Salvaged, table: str, key: int, rowid: int, values: list) -> bool:
    reason = writer.insert(table, rowid, values)
    if reason is not None:
        writer.fresh.execute(f"UPDATE {LOST_AND_FOUND} SET guess = ?, reason = ? WHERE id = ?",
                             (table, reason, key))
        out.kept[table] += 1
    return reason is None


def index_rowids(found: Scan, index_root: int, unread: list):
    """The rowids an index lists (the last value of each entry read); each entry that cannot
    be read is appended to `unread`."""
    for cell in found.tree_cells(index_root):
        if cell is None or not cell.complete or not cell.values or type(cell.values[-1]) is not int:
            unread.append(cell)
        else:
            yield cell.values[-1]


def bad_children(found: Scan, root: int) -> list[tuple[int, int]]:
    """(interior page, child) where a table tree points at a page that is not its own."""
    bad = []
    for page in found.broken:
        if found.root_of(page) != root:
            continue
        data = found.pf.page(page)
        node = pages.parse_btree(data, page, found.pf.usable)
        with contextlib.suppress(pages.Damaged):
            for child, _ in found.reader.children(node, data):
                if not 2 <= child <= found.pf.page_count or found.parent[child] != page:
                    bad.append((page, child))
    return bad
