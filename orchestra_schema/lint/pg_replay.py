"""PostgreSQL's scratch for round-trip: a database created on the server of
--database for the run (from template0) and dropped afterwards; its schema is
read from the catalogs (pg_schema), so the finding names each object.
"""

from __future__ import annotations

from ..engines.postgresql import catalog as pg_schema
from . import replay
from .findings import Finding
from .sqlite_rules import not_transactional
from .sqltext import READ, SqlFile, tokens


class PgScratch:
    def __init__(self, conn):
        self.conn = conn

    def run(self, statements, hold: bool = False,
            each: bool = False) -> tuple[int, str] | None:
        kept = [(i, s) for i, s in enumerate(statements) if _replayed(s, each)]
        self.conn.commit()  # a snapshot's reading; autocommit needs no transaction open
        self.conn.autocommit = each  # each statement commits alone, as the tool runs the file
        try:
            failed = pg_schema.run(self.conn, [s for _, s in kept])
        finally:
            self.conn.autocommit = False
        return None if failed is None else (kept[failed[0]][0], failed[1])

    def snapshot(self) -> dict[str, str]:
        return pg_schema.objects(self.conn)

    def differences(self, before, after) -> list[str]:
        return pg_schema.differences(before, after)

    def state(self) -> None:
        return None  # not read here: the forward file always runs a second time (nothing held)

    def end(self, keep: bool) -> None:
        raise AssertionError("PgScratch never holds a transaction (state() is None)")


def _replayed(sql: str, each: bool) -> bool:
    """Statements the not-transactional rule reports are left out, as in SQLite's replay; in a
    file run statement by statement (each) CONCURRENTLY runs, as on the live database."""
    READ["replayed"] += 1
    concurrently = not each and "CONCURRENTLY" in sql.upper() and any(
        t.word == "CONCURRENTLY" for t in tokens(sql))
    return not (not_transactional(sql) or concurrently)


def check(server: str, migrations, files: dict[tuple[str, str], SqlFile],
          schema_only: bool = False) -> list[Finding]:
    with pg_schema.scratch_database(server) as conn:
        return replay.check(PgScratch(conn), migrations, files, None, schema_only)
