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

from .. import engines


@dataclass
class SchemaCheck:
    file: str
    matches: bool
    diff: str  # unified diff, FILE -> what the migrations produce; empty when they match


def schema_sql(engine: str, migrations, server=None) -> str:
    """The schema text for engine; PostgreSQL's needs a server for its scratch database."""
    return engines.of(engine).schema_sql(migrations, server)


def check(current: str, path: Path) -> SchemaCheck:
    """Compare the committed schema file with what the migrations produce."""
    committed = path.read_text(encoding="utf-8")
    lines = difflib.unified_diff(committed.splitlines(keepends=True),
                                 current.splitlines(keepends=True),
                                 fromfile=str(path), tofile="migrations")
    text = "".join(lines)
    return SchemaCheck(str(path), not text, text)
