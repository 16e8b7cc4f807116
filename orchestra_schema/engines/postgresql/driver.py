"""The PostgreSQL driver: psycopg 3, yoyo's PostgreSQL history tables, never stalling the app.

- One transaction per migration: PostgreSQL's DDL is transactional, so the statements,
  yoyo's rows, our checksums and EF's row commit together or not at all; a client killed
  mid-way leaves nothing (the server rolls back a transaction whose COMMIT never came).
- Runs are kept apart by a session advisory lock, which the server releases when the
  connection dies (kill -9 included): never a lock row that outlives its run.
- Every migration transaction sets a short lock_timeout. A DDL statement waiting for a
  table lock makes every later query on that table queue behind it; with the timeout the
  app waits at most that long, the transaction is rolled back, and it is tried again
  after a pause, until --timeout; then exit 3 with nothing changed.
- Everything is read and written in the connection's current_schema (public by default);
  other schemas (hangfire) are never looked at.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import time
from dataclasses import astuple
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from ...errors import Busy, DatabaseUnavailable, MigrationFailed
from ..base import (CHECKSUM_TABLE, CREATE_CHECKSUM_TABLE, CREATE_PROGRESS_TABLE, MIGRATION_TABLE,
                    PROGRESS_TABLE, UNDONE, AppliedRecord, Driver, Progress)

if TYPE_CHECKING:
    from ...schema import Schema

EF_TABLE = "__EFMigrationsHistory"
LOCK_TIMEOUT_MS = 200  # how long the app's queries may queue behind one of our DDL statements
RETRY_PAUSE = 0.3  # seconds between attempts: the app's queued queries run meanwhile
LOCK_ERRORS = (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected)
# How often the server looks for our process while a statement runs: a run killed mid-way
# (a long CREATE INDEX CONCURRENTLY) stops its statement and frees its locks at once, not
# when the statement would have ended.
CHECK_INTERVAL_MS = 100


def advisory_key(schema: str) -> int:
    """The advisory lock's key: one per schema of one database, the same for every run."""
    digest = hashlib.sha256(f"orchestra-schema {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgDriver(Driver):
    engine = "postgresql"
    Error = psycopg.Error
    busy_errors = LOCK_ERRORS
    unavailable_errors = (pgerrors.ReadOnlySqlTransaction,)  # a standby: exit 6

    def __init__(self, conn: psycopg.Connection, display: str, timeout: float, schema: str):
        self.conn = conn
        self.display = display
        self.timeout = timeout
        self.schema = schema
        self._locked = False
        self._backend = None  # yoyo's backend (yoyo_pg), while a migration's transaction runs

    @classmethod
    def connect(cls, address, *, timeout: float, readonly: bool = False) -> "PgDriver":
        params = address.connect_kwargs()
        # libpq counts connect_timeout in whole seconds, and takes 2 for anything less.
        params.setdefault("connect_timeout", str(max(2, math.ceil(timeout))))
        params.setdefault("application_name", "orchestra-schema")
        try:
            conn = psycopg.connect(autocommit=True, **params)
        except psycopg.Error as err:
            raise DatabaseUnavailable(connect_error(err, address)) from None
        try:
            if readonly:
                conn.execute("SET default_transaction_read_only = on")
            if conn.info.server_version >= 140000:  # a killed run's statement ends with it
                conn.execute(f"SET client_connection_check_interval = {CHECK_INTERVAL_MS}")
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
        except psycopg.Error as err:
            conn.close()
            raise DatabaseUnavailable(f"{address.display}: cannot use the database: "
                                      f"{_first_line(err)}; check --database") from None
        if schema is None:
            conn.close()
            raise DatabaseUnavailable(f"{address.display}: no schema to work in (search_path "
                                      "names none that exists); create it or fix search_path")
        return cls(conn, address.display, timeout, schema)

    def qualified(self, table: str) -> sql.Composed:
        """schema.table, quoted: the table in the schema this driver manages."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))

    def _rows(self, query, params=None) -> list[tuple]:
        with self._translated("reading"):
            return self.conn.execute(query, params).fetchall()

    @contextlib.contextmanager
    def _translated(self, doing: str):
        try:
            yield
        except LOCK_ERRORS + (pgerrors.QueryCanceled,):
            raise
        except psycopg.OperationalError as err:
            raise DatabaseUnavailable(f"{self.display}: lost the database while {doing}: "
                                      f"{_first_line(err)}; nothing more changed") from None
        except pgerrors.ReadOnlySqlTransaction as err:
            raise DatabaseUnavailable(f"{self.display}: cannot write the database while {doing}: "
                                      f"it is read-only ({_first_line(err)}: a standby, or "
                                      "default_transaction_read_only is on); nothing changed; "
                                      "run it on the primary, read-write") from None
        except psycopg.Error as err:  # e.g. no privilege on a history table
            raise DatabaseUnavailable(f"{self.display}: cannot use the database while {doing}: "
                                      f"{_first_line(err)}; nothing changed; check the user's "
                                      "privileges") from None

    # ---- reading

    def table_names(self) -> set[str]:
        return {r[0] for r in self._rows(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", (self.schema,))}

    def applied(self) -> dict[str, AppliedRecord]:
        tables = self.table_names()
        if MIGRATION_TABLE not in tables:
            return {}
        sums, join = sql.SQL("NULL, NULL"), sql.SQL("")
        if CHECKSUM_TABLE in tables:
            sums = sql.SQL("c.forward_sha256, c.rollback_sha256")
            join = sql.SQL("LEFT JOIN {} c USING (migration_hash)").format(
                self.qualified(CHECKSUM_TABLE))
        rows = self._rows(sql.SQL("SELECT m.migration_id, m.applied_at_utc, {} FROM {} m {} "
                                  "ORDER BY m.applied_at_utc").format(
            sums, self.qualified(MIGRATION_TABLE), join))
        return {r[0]: AppliedRecord(r[0], r[1].isoformat() if r[1] else None, r[2], r[3])
                for r in rows}

    def ef_rows(self):
        if EF_TABLE not in self.table_names():
            return None
        return [tuple(r) for r in self._rows(sql.SQL(
            'SELECT "MigrationId", "ProductVersion" FROM {} ORDER BY "MigrationId"').format(
            self.qualified(EF_TABLE)))]

    @contextlib.contextmanager
    def read_transaction(self, doing="reading"):
        with self._translated(doing), self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield self

    def row_count(self, table: str) -> int:
        return self._rows(sql.SQL("SELECT count(*) FROM {}").format(self.qualified(table)))[0][0]

    def tables_with_rows(self, tables) -> list[str]:
        # tables_losing_rows named managed tables only: one query looks into each
        tables = list(tables)
        if not tables:
            return []
        found = self._rows(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("EXISTS (SELECT FROM {})").format(self.qualified(t)) for t in tables)))[0]
        return [t for t, has in zip(tables, found) if has]

    def tables_losing_rows(self, statements) -> list[str]:
        """DROP TABLE, DELETE FROM and TRUNCATE targets that are managed tables, read from
        the statements' text (PostgreSQL cannot compile DDL without running it)."""
        existing, found = self.table_names(), []
        for statement in statements:
            for table in statement_targets(statement):
                if table in existing and table not in found:
                    found.append(table)
        return found

    def dropped_tables(self, statements) -> list[str]:
        existing = self.table_names()
        dropped = [t for s in statements for t in statement_targets(s, drops_only=True)]
        return [t for i, t in enumerate(dropped) if t in existing and t not in dropped[:i]]

    def snapshot(self) -> Schema:
        return catalog_snapshot(self.conn, self.schema)

    @contextlib.contextmanager
    def check_transaction(self, doing="checking"):
        """Repeatable read, always rolled back: the replay's scratch schema and amcheck
        (where it must be created) live inside it and vanish with it."""
        with self._translated(doing), self.conn.transaction(force_rollback=True):
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE")
            yield self

    def yoyo_log(self, migration_id):
        if "_yoyo_log" not in self.table_names():
            return []
        return [(op, at.isoformat()) for op, at in self._rows(sql.SQL(
            "SELECT operation, created_at_utc FROM {} WHERE migration_id = %s "
            "ORDER BY created_at_utc").format(self.qualified("_yoyo_log")), (migration_id,))]

    def integrity(self, full, tables):
        from . import checks as pgcheck
        return pgcheck.integrity(self.conn, self.schema, tables, full)

    def foreign_key_problems(self, tables):
        from . import checks as pgcheck
        return pgcheck.foreign_key_problems(self.conn, self.schema, tables)

    def replay(self, migrations):
        """The migrations run in a scratch schema inside a transaction that is rolled back."""
        from ..runner import Replay
        scratch = f"orchestra_schema_replay_{self.conn.info.backend_pid}"
        created: dict[str, list[str]] = {}
        with self._translated("replaying the migrations"), self.conn.transaction(
                force_rollback=True):
            self.conn.execute("SET TRANSACTION READ WRITE")
            self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
            self.conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(
                sql.Identifier(scratch)))
            for m in migrations:
                before = _tables_in_order(self.conn, scratch)
                self.run_statements(m.id, self.in_transaction_forms(m, "apply", plain=True),
                                    m.path)
                created[m.id] = [t for t in _tables_in_order(self.conn, scratch)
                                 if t not in before]
            schema = catalog_snapshot(self.conn, scratch)
        return Replay(schema, created)

    # ---- writing

    def lock(self) -> None:
        """The session advisory lock that keeps runs apart, waited for up to --timeout."""
        if self._locked:
            return
        key, deadline = advisory_key(self.schema), time.monotonic() + self.timeout
        with self._translated("taking the lock"):
            while not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    raise Busy(f"{self.display}: another orchestra-schema run holds its lock "
                               f"(advisory lock {key}) past --timeout; nothing changed; "
                               "retry later or raise --timeout")
                time.sleep(0.05)
        self._locked = True

    def in_transaction(self, doing, body):
        return self._retrying(doing, lambda: self._attempt(body),
                              "it was rolled back and nothing changed; retry when the app is "
                              "quieter, or raise --timeout")

    def _retrying(self, doing: str, attempt, stopped: str = ""):
        """attempt() under the run lock, again after a pause each time a lock was not granted
        within lock_timeout, until --timeout: then Busy (exit 3), saying `stopped`."""
        self.lock()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with self._translated(doing):
                    return attempt()
            except LOCK_ERRORS as err:
                if time.monotonic() + RETRY_PAUSE > deadline:
                    raise Busy(f"{self.display}: {_lock_wait(err)} past --timeout while {doing}"
                               + (f"; {stopped}" if stopped else "")) from None
                time.sleep(RETRY_PAUSE)

    def _attempt(self, body):
        from .yoyo_pg import PsycopgBackend, upgrade_history_tables  # here: reading never needs yoyo
        self._backend = PsycopgBackend(self.conn, self.schema)
        try:
            with self.conn.transaction():
                self.conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                upgrade_history_tables(self._backend)
                self.conn.execute(sql.SQL(CREATE_CHECKSUM_TABLE).format(
                    self.qualified(CHECKSUM_TABLE)))
                return body()
        except (psycopg.errors.IntegrityError, psycopg.errors.InvalidTransactionTermination,
                psycopg.errors.SerializationFailure) as err:
            raise MigrationFailed(f"{self.display}: could not commit: {_first_line(err)}; "
                                  "the transaction was rolled back and nothing changed") from None
        finally:
            self._backend = None

    def run_statements(self, migration_id, statements, path, first=1, undone=UNDONE) -> set[str]:
        touched: set[str] = set()
        for number, statement in enumerate(statements, first):
            try:
                self.conn.execute(statement)
            except LOCK_ERRORS:
                raise
            except psycopg.OperationalError as err:
                if isinstance(err, pgerrors.QueryCanceled) or self.conn.closed:
                    raise
                raise _failed(migration_id, number, path, statement, err, undone) from None
            except psycopg.Error as err:
                raise _failed(migration_id, number, path, statement, err, undone) from None
            touched.update(statement_targets(statement, writes=True))
        return touched

    def check_constraints(self, migration_id, touched) -> None:
        """Nothing to do: PostgreSQL checks foreign keys at every statement (deferred ones
        at commit, which then fails and rolls everything back)."""

    def record(self, migration, operation):
        from .yoyo_pg import YoyoRef
        ref = YoyoRef(migration.id)
        self._backend.mark_one(ref, log=False)
        self._backend.log_migration(ref, operation)
        self.conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(
            self.qualified(CHECKSUM_TABLE)),
            (ref.hash, migration.id, migration.forward_sha256, migration.rollback_sha256,
             datetime.now(timezone.utc).replace(tzinfo=None)))

    def unrecord(self, migration_id, operation):
        from .yoyo_pg import YoyoRef
        ref = YoyoRef(migration_id)
        self._backend.unmark_one(ref, log=False)
        self._backend.log_migration(ref, operation)
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE migration_hash = %s").format(
            self.qualified(CHECKSUM_TABLE)), (ref.hash,))

    # ---- a `-- transactional: false` migration, one statement at a time

    def progress(self):
        if PROGRESS_TABLE not in self.table_names():
            return {}
        return {r[0]: Progress(*r) for r in self._rows(sql.SQL(
            "SELECT migration_id, operation, done, total, sha256 FROM {}").format(
            self.qualified(PROGRESS_TABLE)))}

    def set_progress(self, migration_id, progress):
        table = self.qualified(PROGRESS_TABLE)
        with self.conn.transaction():  # outside a migration's transaction: one of its own
            self.conn.execute(sql.SQL(CREATE_PROGRESS_TABLE).format(table))
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(table),
                              (migration_id,))
            if progress is not None:
                self.conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s)").format(
                    table), (*astuple(progress),
                             datetime.now(timezone.utc).replace(tzinfo=None)))
            elif not self.conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchall():
                self.conn.execute(sql.SQL("DROP TABLE {}").format(table))  # only while needed

    def outside_transaction(self, statement):
        return bool(_OUTSIDE.match(_strip_comments(statement)))

    def autocommit(self, doing, body):
        def attempt():
            self.conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
            try:
                return body()
            finally:
                with contextlib.suppress(psycopg.Error):
                    self.conn.execute("RESET lock_timeout")
        return self._retrying(doing, attempt)

    def in_transaction_form(self, statement):
        text = _strip_comments(statement)
        if not re.match(r"\s*(?:CREATE|DROP|REINDEX)\b", text, re.IGNORECASE):
            return None  # VACUUM and the like change no schema
        return re.sub(r"\bCONCURRENTLY\b", "", statement, count=1, flags=re.IGNORECASE)

    def concurrent_index(self, statement):
        match = _CONCURRENT_INDEX.match(_strip_comments(statement))
        if not match:
            return None
        verb = "create" if match.group(1) else "drop"
        return verb, _unquote(match.group(2) or match.group(3))

    def index_state(self, name):
        rows = self._rows(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (self.schema, name))
        return None if not rows else "valid" if rows[0][0] else "invalid"

    def drop_index(self, name):
        self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            self.qualified(name)))

    def ef_create(self, ddl):
        self.conn.execute(sql.SQL(ddl).format(self.qualified(EF_TABLE)))

    def ef_insert(self, migration_id, product_version):
        self.conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(
            self.qualified(EF_TABLE)), (migration_id, product_version))

    def ef_delete(self, migration_id) -> bool:
        with self._translated(f"deleting {migration_id} from {EF_TABLE}"):
            cursor = self.conn.execute(sql.SQL('DELETE FROM {} WHERE "MigrationId" = %s').format(
                self.qualified(EF_TABLE)), (migration_id,))
            return cursor.rowcount > 0

    def close(self):
        self.conn.close()


def _failed(migration_id, number, path, statement, err, undone) -> MigrationFailed:
    first_line = statement.strip().splitlines()[0][:80]
    return MigrationFailed(
        f"{migration_id}: statement {number} in {path} failed: {_first_line(err)} "
        f"[{first_line}]; {undone}")


def _lock_wait(err) -> str:
    if isinstance(err, pgerrors.DeadlockDetected):
        return "deadlocked with another session at every try"
    return (f"a table stayed locked by another session (the app?) at every try "
            f"(each waited lock_timeout {LOCK_TIMEOUT_MS} ms)")


def _first_line(err) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


# ---- reading statements: which tables they drop, empty or write

_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_QUALIFIED = rf"{_NAME}(?:\s*\.\s*{_NAME})?"
_LOSING = re.compile(
    rf"\b(?:DROP\s+TABLE(?:\s+IF\s+EXISTS)?|DELETE\s+FROM(?:\s+ONLY)?|"
    rf"TRUNCATE(?:\s+TABLE)?(?:\s+ONLY)?)\s+({_QUALIFIED}(?:\s*,\s*{_QUALIFIED})*)",
    re.IGNORECASE)
_WRITING = re.compile(
    rf"\b(?:CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?|ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?|"
    rf"INSERT\s+INTO|UPDATE(?:\s+ONLY)?)\s+({_QUALIFIED})", re.IGNORECASE)


# Statements PostgreSQL refuses inside a transaction block.
_OUTSIDE = re.compile(
    r"\s*(?:VACUUM\b|(?:CREATE|DROP)\s+(?:DATABASE|TABLESPACE)\b|ALTER\s+SYSTEM\b|"
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b|DROP\s+INDEX\s+CONCURRENTLY\b|"
    r"REINDEX\b[^;]*\bCONCURRENTLY\b)", re.IGNORECASE)
_CONCURRENT_INDEX = re.compile(
    rf"\s*(?:(CREATE)\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"({_QUALIFIED})|DROP\s+INDEX\s+CONCURRENTLY\s+(?:IF\s+EXISTS\s+)?({_QUALIFIED}))",
    re.IGNORECASE)


def _strip_comments(statement: str) -> str:
    statement = re.sub(r"/\*.*?\*/", " ", statement, flags=re.S)
    return re.sub(r"--[^\n]*", " ", statement)


def _unquote(name: str) -> str:
    last = re.findall(_NAME, name)[-1]
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def statement_targets(statement: str, writes: bool = False, drops_only: bool = False) -> list[str]:
    """Tables a statement drops, deletes from or truncates (writes=True: also creates,
    alters, inserts into or updates; drops_only: only drops), by name without schema."""
    text = _strip_comments(statement)
    found = []
    for pattern in (_LOSING, _WRITING) if writes else (_LOSING,):
        for match in pattern.finditer(text):
            if drops_only and not re.match(r"DROP\b", match.group(0), re.IGNORECASE):
                continue
            found += [_unquote(n) for n in re.findall(_QUALIFIED, match.group(1))]
    return found


# ---- the schema, from the catalogs

_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_MATCH = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}


def _tables_in_order(conn, schema: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.oid", (schema,))]


def catalog_snapshot(conn, schema: str) -> Schema:
    """schema.Schema of one PostgreSQL schema's tables: columns (exact types), indexes,
    primary keys, foreign keys with their actions. Views and triggers are not compared."""
    from ...schema import Column, ForeignKey, Index, Schema, Table  # here: status never needs it
    result = Schema()
    for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname", (schema,)):
        result.tables[name] = Table(name)
    for table, column, typ, notnull, default, pk in conn.execute(_COLUMNS, (schema,)):
        result.tables[table].columns.append(Column(column, typ, notnull, default, pk or 0, 0))
    for table, name, unique, primary, constraint, partial, names, desc, colls in conn.execute(
            _INDEXES, (schema,)):
        origin = "pk" if primary else "u" if constraint else "c"
        keys = tuple(zip(names, desc, colls))
        result.tables[table].indexes[name] = Index(name, unique, origin, partial, keys)
    fks: dict[str, set] = {}
    for table, name, cols, parent, parent_cols, upd, dele, match in conn.execute(_FKS, (schema,)):
        fks.setdefault(table, set()).add(ForeignKey(
            tuple(cols), parent, tuple(parent_cols), _ACTIONS[upd], _ACTIONS[dele], _MATCH[match]))
    for table, keys in fks.items():
        result.tables[table].foreign_keys = frozenset(keys)
    return result


_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid),
       array_position(pk.conkey, a.attnum)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum"""

_INDEXES = """
SELECT t.relname, i.relname, x.indisunique, x.indisprimary,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid),
       x.indpred IS NOT NULL,
       ARRAY(SELECT COALESCE(a.attname, pg_get_indexdef(x.indexrelid, u.o::int, true))
             FROM unnest(x.indkey) WITH ORDINALITY u(n, o)
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n AND u.n > 0
             WHERE u.o <= x.indnkeyatts ORDER BY u.o),
       ARRAY(SELECT (x.indoption[u.o - 1] & 1) = 1
             FROM generate_series(1, x.indnkeyatts) u(o) ORDER BY u.o),
       ARRAY(SELECT COALESCE(co.collname, '')
             FROM generate_series(1, x.indnkeyatts) u(o)
             LEFT JOIN pg_collation co ON co.oid = x.indcollation[u.o - 1] ORDER BY u.o)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s"""

_FKS = """
SELECT c.relname, k.conname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       p.relname,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
       k.confupdtype, k.confdeltype, k.confmatchtype
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class p ON p.oid = k.confrelid
WHERE n.nspname = %s AND k.contype = 'f'"""


# ---- connection failures, in one line a DBA can act on, never with the password

def connect_error(err: psycopg.Error, address) -> str:
    text = str(err)
    where = address.display
    user = address.get("user") or "the user"
    if "password authentication failed" in text:
        return (f"{where}: wrong password for user {user} (the server refused it); "
                "check the password in --database, PGPASSWORD or ~/.pgpass")
    if "no password supplied" in text:
        return (f"{where}: the server asks for a password and none was given; "
                "put it in --database, PGPASSWORD or ~/.pgpass")
    if re.search(r'database "[^"]*" does not exist', text):
        return (f"{where}: database {address.get('dbname') or ''!s} does not exist on the "
                "server; check --database (create it first for a new deployment)")
    if re.search(r'role "[^"]*" does not exist', text):
        return f"{where}: user {user} does not exist on the server; check --database"
    if "timeout expired" in text:
        return (f"{where}: no answer from the server within --timeout; check the host and "
                "port, the network, or raise --timeout")
    if "Connection refused" in text:
        return (f"{where}: connection refused (no server listening there); check the host and "
                "port, and that PostgreSQL is running")
    if "could not translate host name" in text or "Name or service not known" in text:
        return f"{where}: unknown host; check the host name in --database"
    if any(s in text for s in ("invalid response to SSL negotiation",
                               "expected authentication request", "server closed the connection",
                               "unsupported frontend protocol", "received invalid response")):
        return (f"{where}: what answers there is not a PostgreSQL server; check the host "
                "and port in --database")
    detail = _scrub(text, address)
    return f"{where}: cannot connect: {detail}; check --database"


def _scrub(text: str, address) -> str:
    line = " ".join(text.split())
    for secret in address.secrets().values():
        line = line.replace(secret, "***")
    return line
