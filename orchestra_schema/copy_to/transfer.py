"""copy-to: every row of an orchestra.db into a PostgreSQL database, in one transaction.

The source is only read: opened read-only, every read inside one read transaction
(one snapshot, while the app goes on writing; a live -wal is read as SQLite reads it;
worker processes, --jobs, read the same snapshot: copy_workers.py).
Its schema must be what the SQLite migrations make, else it is refused (exit 5),
naming the differences as `adopt` does.

On the target everything happens in ONE transaction, which commits only at the end:
the PostgreSQL migrations with both histories (yoyo's with checksums, EF Core's), the
rows, and the proof. A kill at any instant leaves no partial copy (the server rolls
back a transaction whose client is gone), so a rerun starts clean.

1. migrations applied (each as a savepoint of the one transaction), then every managed
   table must be empty, else refused;
2. keys, indexes and foreign keys dropped, rows streamed (apsw cursors, here or in the
   workers -> COPY FROM STDIN in binary format, the fields already converted by SQLite:
   copy_lines.py, pg_values.py; the server parses no text), then rebuilt as they were
   (faster than maintaining them row by row; the final schema is checked against the
   migrations);
3. a value PostgreSQL cannot hold stops COPY (PostgreSQL's receive functions, encoding
   check and limits are the check; pg_values sends what it cannot convert so that they
   reject it): the copy is refused (exit 5), naming table, column, row Id and limit, and
   nothing is committed;
4. proof: per table the row count and an order-independent digest (the sum of the first
   64 bits of the md5 of every row's binary fields, modulo 2**64) computed from the
   source as it is sent, and by PostgreSQL from what it stored (the send functions); a
   mismatch rolls everything back and names the table (exit 4).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psycopg
from psycopg import sql

from . import lines as copy_lines, workers as copy_workers, values as pg_values
from .. import ef
from ..engines.sqlite import wal
from ..address import PgAddress
from ..engines.sqlite.database import Database, quote, translated
from ..engines.runner import HISTORY_TABLES, apply_one, applied_migrations, replay
from ..engines.postgresql.driver import LOCK_ERRORS, PgDriver, statement_targets
from ..errors import Busy, DatabaseUnavailable, MigrationFailed, Refused
from ..migrations import default_sql_dir, load
from ..schema import diff
from ..engines.sqlite.files import database_size
from ..engines.drift import drift

HANGFIRE_TABLES = {"AggregatedCounter", "Counter", "Job", "List", "Hash", "JobParameter",
                   "JobQueue", "Server", "Set", "State", "DistributedLock"}
EF_TABLES = {ef.TABLE, "__EFMigrationsLock"}
AUTO_JOBS, AUTO_JOBS_FROM = 2, 32 << 20  # workers by default, for sources of this size or more
# The session as the conversions and the proof expect it (pg_values), for this transaction.
SETTINGS = ("client_encoding = 'UTF8'", "maintenance_work_mem = '256MB'",
            "statement_timeout = 0")


@dataclass
class TableCopy:
    table: str
    copied: int
    skipped: int  # always 0: every row is copied, or the copy refuses and nothing is
    seconds: float  # streaming its rows (keys and indexes are rebuilt afterwards, timed apart)
    rows_per_second: float


@dataclass
class NotCopied:
    table: str
    rows: int
    reason: str


@dataclass
class Truncated:
    table: str
    column: str
    id: str
    length: int  # characters in the source
    limit: int  # characters kept


@dataclass
class CopyResult:
    source: str
    target: str
    applied: list[str]  # PostgreSQL migrations applied to the target
    ef_history: list[str]  # rows added to the target's __EFMigrationsHistory
    tables: list[TableCopy]
    not_copied: list[NotCopied]
    truncated: list[Truncated] = field(default_factory=list)  # --truncate-long-text only
    rows_copied: int = 0
    jobs: int = 0  # worker processes that made the COPY lines (0: this process)
    index_seconds: float = 0.0  # rebuilding keys, indexes and foreign keys
    verify_seconds: float = 0.0  # the proof: counts and digests on both sides
    seconds: float = 0.0


class CopyMismatch(MigrationFailed):
    """PostgreSQL holds something else than what was sent; everything was rolled back."""


def copy_to(source: Path, target: PgAddress, timeout: float, truncate: bool = False,
            progress: Callable[[int, int], None] | None = None,
            jobs: int | None = None) -> CopyResult:
    """jobs: worker processes making the COPY lines (None: AUTO_JOBS for a source of
    AUTO_JOBS_FROM bytes or more on a machine with that many CPUs, else none)."""
    started = time.monotonic()
    sqlite_migrations = load(default_sql_dir("sqlite"))
    pg_migrations = load(default_sql_dir("postgresql"))
    if jobs is None:
        jobs = auto_jobs(source)
    wal.refuse(source, "copying now would leave them behind")
    with (Database.open(source, timeout=timeout, readonly=True) as src,
          translated(source, "reading the source"),
          copy_workers.reading(src, jobs, timeout) as workers):
        copied_tables = _check_source(src, sqlite_migrations)
        result = CopyResult(str(source), target.display, [], [], [], _not_copied(src, copied_tables))
        result.jobs = len(workers.procs) if workers else 0
        pg_values.register(src.connection)
        with PgDriver.connect(target, timeout=timeout) as driver, _server_errors(driver):
            _check_encoding(driver)
            driver.lock()
            with driver.conn.transaction():
                _load(src, workers, driver, pg_migrations, copied_tables, truncate, progress,
                      result)
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _server_errors(driver: PgDriver):
    """What the server can do to a copy under way, in one line; the transaction is gone."""
    try:
        yield
    except LOCK_ERRORS:
        raise Busy(f"{driver.display}: a table stayed locked by another session past "
                   f"lock_timeout; nothing committed; retry when nothing else uses the "
                   "database") from None
    except psycopg.OperationalError as err:
        raise DatabaseUnavailable(f"{driver.display}: lost the database during the copy "
                                  f"({str(err).strip().splitlines()[0]}); nothing committed; "
                                  "run it again") from None


def auto_jobs(source: Path) -> int:
    """Workers pay off once making the lines takes longer than starting them (~0.1 s)."""
    try:
        big = database_size(source) >= AUTO_JOBS_FROM
    except OSError:
        big = False  # opening it will say what is wrong
    return AUTO_JOBS if big and (os.cpu_count() or 1) >= AUTO_JOBS else 0


def _load(src, workers, driver, pg_migrations, copied_tables, truncate, progress,
          result) -> None:
    """Everything on the target, inside the caller's one transaction."""
    conn = driver.conn
    for setting in (*SETTINGS, *_lz4(conn)):
        conn.execute(f"SET LOCAL {setting}")
    result.applied, result.ef_history = _apply(driver, pg_migrations)
    _refuse_rows(driver, pg_migrations)
    columns = {t: _target_columns(driver, t) for t in copied_tables}
    schema = driver.snapshot()  # the migrations' schema; the rebuild must restore it exactly
    keys = _drop_keys(driver, copied_tables)
    totals = {t: src.row_count(t) for t in copied_tables}
    statements = {t: copy_lines.select(t, columns[t], truncate) for t in copied_tables}
    if workers:
        shares = dict(zip(copied_tables, workers.plan(
            [(statements[t], *_rowids(src, t), totals[t]) for t in copied_tables])))
    expected, done = {}, 0
    for table in copied_tables:
        began = time.monotonic()
        lines = (copy_workers.Share(workers, shares[table]) if workers
                 else copy_lines.Lines(src.connection, statements[table]))
        expected[table] = _stream(src, driver, table, columns[table], truncate, lines,
                                  lambda n: progress and progress(done + n, sum(totals.values())))
        result.truncated += [Truncated(table, *cut) for cut in lines.cuts]
        done += expected[table][0]
        seconds = time.monotonic() - began
        result.tables.append(TableCopy(table, expected[table][0], 0, round(seconds, 3),
                                       round(expected[table][0] / seconds) if seconds else 0))
    result.rows_copied = done
    if workers:
        workers.close()  # their work is done: let go of their snapshots now
    began = time.monotonic()
    _rebuild_keys(driver, keys)
    result.index_seconds = round(time.monotonic() - began, 3)
    began = time.monotonic()
    _prove(driver, columns, expected, schema)
    result.verify_seconds = round(time.monotonic() - began, 3)


def _lz4(conn) -> list[str]:
    """Long chat text is compressed (TOAST) with lz4 where the server has it: several times
    faster than the default pglz, to write and to read back for the proof; readers see no
    difference (each value records how it was compressed)."""
    has = conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                       "WHERE name = 'default_toast_compression'").fetchone()
    return ["default_toast_compression = 'lz4'"] if has and has[0] else []


# ---- the source

def _check_source(src: Database, migrations) -> list[str]:
    """The tables to copy (all the SQLite migrations create); Refused if the schema differs."""
    made = replay(migrations)
    managed = [t for m in migrations for t in made.created[m.id]]
    present = src.table_names()
    if not present & set(managed):
        raise Refused(f"{src.path}: not an Orchestra database (none of the tables "
                      f"{', '.join(managed)}); nothing changed; check --database")
    encoding = src.execute("PRAGMA encoding").fetchone()[0]
    if encoding != "UTF-8":  # COPY gets each text's stored bytes, which must be UTF-8
        raise Refused(f"{src.path}: the database stores text as {encoding}; nothing changed; "
                      "copy-to reads UTF-8 databases (as EF Core makes them): convert it first "
                      "(sqlite3 OLD .dump | sqlite3 NEW, NEW created UTF-8)")
    differences = drift(src, migrations, {m.id for m in migrations}).differences
    if differences:
        raise Refused(f"{src.path}: schema differs from what the SQLite migrations make in "
                      f"{len(differences)} way(s): {'; '.join(differences)}; nothing changed; "
                      "copy-to moves only an Orchestra database as EF Core or this tool made it")
    return managed


def _rowids(src: Database, table: str) -> tuple[int | None, int | None]:
    return src.execute(f"SELECT min(rowid), max(rowid) FROM {quote(table)}").fetchone()


def _not_copied(src: Database, copied: list[str]) -> list[NotCopied]:
    out = []
    for table in sorted(src.table_names() - set(copied)):
        if table in HANGFIRE_TABLES or table.lower().startswith("hangfire"):
            reason = "Hangfire's (Hangfire.PostgreSql builds its own; jobs do not move)"
        elif table in HISTORY_TABLES or table in EF_TABLES:
            reason = "history (the target gets its own, for the PostgreSQL migrations)"
        else:
            reason = "no migration creates it"
        out.append(NotCopied(table, src.row_count(table), reason))
    return out


def _stream(src, driver, table, cols, truncate, lines, progress) -> tuple[int, int]:
    """COPY the table's lines (copy_lines.Lines, or a copy_workers.Share); returns (rows,
    digest) of what was sent."""
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        driver.qualified(table), names)
    spans: list[tuple[int, int, int]] = []  # per piece: its first line, range start, offset
    rows = 0
    try:
        with driver.conn.cursor().copy(statement) as copy:
            copy.write(copy_lines.SIGNATURE)
            for piece in lines:
                spans.append((rows + 1, piece.start, piece.offset))
                copy.write(piece.data)
                rows += piece.rows
                if progress:
                    progress(rows)
            copy.write(copy_lines.TRAILER)
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as err:
        raise Refused(_refused_line(src, table, cols, truncate, err, spans)) from None
    if progress:
        progress(rows)
    return rows, lines.digest


def _refused_line(src: Database, table: str, cols, truncate: bool, err: psycopg.Error,
                  spans: list[tuple[int, int, int]]) -> str:
    """The value COPY rejected, named: the row's Id from COPY's line number (the piece that
    held that line, and its place there), the column, and why (pg_values.problem_sql,
    else PostgreSQL's own words)."""
    found = re.search(r"line (\d+)(?:, column (\w+))?", err.diag.context or "")
    if not found or not spans:
        return f"{table}: PostgreSQL cannot hold a value: {err.diag.message_primary}"
    line = int(found.group(1))
    first, start, offset = spans[bisect.bisect_right(spans, (line, copy_lines.HIGHEST, 0)) - 1]
    named = found.group(2) or err.diag.column_name
    suspects = [c for c in cols if c.name == named] or cols  # an error naming no column
    row_id, *whys = src.execute(
        f'SELECT "Id", {", ".join(pg_values.problem_sql(c, truncate) for c in suspects)} '
        f"FROM {quote(table)} WHERE rowid >= ? ORDER BY rowid LIMIT 1 OFFSET ?",
        (start, offset + line - first)).fetchone()
    col, why = next(((c, w) for c, w in zip(suspects, whys) if w is not None),
                    (suspects[0] if named else None, err.diag.message_primary))
    where = f"{table}.{col.name} row Id={row_id!r}" if col else f"{table} row Id={row_id!r}"
    hint = "; --truncate-long-text cuts text over its limit" if "over the limit" in why else ""
    kind = f" ({col.pg_type})" if col and col.pg_type not in why else ""
    return (f"{where}: {why}{kind}; nothing committed; fix it "
            f"in the source first (the copy stops at the first such value){hint}")


# ---- the target

def _check_encoding(driver: PgDriver) -> None:
    encoding = driver.conn.execute("SHOW server_encoding").fetchone()[0]
    if encoding != "UTF8":
        raise Refused(f"{driver.display}: database encoding is {encoding}, not UTF8; nothing "
                      "changed; create the database WITH ENCODING 'UTF8' (chat text holds any "
                      "character, and varchar limits count characters only in UTF8)")


def _apply(driver: PgDriver, migrations) -> tuple[list[str], list[str]]:
    """The pending migrations and EF's history, each in a savepoint of the one transaction."""
    applied = set(applied_migrations(driver))
    ef.refuse_unadopted(driver, applied)
    # All in the one transaction: CONCURRENTLY statements run plainly (the tables are empty).
    driver.in_steps = False
    ef_before = ef.entries(driver)
    done = [m.id for m in migrations if m.id not in applied and apply_one(driver, m)]
    ef.keep_in_step(driver, set(applied_migrations(driver)))  # also with nothing left to apply
    return done, ef.changes(ef_before, ef.entries(driver))


def _managed(migrations) -> set[str]:
    return {t for m in migrations for s in m.statements for t in statement_targets(s, writes=True)}


def _refuse_rows(driver: PgDriver, migrations) -> None:
    holding = [t for t in sorted(_managed(migrations) & driver.table_names())
               if driver.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                   driver.qualified(t))).fetchone()[0]]
    if holding:
        raise Refused(f"{driver.display}: tables {', '.join(holding)} already hold rows; "
                      "nothing changed; copy-to fills an empty database only (create a new "
                      "one, or empty these tables yourself)")


def _target_columns(driver: PgDriver, table: str) -> list[pg_values.Column]:
    rows = driver.conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum",
        (driver.qualified(table).as_string(driver.conn),)).fetchall()
    return [pg_values.Column(*r) for r in rows]


@dataclass
class KeyPlan:
    """The tables' primary keys and indexes, and the foreign keys from or to them, as the
    catalog defines them: how to drop them before the load and rebuild them exactly after."""
    constraints: list[tuple[str, str, str, str]]  # (table, name, kind, definition)
    indexes: list[tuple[str, str]]  # (name, CREATE INDEX statement from pg_get_indexdef)

    def drops(self) -> list[sql.Composable]:
        return [*(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(t), sql.Identifier(n))
                  for t, n, _, _ in self.constraints),  # foreign keys first ('f' < 'p')
                *(sql.SQL("DROP INDEX {}").format(sql.SQL(n)) for n, _ in self.indexes)]

    def rebuilds(self) -> list[sql.Composable]:
        """Keys first (foreign keys need them), then indexes, then foreign keys."""
        def add(kind):
            return [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(t), sql.Identifier(n), sql.SQL(d)) for t, n, k, d in self.constraints
                if k == kind]
        return [*add("p"), *(sql.SQL(d) for _, d in self.indexes), *add("f")]


def key_plan(driver: PgDriver, tables: list[str]) -> KeyPlan:
    conn, oids = driver.conn, [driver.qualified(t).as_string(driver.conn) for t in tables]
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE (contype = 'p' AND conrelid = ANY(%(t)s::regclass[])) OR "
        "(contype = 'f' AND (conrelid = ANY(%(t)s::regclass[]) OR confrelid = ANY(%(t)s::regclass[]))) "
        "ORDER BY contype, conname", {"t": oids}).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY 1",
        (oids,)).fetchall()
    return KeyPlan(constraints, indexes)


def _drop_keys(driver: PgDriver, tables: list[str]) -> KeyPlan:
    plan = key_plan(driver, tables)
    for statement in plan.drops():
        driver.conn.execute(statement)
    return plan


def _rebuild_keys(driver: PgDriver, plan: KeyPlan) -> None:
    try:
        for statement in plan.rebuilds():
            driver.conn.execute(statement)
    except psycopg.errors.IntegrityError as err:
        detail = err.diag.message_detail or ""
        raise Refused(f"{driver.display}: the rows break {err.diag.constraint_name} on "
                      f"{err.diag.table_name}: {err.diag.message_primary}"
                      f"{' (' + detail + ')' if detail else ''}; nothing committed; "
                      "fix the source (GUIDs that differ only in case are one uuid)") from None


def proof_sql(driver: PgDriver, table: str, cols: list[pg_values.Column]) -> sql.Composable:
    """The table's row count and digest, computed by PostgreSQL from the stored values."""
    return sql.SQL("SELECT count(*), coalesce(sum(('x' || left(md5({}), 16))::bit(64)::bigint), "
                   "0) FROM {}").format(sql.SQL(pg_values.target_row(cols)), driver.qualified(table))


def _prove(driver: PgDriver, columns: dict, expected: dict, schema) -> None:
    """Before the commit: the schema is as the migrations left it (keys, indexes and foreign
    keys rebuilt exactly), and each table holds exactly what was sent (row count and digest
    computed by PostgreSQL from the stored values)."""
    differences = diff(schema, driver.snapshot())
    if differences:
        raise CopyMismatch(f"{driver.display}: after the load the schema differs from the "
                           f"migrations': {'; '.join(differences)}; rolled back, nothing "
                           "committed (a bug: report it)")
    for table, cols in columns.items():
        found = driver.conn.execute(proof_sql(driver, table, cols)).fetchone()
        rows, digest = expected[table]
        if (found[0], int(found[1]) % 2**copy_lines.DIGEST_BITS) != (
                rows, digest % 2**copy_lines.DIGEST_BITS):
            raise CopyMismatch(
                f"{driver.display}: {table} does not hold what was read from the source "
                f"({expected[table][0]} row(s) sent, {found[0]} found; digests "
                f"{'differ' if found[0] == expected[table][0] else 'not compared'}); rolled "
                "back, nothing committed")
