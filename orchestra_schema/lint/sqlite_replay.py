"""SQLite's scratch database for round-trip (in memory), and the rules that need
the schema before a file runs, which only the replay knows: rebuild-loses and
implicit-delete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import apsw

from ..engines.sqlite.database import Database
from ..engines.sqlite.snapshot import snapshot
from ..schema import Schema, Sides, Table, differences, render
from . import replay
from .findings import ERROR, WARNING, Finding, finding
from .sqlite_rules import dropped_table, not_transactional, rebuilds
from .sqltext import READ, SqlFile, tokens

_CASCADING = {"CASCADE", "SET NULL", "SET DEFAULT"}
_ROUND_TRIP = Sides(missing="missing", extra="left over", expected="before", found="after")


class SqliteScratch:
    """An in-memory database that runs statements as orchestra-schema runs a migration."""

    def __init__(self, db: Database):
        self.db = db

    def run(self, statements, hold: bool = False,
            each: bool = False) -> tuple[int, str] | None:
        """each (`-- transactional: false`) is run in one transaction too: the tool's
        transaction per statement differs only in what a failing statement leaves, and a
        failure ends the replay."""
        self.db.execute("BEGIN")
        for i, sql in enumerate(statements):
            READ["replayed"] += 1
            if not_transactional(sql):
                continue  # its own rule reports it; here it would only end the replay early
            try:
                self.db.execute(sql)
            except apsw.Error as err:
                self.db.execute("ROLLBACK")
                return i, str(err)
        if not hold:
            self.db.execute("COMMIT")
        return None

    def end(self, keep: bool) -> None:
        self.db.execute("COMMIT" if keep else "ROLLBACK")

    def snapshot(self) -> Taken:
        bodies = {name: _body(sql) for name, sql in self.db.rows(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql IS NOT NULL")}
        return Taken(snapshot(self.db), bodies)

    def state(self) -> bytes:
        """A digest of sqlite_schema's text and every table's rows (sqlite_sequence too: it
        picks the next AUTOINCREMENT id), each table read in its key order."""
        digest = hashlib.blake2b()
        tables = []
        for row in self.db.rows("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name"):
            digest.update(repr(row).encode())
            tables += [row[1]] if row[0] == "table" else []
        for name in tables:
            digest.update(repr(name).encode())
            quoted = name.replace('"', '""')
            for row in self.db.connection.execute(f'SELECT * FROM "{quoted}"'):
                digest.update(repr(row).encode())
        return digest.digest()

    def differences(self, before: Taken, after: Taken) -> list[str]:
        found = differences(before.schema, after.schema)
        named = {d.name for d in found if d.kind == "table"}
        return [render(d, _ROUND_TRIP) for d in found] + [
            f"table {name}: its definition differs (a CHECK, COLLATE or other constraint)"
            for name, body in before.bodies.items()
            if name in after.bodies and after.bodies[name] != body and name not in named]


@dataclass
class Taken:
    """The structure schema.py compares, and each table's definition (what it leaves out)."""

    schema: Schema
    bodies: dict[str, str]


def _body(create_sql: str) -> str:
    """CREATE TABLE's text from its column list on, spaces normalized: RENAME rewrites the name."""
    return " ".join(create_sql[create_sql.find("("):].split())


def check(migrations, files: dict[tuple[str, str], SqlFile],
          schema_only: bool = False) -> list[Finding]:
    with Database.in_memory() as db:
        return replay.check(SqliteScratch(db), migrations, files, _schema_rules, schema_only)


def _schema_rules(f: SqlFile, before: Taken, after: Taken) -> list[Finding]:
    b, a = before.schema, after.schema
    return _rebuild_loses(f, b, a) + _implicit_delete(f, b, a)


def _table(schema: Schema, name: str) -> Table | None:
    return next((t for n, t in schema.tables.items() if n.lower() == name.lower()), None)


def _drops(f: SqlFile):
    for st in f.statements:
        if st.word == "DROP" and (table := dropped_table(tokens(st.sql))):
            yield st, table


def _rebuild_loses(f: SqlFile, before: Schema, after: Schema) -> list[Finding]:
    """A rebuilt table must get back every index and trigger its old copy took with it."""
    out = []
    for r in rebuilds(f.statements):
        old, new = _table(before, r.table), _table(after, r.table)
        if old is None or new is None:
            continue
        shapes = {(ix.unique, ix.partial, ix.columns) for ix in new.indexes.values()}
        lost = [f"index {ix.name}" for ix in old.indexes.values()
                if ix.origin == "c" and ix.name not in new.indexes
                and (ix.unique, ix.partial, ix.columns) not in shapes]
        lost += [f"trigger {n}" for n, (kind, _, tbl) in sorted(before.others.items())
                 if kind == "trigger" and tbl.lower() == r.table.lower() and n not in after.others]
        lost += [f"the foreign key of {t.name} (RENAME pointed it at {r.dropped}, now dropped)"
                 for t in after.tables.values() for fk in t.foreign_keys
                 if fk.parent.lower() == r.dropped.lower() != r.table.lower()]
        if lost:
            out.append(finding(f, r.line, "rebuild-loses", ERROR,
                               f"the rebuild of {old.name} loses {', '.join(lost)}; create each "
                               "again on the new table (build it under a new name, copy, drop the "
                               "old table, rename the new one: SQLite's documented order)"))
    return out


def _implicit_delete(f: SqlFile, before: Schema, after: Schema) -> list[Finding]:
    """DROP TABLE deletes the rows first: ON DELETE CASCADE / SET NULL reach other tables."""
    out = []
    dropped = {name.lower() for _, name in _drops(f)}
    for st, name in _drops(f):
        children = sorted(
            f"{t.name} (ON DELETE {fk.on_delete})"
            for t in before.tables.values() if t.name.lower() not in dropped
            for fk in t.foreign_keys
            if fk.parent.lower() == name.lower() and fk.on_delete in _CASCADING)
        if not children:
            continue
        if _table(after, name) is not None:  # rebuilt: safe only with foreign keys off
            out.append(finding(
                f, st.line, "implicit-delete", WARNING,
                f"DROP TABLE {name} deletes its rows first; with foreign keys on (stock yoyo, "
                f"the sqlite3 shell) that reaches {', '.join(children)}; orchestra-schema runs "
                "migrations with foreign keys off, so run this file only with orchestra-schema"))
        else:
            out.append(finding(
                f, st.line, "implicit-delete", ERROR,
                f"DROP TABLE {name} deletes its rows first, which reaches {', '.join(children)} "
                "through their foreign keys (or leaves them dangling with foreign keys off); "
                "drop or rebuild those tables in this file too, or keep the table"))
    return out
