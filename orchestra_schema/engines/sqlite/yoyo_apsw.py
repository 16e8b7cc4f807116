"""yoyo's side of the SQLite driver: its backend on our apsw connection, its history rows.

Kept apart from sqlite.py so that the commands that only read (status, backup)
never import yoyo; the driver imports this when a migration's transaction begins.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import apsw
from yoyo.backends.base import DatabaseBackend
from yoyo.migrations import default_migration_table

from .database import Database
from ..yoyo_history import YoyoRef, log_data  # noqa: F401 (YoyoRef: sqlite.py's)


class _ApswDriver:
    """The slice of a DB-API module that yoyo's backend asks for."""

    DatabaseError = apsw.Error
    paramstyle = "named"


class ApswBackend(DatabaseBackend):
    """yoyo's SQLite backend, but on an existing apsw connection.

    It keeps yoyo's history tables and SQL, so stock `yoyo list` reads them.
    """

    list_tables_sql = "SELECT name FROM sqlite_schema WHERE type = 'table'"
    _driver = _ApswDriver

    def __init__(self, db: Database):
        self.uri = db.path
        self.db = db
        self.DatabaseError = apsw.Error
        self._connection = db.connection
        self.migration_table = default_migration_table
        self.has_transactional_ddl = True
        # Our own transaction already holds the write lock; yoyo's upgrade
        # of its tables must not commit on its own.
        self._internal_schema_updated = True

    def execute(self, sql, params=None):
        # apsw binds no datetimes; yoyo's sqlite backend stores them ISO 8601.
        params = {k: v.isoformat() if isinstance(v, datetime) else v
                  for k, v in (params or {}).items()}
        return self._connection.execute(sql, params)

    def list_tables(self, **kwargs):
        return [row[0] for row in self._connection.execute(self.list_tables_sql)]

    def begin(self):
        self._in_transaction = True
        self._connection.execute("BEGIN IMMEDIATE")

    def commit(self):
        self._connection.execute("COMMIT")
        self._in_transaction = False

    def rollback(self):
        if not self._connection.get_autocommit():
            self._connection.execute("ROLLBACK")
        self._in_transaction = False

    @contextlib.contextmanager
    def lock(self, timeout=10):
        # SQLite's write lock (BEGIN IMMEDIATE) is the lock; yoyo's lock row
        # would survive a kill -9 and block every later run.
        yield

    def get_log_data(self, migration=None, operation="apply"):
        return log_data(migration, operation)
