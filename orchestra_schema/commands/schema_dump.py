"""`orchestra-schema schema`: the schema the migrations produce, as reviewable SQL.

The engine's own text, in a fixed order (each table, then its indexes and
triggers, sorted by name; views last), no timestamps: committed next to the
SQL, a diff in review shows exactly what a migration changes. Neither the
sqlite3 shell nor pg_dump is needed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..engines.sqlite.database import Database
from ..engines.runner import run_forward
from ..errors import UsageError

SQLITE_HEADER = ("-- The schema the SQLite migrations produce: `orchestra-schema schema`.\n"
                 "-- Generated; do not edit. CI checks it with `orchestra-schema schema --check`.\n")


@dataclass
class SchemaCheck:
    file: str
    matches: bool
    diff: str  # unified diff, FILE -> what the migrations produce; empty when they match


def schema_sql(engine: str, migrations, server: str | None = None) -> str:
    """The schema text for engine; PostgreSQL's needs a server for its scratch database."""
    if engine == "postgresql":
        from ..engines.postgresql import catalog as pg_schema
        if not server:
            raise UsageError("the PostgreSQL schema is read from a scratch database on a server; "
                             "give --database postgresql://USER@HOST/DB")
        return pg_schema.schema_sql(server, migrations)
    return sqlite_schema(migrations)


def sqlite_schema(migrations) -> str:
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


def check(current: str, path: Path) -> SchemaCheck:
    """Compare the committed schema file with what the migrations produce."""
    committed = path.read_text(encoding="utf-8")
    lines = difflib.unified_diff(committed.splitlines(keepends=True),
                                 current.splitlines(keepends=True),
                                 fromfile=str(path), tofile="migrations")
    text = "".join(lines)
    return SchemaCheck(str(path), not text, text)
