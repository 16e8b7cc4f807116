"""The SQLite driver: yoyo's backend on apsw, one BEGIN IMMEDIATE transaction per migration.

Stock yoyo runs a migration's steps on a copy of the connection and records the
history afterwards in separate transactions, so a kill in between leaves the
schema ahead of the history. Here each migration runs in one BEGIN IMMEDIATE
transaction that also writes yoyo's history rows and our checksums.

The write lock that keeps two runs apart is SQLite's own (a POSIX lock on the
database file), so the kernel releases it when a process dies; a second run
waits up to the busy timeout and then fails with Busy (exit 3).
"""

from __future__ import annotations

import contextlib
from dataclasses import astuple
from datetime import datetime, timezone
from pathlib import Path

import apsw

from .applied import applied_migrations
from .database import Database, database_error, quote, translated
from ...errors import Busy, MigrationFailed
from .snapshot import snapshot
from ..base import (CHECKSUM_TABLE, CREATE_CHECKSUM_TABLE, CREATE_PROGRESS_TABLE, PROGRESS_TABLE,
                    UNDONE, AppliedRecord, Driver, Integrity, Progress)

EF_TABLE = "__EFMigrationsHistory"


def now_utc() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


class ForeignKeyViolation(MigrationFailed):
    pass


_WRITES = {apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE,
           apsw.SQLITE_CREATE_TABLE, apsw.SQLITE_DROP_TABLE}


class SqliteDriver(Driver):
    engine = "sqlite"
    Error = apsw.Error
    busy_errors = (apsw.BusyError, apsw.LockedError)
    unavailable_errors = (apsw.ReadOnlyError,)  # as for a statement: the file, not the SQL

    def __init__(self, db: Database):
        self.db = db
        self.display = str(db.path)
        self._backend = None  # yoyo's backend (yoyo_apsw), while a migration's transaction runs

    # ---- reading

    def table_names(self) -> set[str]:
        return self.db.table_names()

    def applied(self) -> dict[str, AppliedRecord]:
        return applied_migrations(self.db)

    def ef_rows(self):
        with translated(self.db.path, f"reading {EF_TABLE}"):
            if EF_TABLE not in self.db.table_names():
                return None
            return [tuple(r) for r in self.db.rows(
                f'SELECT "MigrationId", "ProductVersion" FROM {quote(EF_TABLE)} '
                'ORDER BY "MigrationId"')]

    @contextlib.contextmanager
    def read_transaction(self, doing="reading"):
        with translated(self.db.path, doing), self.db.read_transaction():
            yield self

    def row_count(self, table: str) -> int:
        return self.db.row_count(table)

    def tables_with_rows(self, tables) -> list[str]:
        existing = self.db.table_names()  # the authorizer also names views and missing tables
        return [t for t in tables
                if t in existing and self.db.scalar(f"SELECT EXISTS (SELECT 1 FROM {quote(t)})")]

    def tables_losing_rows(self, statements) -> list[str]:
        return self.tables_authorized(statements, {apsw.SQLITE_DROP_TABLE, apsw.SQLITE_DELETE})

    def dropped_tables(self, statements) -> list[str]:
        return self.tables_authorized(statements, {apsw.SQLITE_DROP_TABLE})

    def tables_authorized(self, statements, ops: set[int]) -> list[str]:
        """User tables that SQLite's authorizer reports for `ops` while compiling statements.

        EXPLAIN compiles a statement without running it, so this works read-only.
        """
        found: list[str] = []

        def authorizer(op, arg1, arg2, dbname, trigger):
            if op in ops and arg1 not in found and not arg1.startswith("sqlite_"):
                found.append(arg1)
            return apsw.SQLITE_OK

        with _authorizer(self.db, authorizer):
            for sql in statements:
                with contextlib.suppress(apsw.SQLError):  # e.g. DROP of a missing table
                    list(self.db.connection.execute(sql, explain=1))
        return found

    def snapshot(self):
        return snapshot(self.db)

    def yoyo_log(self, migration_id):
        if "_yoyo_log" not in self.db.table_names():
            return []
        return [tuple(r) for r in self.db.rows(
            "SELECT operation, created_at_utc FROM _yoyo_log WHERE migration_id = ? "
            "ORDER BY created_at_utc", (migration_id,))]

    def integrity(self, full, tables):
        from .checks import integrity_pragma, integrity_problems
        return Integrity(integrity_pragma(full), integrity_problems(self.db, full))

    def foreign_key_problems(self, tables):
        from .checks import foreign_key_problems
        return foreign_key_problems(self.db)

    def replay(self, migrations):
        from ..runner import Replay
        created = {}
        with Database.in_memory() as scratch:
            driver = SqliteDriver(scratch)
            for m in migrations:
                before = _tables_in_order(scratch)
                driver.run_statements(
                    m.id, driver.in_transaction_forms(m, "apply", plain=True), m.path)
                created[m.id] = [t for t in _tables_in_order(scratch) if t not in before]
            return Replay(snapshot(scratch), created)

    # ---- writing

    def in_transaction(self, doing, body):
        from yoyo import internalmigrations  # here: reading commands never import yoyo

        from .yoyo_apsw import ApswBackend
        backend = self._backend = ApswBackend(self.db)
        with translated(self.db.path, doing):
            backend.begin()
            try:
                if internalmigrations.needs_upgrading(backend):
                    internalmigrations.upgrade(backend)
                self.db.execute(CREATE_CHECKSUM_TABLE.format(CHECKSUM_TABLE))
                result = body()
                backend.commit()
                return result
            except BaseException as err:
                backend.rollback()
                _finish_rollback(self.db, err)
                raise
            finally:
                self._backend = None

    def run_statements(self, migration_id, statements, path, first=1, undone=UNDONE) -> set[str]:
        touched: set[str] = set()

        def authorizer(op, arg1, arg2, dbname, trigger):
            if op in _WRITES:
                touched.add(arg1)
            elif op == apsw.SQLITE_ALTER_TABLE:
                touched.add(arg2)
            return apsw.SQLITE_OK

        with _authorizer(self.db, authorizer):
            for number, sql in enumerate(statements, first):
                self._run_statement(migration_id, number, sql, path, undone)
        return {t for t in touched if t and not t.startswith("sqlite_")}

    def _run_statement(self, migration_id, number: int, sql: str, path, undone: str) -> None:
        try:
            self.db.execute(sql)
        except (apsw.BusyError, apsw.LockedError):
            raise
        except apsw.ReadOnlyError as err:  # the file, not the SQL: exit 6, not "fix the SQL"
            raise database_error(err, self.db.path, f"running {migration_id}") from err
        except apsw.Error as err:
            first_line = sql.strip().splitlines()[0][:80]
            raise MigrationFailed(
                f"{migration_id}: statement {number} in {path} failed: {err} [{first_line}]; {undone}"
            ) from err

    def progress(self):
        if PROGRESS_TABLE not in self.db.table_names():
            return {}
        return {r[0]: Progress(*r) for r in self.db.rows(
            f"SELECT migration_id, operation, done, total, sha256 FROM {PROGRESS_TABLE}")}

    def set_progress(self, migration_id, progress):
        """Inside the step's own transaction: SQLite runs every statement in one."""
        self.db.execute(CREATE_PROGRESS_TABLE.format(PROGRESS_TABLE))
        self.db.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE migration_id = ?", (migration_id,))
        if progress is not None:
            self.db.execute(f"INSERT INTO {PROGRESS_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                            (*astuple(progress), datetime.now(timezone.utc).isoformat(" ")))
        elif not self.db.rows(f"SELECT 1 FROM {PROGRESS_TABLE} LIMIT 1"):
            self.db.execute(f"DROP TABLE {PROGRESS_TABLE}")  # only while needed

    def check_constraints(self, migration_id, touched) -> None:
        """SQLite's schema-change procedure: commit only if foreign_key_check is clean.

        Only the tables the migration touched, and the tables whose foreign keys
        point at them, can have new violations; checking just those keeps a
        migration from scanning millions of unrelated log rows.
        """
        existing = self.db.table_names()
        suspects = (touched & existing) | self._children_of(touched, existing)
        violations = [v for t in sorted(suspects)
                      for v in self.db.rows(f"PRAGMA foreign_key_check({quote(t)})")]
        if violations:
            table, rowid, parent, _ = violations[0]
            raise ForeignKeyViolation(
                f"{migration_id}: would leave {len(violations)} foreign key violation(s), first in "
                f"{table} rowid {rowid} -> {parent}; the migration was rolled back; "
                "fix the data (PRAGMA foreign_key_check lists them) and run again"
            )

    def _children_of(self, parents: set[str], existing: set[str]) -> set[str]:
        return {t for t in existing
                if any(row[2] in parents
                       for row in self.db.rows(f"PRAGMA foreign_key_list({quote(t)})"))}

    @contextlib.contextmanager
    def explaining(self, migration_id):
        """After a rolled-back FK failure, say whether the violations were there before."""
        try:
            yield
        except ForeignKeyViolation:
            before = self.db.rows("PRAGMA foreign_key_check")
            if not before:
                raise
            table, rowid, parent, _ = before[0]
            raise MigrationFailed(
                f"{migration_id}: not run: the database already has {len(before)} foreign key "
                f"violation(s), first in {table} rowid {rowid} -> {parent}; "
                "fix them first (PRAGMA foreign_key_check lists them)"
            ) from None

    def record(self, migration, operation):
        from .yoyo_apsw import YoyoRef
        ref = YoyoRef(migration.id)
        self._backend.mark_one(ref, log=False)
        self._backend.log_migration(ref, operation)
        self.db.execute(
            f"INSERT INTO {CHECKSUM_TABLE} VALUES (?, ?, ?, ?, ?)",
            (ref.hash, migration.id, migration.forward_sha256, migration.rollback_sha256,
             now_utc()),
        )

    def unrecord(self, migration_id, operation):
        from .yoyo_apsw import YoyoRef
        ref = YoyoRef(migration_id)
        self._backend.unmark_one(ref, log=False)
        self._backend.log_migration(ref, operation)
        self.db.execute(f"DELETE FROM {CHECKSUM_TABLE} WHERE migration_hash = ?", (ref.hash,))

    def ef_create(self, ddl):
        self.db.execute(ddl.format(quote(EF_TABLE)))

    def ef_insert(self, migration_id, product_version):
        self.db.execute(f"INSERT INTO {quote(EF_TABLE)} VALUES (?, ?)",
                        (migration_id, product_version))

    def ef_delete(self, migration_id) -> bool:
        with translated(self.db.path, f"deleting {migration_id} from {EF_TABLE}"):
            self.db.execute(f'DELETE FROM {quote(EF_TABLE)} WHERE "MigrationId" = ?',
                            (migration_id,))
            return self.db.connection.changes() > 0

    def close(self):
        self.db.close()


_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def _finish_rollback(db: Database, err: BaseException) -> None:
    """Leave no hot journal behind a failed transaction, or name it in the error.

    After a full disk (or an I/O error) SQLite abandons the transaction by itself
    but leaves its -journal, and the file grown, for the next read to undo; a
    read on this connection does it now (it waits for other readers' locks).
    Busy, this run wrote nothing, and a journal there is another writer's.
    """
    journal = Path(f"{db.path}-journal")
    if isinstance(err, (Busy, apsw.BusyError, apsw.LockedError)) or not _hot(journal):
        return
    with contextlib.suppress(apsw.Error):
        db.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    if _hot(journal) and isinstance(err, Exception) and err.args:
        err.args = (f"{err.args[0]}; its journal {journal} is left behind: do not delete it "
                    "(it holds what undoes the change); the next open of the database rolls it "
                    "back: free space, then run `orchestra-schema status`", *err.args[1:])


def _hot(journal: Path) -> bool:
    """Does a rollback journal with a live header (not zeroed by a commit) lie there?"""
    try:
        with open(journal, "rb") as f:
            return f.read(len(_JOURNAL_MAGIC)) == _JOURNAL_MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def _authorizer(db: Database, callback):
    """SQLite's authorizer set to callback for the block, the previous one restored after."""
    previous = db.connection.authorizer
    db.connection.authorizer = callback
    try:
        yield
    finally:
        db.connection.authorizer = previous


def _tables_in_order(db: Database) -> list[str]:
    return [name for (name,) in db.rows(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid")]
