"""yoyo's side of the PostgreSQL driver: its backend on our psycopg connection.

Kept apart from postgresql.py so that the commands that only read (status, backup,
verify) never import yoyo; the driver imports this when a migration's transaction begins.
"""

from __future__ import annotations

import psycopg
from yoyo import internalmigrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.migrations import default_migration_table

from ..yoyo_history import YoyoRef, log_data  # noqa: F401 (YoyoRef: postgresql.py's)


class PsycopgBackend(PostgresqlPsycopgBackend):
    """yoyo's PostgreSQL backend on our open connection, inside our transaction: yoyo's
    tables and SQL, so stock `yoyo list` reads the history."""

    def __init__(self, connection: psycopg.Connection, schema: str):
        self._connection = connection
        self.schema = schema
        self.migration_table = default_migration_table
        self.has_transactional_ddl = True
        self._internal_schema_updated = True
        self._in_transaction = True  # ours: yoyo's own "transactions" become savepoints

    def list_tables(self, **kwargs):
        return [r[0] for r in self._connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.schema,))]

    def get_log_data(self, migration=None, operation="apply"):
        return log_data(migration, operation)


def upgrade_history_tables(backend: PsycopgBackend) -> None:
    """yoyo's own tables brought to its current layout, inside our transaction."""
    if internalmigrations.needs_upgrading(backend):
        internalmigrations.upgrade(backend)
