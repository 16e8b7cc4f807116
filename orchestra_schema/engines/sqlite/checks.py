"""SQLite's own checks of a database: PRAGMA quick_check/integrity_check (where the damage
is, table by table, when the check itself stops) and foreign_key_check."""

from __future__ import annotations

import apsw

from ...errors import DatabaseCorrupt
from ...files.paths import require_sqlite
from . import files as sqlitefile
from .copying import integrity_pragma
from .database import Database, quote

MAX_LINES = 10  # of one PRAGMA's complaints; the rest are counted


def refuse_unreadable(path) -> None:
    """verify's and checklist's first step: an empty file, or one shorter than its header
    says (its last pages lost), would pass every check; named, not half-checked."""
    require_sqlite(path)
    cut = sqlitefile.truncation(path)
    if cut:
        raise DatabaseCorrupt(f"{path}: {cut}: its last pages are missing; run "
                              "`orchestra-schema recover` (or restore a backup)", cut)


def integrity_problems(db: Database, full: bool = False) -> list[str]:
    pragma = integrity_pragma(full)
    try:
        lines = [row[0] for row in db.rows(f"PRAGMA {pragma}")]
    except apsw.CorruptError as err:  # some damage stops the check instead of being listed
        return [f"PRAGMA {pragma} stopped: {err}"] + _damaged_tables(db, pragma)
    if lines == ["ok"]:
        return []
    more = [f"... and {len(lines) - MAX_LINES} more"] if len(lines) > MAX_LINES else []
    return [f"PRAGMA {pragma}: {line}" for line in lines[:MAX_LINES]] + more


def _damaged_tables(db: Database, pragma: str) -> list[str]:
    """Where the damage is: the same check, one table (with its indexes) at a time."""
    out = []
    for table in sorted(db.table_names()):
        try:
            lines = [row[0] for row in db.rows(f"PRAGMA {pragma}({quote(table)})")]
        except apsw.CorruptError as err:
            lines = [str(err)]
        if lines != ["ok"]:
            out.append(f"table {table} is damaged ({lines[0]}); restore it from a backup")
    return out


def foreign_key_problems(db: Database) -> list[str]:
    counts: dict[tuple[str, str], list] = {}
    for table, rowid, parent, _ in db.rows("PRAGMA foreign_key_check"):
        counts.setdefault((table, parent), []).append(rowid)
    return [f"{table}: {len(rowids)} row(s) reference missing {parent} rows "
            f"(first rowid {rowids[0]})" for (table, parent), rowids in counts.items()]
