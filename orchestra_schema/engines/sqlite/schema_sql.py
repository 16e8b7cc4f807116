"""The schema SQLite's migrations produce, as sqlite_schema holds it, in a fixed order."""

from __future__ import annotations

from ..runner import run_forward
from .database import Database

SQLITE_HEADER = ("-- The schema the SQLite migrations produce: `orchestra-schema schema`.\n"
                 "-- Generated; do not edit. CI checks it with `orchestra-schema schema --check`.\n")


def schema_sql(migrations) -> str:
    """sqlite_schema.sql of a scratch in-memory database built from the migrations."""
    with Database.in_memory() as db:
        for m in migrations:
            run_forward(db, m)
        rows = db.rows("SELECT type, name, tbl_name, sql FROM sqlite_schema "
                       "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")
    return SQLITE_HEADER + "".join(f"\n{sql.strip()};\n" for sql in _in_order(rows))


def _in_order(rows) -> list[str]:
    """Tables by name, each followed by its indexes, then its triggers, by name; views last."""
    parents = sorted((kind == "view", name, sql) for kind, name, _, sql in rows
                     if kind in ("table", "view"))
    out = []
    for _, parent, sql in parents:
        out.append(sql)
        out += [s for _, _, s in sorted((kind == "trigger", name, s) for kind, name, tbl, s in rows
                                        if kind in ("index", "trigger") and tbl == parent)]
    return out
