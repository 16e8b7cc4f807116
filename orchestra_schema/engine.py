"""yoyo's backend on apsw, and one transaction per migration including its history.

Stock yoyo runs a migration's steps on a copy of the connection and records the
history afterwards in separate transactions, so a kill in between leaves the
schema ahead of the history. Here each migration runs in one BEGIN IMMEDIATE
transaction that also writes yoyo's history rows and our checksums: a kill at
any instant leaves the database exactly before or after the migration.

The write lock that keeps two runs apart is SQLite's own (a POSIX lock on the
database file), so the kernel releases it when a process dies; a second run
waits up to the busy timeout and then fails with Busy (exit 3). A run plans
before it has the lock, so each migration's dependencies are checked again
under it: a run that finds the history changed under its plan stops (exit 3).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import apsw
from yoyo import internalmigrations
from yoyo.backends.base import DatabaseBackend
from yoyo.migrations import default_migration_table, get_migration_hash

from . import ef
from .database import Database, quote, translated
from .errors import Busy, MigrationFailed
from .migrations import MigrationFile
from .schema import Schema, snapshot

CHECKSUM_TABLE = "_orchestra_schema_checksum"
YOYO_TABLES = {default_migration_table, "_yoyo_log", "_yoyo_version", "yoyo_lock"}
HISTORY_TABLES = YOYO_TABLES | {CHECKSUM_TABLE}

CREATE_CHECKSUM_TABLE = f"""
CREATE TABLE IF NOT EXISTS {CHECKSUM_TABLE} (
    migration_hash VARCHAR(64) NOT NULL PRIMARY KEY,
    migration_id TEXT NOT NULL,
    forward_sha256 TEXT NOT NULL,
    rollback_sha256 TEXT,
    applied_at_utc TIMESTAMP NOT NULL
)"""


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
        # yoyo's own calls socket.getfqdn(), which can hang on DNS at 3 a.m.
        return {
            "id": str(uuid.uuid1()),
            "migration_id": migration.id if migration else None,
            "migration_hash": migration.hash if migration else None,
            "username": _username(),
            "hostname": socket.gethostname(),
            "created_at_utc": datetime.now(timezone.utc).replace(tzinfo=None),
            "operation": operation,
        }


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry for this uid in some containers
        return str(os.getuid())


@dataclass(frozen=True)
class _YoyoRef:
    """What yoyo's mark/unmark/log SQL needs of a migration."""

    id: str

    @property
    def hash(self) -> str:
        return get_migration_hash(self.id)


@dataclass(frozen=True)
class AppliedRecord:
    id: str
    applied_at: str | None
    forward_sha256: str | None
    rollback_sha256: str | None


def applied_migrations(db: Database) -> dict[str, AppliedRecord]:
    """yoyo's history (with our checksums where recorded), in applied order."""
    tables = db.table_names()
    if default_migration_table not in tables:
        return {}
    join = (f"LEFT JOIN {CHECKSUM_TABLE} c USING (migration_hash)"
            if CHECKSUM_TABLE in tables else "")
    sums = "c.forward_sha256, c.rollback_sha256" if join else "NULL, NULL"
    with translated(db.path, "reading the migration history"):
        rows = db.rows(
            f"SELECT m.migration_id, m.applied_at_utc, {sums} "
            f"FROM {default_migration_table} m {join} ORDER BY m.applied_at_utc"
        )
    return {r[0]: AppliedRecord(*r) for r in rows}


@contextlib.contextmanager
def write_transaction(db: Database, doing: str):
    """BEGIN IMMEDIATE ... COMMIT on db, yoyo's history tables ensured inside."""
    backend = ApswBackend(db)
    with translated(db.path, doing):
        backend.begin()
        try:
            if internalmigrations.needs_upgrading(backend):
                internalmigrations.upgrade(backend)
            db.execute(CREATE_CHECKSUM_TABLE)
            yield backend
            backend.commit()
        except BaseException as err:
            backend.rollback()
            _finish_rollback(db, err)
            raise


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


class ForeignKeyViolation(MigrationFailed):
    pass


class HistoryChanged(Busy):
    """Another run changed the history between this run's plan and its turn at the lock."""


def apply_one(db: Database, m: MigrationFile) -> bool:
    """Apply m and record it (and EF's history), atomically. False if it was already applied."""
    with _explaining_violations(db, m), write_transaction(db, f"applying {m.id}") as backend:
        applied = applied_migrations(db)
        if m.id in applied:
            return False  # another run applied it while we waited for the lock
        missing = [d for d in m.depends if d not in applied]
        if missing:
            raise HistoryChanged(
                f"{m.id}: not applied: {', '.join(missing)}, which it depends on, was rolled back "
                "meanwhile by another run; nothing more changed; run apply again")
        touched = _run_statements(db, m, m.statements, m.path)
        _record(db, backend, m, "apply")
        ef.keep_in_step(db, set(applied) | {m.id})
        _check_foreign_keys(db, m, touched)
    return True


def rollback_one(db: Database, m: MigrationFile, dependents=()) -> bool:
    """Run m's rollback file and remove its history (and EF's row), atomically.

    dependents: ids of the migrations that depend on m; none may be applied.
    """
    with _explaining_violations(db, m), write_transaction(db, f"rolling back {m.id}") as backend:
        applied = applied_migrations(db)
        if m.id not in applied:
            return False  # another run rolled it back while we waited
        on_top = [d for d in dependents if d in applied]
        if on_top:
            raise HistoryChanged(
                f"{m.id}: not rolled back: {', '.join(on_top)}, which depends on it, was applied "
                "meanwhile by another run; nothing more changed; run the rollback again")
        touched = _run_statements(db, m, m.rollback_statements, m.rollback_path)
        _unrecord(db, backend, m.id, "rollback")
        ef.keep_in_step(db, set(applied) - {m.id})
        _check_foreign_keys(db, m, touched)
    return True


def record_applied(db: Database, migrations, check=None) -> list[str]:
    """Record migrations as applied without running them (adopting a database
    whose schema they already describe), in one transaction; returns the ids recorded.

    check(db), if given, runs first under the write lock: raise to record nothing.
    """
    with write_transaction(db, "recording migrations as applied") as backend:
        if check:
            check(db)
        already, recorded = applied_migrations(db), []
        for m in migrations:
            if m.id not in already:
                _record(db, backend, m, "mark")  # yoyo's word for recorded, not run
                recorded.append(m.id)
        ef.keep_in_step(db, set(applied_migrations(db)))
    return recorded


def forget_applied(db: Database, migration_id: str) -> bool:
    """Remove one entry from yoyo's history and our checksums, schema untouched.

    False if the id was not in the history.
    """
    with write_transaction(db, f"forgetting {migration_id}") as backend:
        if migration_id not in applied_migrations(db):
            return False
        _unrecord(db, backend, migration_id, "unmark")
    return True


def _record(db: Database, backend: ApswBackend, m: MigrationFile, operation: str) -> None:
    """yoyo's history row and log entry, and our checksums of both files."""
    ref = _YoyoRef(m.id)
    backend.mark_one(ref, log=False)
    backend.log_migration(ref, operation)
    db.execute(
        f"INSERT INTO {CHECKSUM_TABLE} VALUES (?, ?, ?, ?, ?)",
        (ref.hash, m.id, m.forward_sha256, m.rollback_sha256, _now()),
    )


def _unrecord(db: Database, backend: ApswBackend, migration_id: str, operation: str) -> None:
    ref = _YoyoRef(migration_id)
    backend.unmark_one(ref, log=False)
    backend.log_migration(ref, operation)
    db.execute(f"DELETE FROM {CHECKSUM_TABLE} WHERE migration_hash = ?", (ref.hash,))


_WRITES = {apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE,
           apsw.SQLITE_CREATE_TABLE, apsw.SQLITE_DROP_TABLE}


def _run_statements(db: Database, m: MigrationFile, statements, path) -> set[str]:
    """Run the statements; return the tables they wrote, created, altered or dropped."""
    touched: set[str] = set()

    def authorizer(op, arg1, arg2, dbname, trigger):
        if op in _WRITES:
            touched.add(arg1)
        elif op == apsw.SQLITE_ALTER_TABLE:
            touched.add(arg2)
        return apsw.SQLITE_OK

    with _authorizer(db, authorizer):
        for number, sql in enumerate(statements, 1):
            _run_statement(db, m, number, sql, path)
    return {t for t in touched if t and not t.startswith("sqlite_")}


@contextlib.contextmanager
def _authorizer(db: Database, callback):
    """SQLite's authorizer set to callback for the block, the previous one restored after."""
    previous = db.connection.authorizer
    db.connection.authorizer = callback
    try:
        yield
    finally:
        db.connection.authorizer = previous


def _run_statement(db: Database, m: MigrationFile, number: int, sql: str, path) -> None:
    try:
        db.execute(sql)
    except (apsw.BusyError, apsw.LockedError):
        raise
    except apsw.Error as err:
        first_line = sql.strip().splitlines()[0][:80]
        raise MigrationFailed(
            f"{m.id}: statement {number} in {path} failed: {err} [{first_line}]; "
            "the migration was rolled back and nothing changed; fix the SQL and run again"
        ) from err


def _check_foreign_keys(db: Database, m: MigrationFile, touched: set[str]) -> None:
    """SQLite's schema-change procedure: commit only if foreign_key_check is clean.

    Only the tables the migration touched, and the tables whose foreign keys
    point at them, can have new violations; checking just those keeps a
    migration from scanning millions of unrelated log rows.
    """
    existing = db.table_names()
    suspects = (touched & existing) | _children_of(db, touched, existing)
    violations = [v for t in sorted(suspects)
                  for v in db.rows(f"PRAGMA foreign_key_check({quote(t)})")]
    if violations:
        table, rowid, parent, _ = violations[0]
        raise ForeignKeyViolation(
            f"{m.id}: would leave {len(violations)} foreign key violation(s), first in "
            f"{table} rowid {rowid} -> {parent}; the migration was rolled back; "
            "fix the data (PRAGMA foreign_key_check lists them) and run again"
        )


def _children_of(db: Database, parents: set[str], existing: set[str]) -> set[str]:
    return {t for t in existing
            if any(row[2] in parents for row in db.rows(f"PRAGMA foreign_key_list({quote(t)})"))}


@contextlib.contextmanager
def _explaining_violations(db: Database, m: MigrationFile):
    """After a rolled-back FK failure, say whether the violations were there before."""
    try:
        yield
    except ForeignKeyViolation:
        before = db.rows("PRAGMA foreign_key_check")
        if not before:
            raise
        table, rowid, parent, _ = before[0]
        raise MigrationFailed(
            f"{m.id}: not run: the database already has {len(before)} foreign key "
            f"violation(s), first in {table} rowid {rowid} -> {parent}; "
            "fix them first (PRAGMA foreign_key_check lists them)"
        ) from None


def _now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


def count_rows(db: Database, tables) -> dict[str, int]:
    existing = db.table_names()
    return {t: db.row_count(t) for t in tables if t in existing}


def dropped_tables(db: Database, statements) -> list[str]:
    """Tables the statements would drop."""
    return _tables_authorized(db, statements, {apsw.SQLITE_DROP_TABLE})


def tables_losing_rows(db: Database, statements) -> list[str]:
    """Tables the statements would drop or delete rows from (DROP TABLE, DELETE)."""
    return _tables_authorized(db, statements, {apsw.SQLITE_DROP_TABLE, apsw.SQLITE_DELETE})


def _tables_authorized(db: Database, statements, ops: set[int]) -> list[str]:
    """User tables that SQLite's authorizer reports for `ops` while compiling statements.

    EXPLAIN compiles a statement without running it, so this works read-only.
    """
    found: list[str] = []

    def authorizer(op, arg1, arg2, dbname, trigger):
        if op in ops and arg1 not in found and not arg1.startswith("sqlite_"):
            found.append(arg1)
        return apsw.SQLITE_OK

    with _authorizer(db, authorizer):
        for sql in statements:
            with contextlib.suppress(apsw.SQLError):  # e.g. DROP of a missing table
                list(db.connection.execute(sql, explain=1))
    return found


@dataclass
class Replay:
    schema: Schema  # what the migrations produce on an empty database
    created: dict[str, list[str]]  # migration id -> tables it creates, in order


def run_forward(db: Database, m: MigrationFile) -> None:
    """m's forward statements on db (a scratch database), without history or checks.

    Raises MigrationFailed naming the statement that fails.
    """
    _run_statements(db, m, m.statements, m.path)


def replay(migrations) -> Replay:
    """Run the migrations, in order, on an empty in-memory database.

    Raises MigrationFailed naming the statement that fails.
    """
    created = {}
    with Database.in_memory() as scratch:
        for m in migrations:
            before = _tables_in_order(scratch)
            run_forward(scratch, m)
            created[m.id] = [t for t in _tables_in_order(scratch) if t not in before]
        return Replay(snapshot(scratch), created)


def _tables_in_order(db: Database) -> list[str]:
    return [name for (name,) in db.rows(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid")]
