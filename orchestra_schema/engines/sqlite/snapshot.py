"""SQLite's schema, read into the engine-neutral model (schema.py) from its PRAGMAs."""

from __future__ import annotations

import re

from ...schema import Column, ForeignKey, Index, Schema, Table
from .database import Database, quote


def snapshot(db: Database) -> Schema:
    """The schema of db's main database, sqlite_ internals left out."""
    schema = Schema()
    listing = {name: (wr, strict) for _, name, kind, _, wr, strict
               in db.rows("PRAGMA main.table_list") if kind == "table"}
    for name, (wr, strict) in sorted(listing.items()):
        if not name.startswith("sqlite_"):
            schema.tables[name] = _table(db, name, bool(wr), bool(strict))
    for kind, name, tbl, sql in db.rows(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema "
            "WHERE type IN ('view', 'trigger') ORDER BY name"):
        schema.others[name] = (kind, _normalize_sql(sql), tbl)
    return schema


def _table(db: Database, name: str, without_rowid: bool, strict: bool) -> Table:
    q = quote(name)
    columns = [Column(n, (t or "").upper(), bool(nn), d, pk, hidden)
               for _, n, t, nn, d, pk, hidden in db.rows(f"PRAGMA table_xinfo({q})")]
    indexes = {}
    for _, iname, unique, origin, partial in db.rows(f"PRAGMA index_list({q})"):
        keys = tuple((c, bool(desc), coll) for _, _, c, desc, coll, key
                     in db.rows(f"PRAGMA index_xinfo({quote(iname)})") if key)
        indexes[iname] = Index(iname, bool(unique), origin, bool(partial), keys)
    groups: dict[int, list] = {}
    for fid, _, parent, frm, to, on_update, on_delete, match in db.rows(
            f"PRAGMA foreign_key_list({q})"):
        groups.setdefault(fid, []).append((parent, frm, to, on_update, on_delete, match))
    fks = frozenset(
        ForeignKey(tuple(r[1] for r in rows), rows[0][0], tuple(r[2] for r in rows),
                   rows[0][3], rows[0][4], rows[0][5])
        for rows in groups.values()
    )
    return Table(name, without_rowid, strict, columns, indexes, fks)


def _normalize_sql(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()
