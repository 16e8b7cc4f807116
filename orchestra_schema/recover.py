"""recover: the rollback procedure's "If Database Corruption Occurs", automated.

A fresh database is built under a temporary name beside the damaged one: the
migrations the source had applied, then every table the source has (foreign
ones such as Hangfire's from their own CREATE statements), then its rows, from
a verified backup or salvaged from the damaged file itself. Only when the new
file passes integrity_check is the damaged one moved aside with its -wal/-shm
(orchestra.db.corrupted_TIMESTAMP) and the new one given its name by one
rename (files.Staged.swap_in), so a crash at any moment leaves one or the
other at the live name, and the old one stays under the aside name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import apsw

from . import files, salvage
from .backup import health, trusted_backup
from .copying import Progress, integrity_of
from .context import Context
from .database import Database, open_immutable, quote
from .engine import HISTORY_TABLES, applied_migrations, apply_one
from .errors import CheckFailed, DatabaseCorrupt, DatabaseUnavailable, OrchestraError, Refused
from .migrations import ancestors


@dataclass
class TableRecovery:
    table: str
    copied: int
    lost: int  # rows certainly lost (all of them when lost_exact)
    lost_exact: bool = True
    lost_at_most: int | None = 0  # an upper bound when not exact (None: none known)
    note: str = ""


def _unknown(table: str, note: str) -> TableRecovery:
    return TableRecovery(table, 0, 0, False, None, note)


@dataclass
class RecoverResult:
    database: Path
    source: Path  # the backup, or the damaged file where it now lies
    from_backup: bool
    live_integrity: str  # what the damaged database's quick_check said
    backup: Path | None = None  # the original, moved aside (its safety copy)
    moved_aside: list[Path] = field(default_factory=list)
    applied_migrations: list[str] = field(default_factory=list)
    tables: list[TableRecovery] = field(default_factory=list)
    rows_copied: int = 0
    rows_lost: int = 0  # certainly lost
    rows_lost_at_most: int | None = 0  # None: some table's loss has no upper bound
    foreign_key_violations: int = 0
    integrity: str = "not checked"
    warnings: list[str] = field(default_factory=list)


def recover(ctx: Context, source: Path | None = None, yes: bool = False,
            progress: Progress | None = None) -> RecoverResult:
    """Rebuild ctx.database from `source` (a backup) or from what it still holds."""
    migrations = ctx.migrations()
    database = ctx.database
    if source is None and not database.exists():
        raise DatabaseUnavailable(f"{database}: not found, nothing to salvage; "
                                  "use --from BACKUP to rebuild it from a backup")
    live = health(ctx)
    if live == "ok" and not yes:
        raise Refused(f"{database}: passes its quick_check, nothing to recover; nothing changed; "
                      "use `restore BACKUP` to go back to a backup, or --yes to rebuild it anyway")
    if source is not None:
        trusted_backup(Path(source), database, "recover")
    files.check_writable_dir(database.parent, "recovered database")
    files.refuse_in_use(database, "recover")
    result = RecoverResult(database, Path(source or database), source is not None, live)
    files.clean_stale(database.parent)  # what killed runs left there
    with files.Staged(database) as staged:
        with files.writing(database.parent, "rebuilding the database"):
            _rebuild(ctx, staged.path, migrations, result, progress)
        if result.integrity != "ok":
            raise CheckFailed(f"{database}: the rebuilt copy failed its integrity_check "
                              f"({result.integrity}); nothing changed; report this as a bug")
        files.refuse_in_use(database, "recover")  # again: the rebuild may have taken a while
        if database.exists():
            _swap_in(database, staged, result)
        else:
            staged.publish([database])
    return result


def _swap_in(database: Path, staged: files.Staged, result: RecoverResult) -> None:
    files.copy_owner_and_mode(database, staged.path)  # the application's user must open it
    kind = "pre-recover" if result.live_integrity == "ok" else "corrupted"
    aside = files.aside_name(database, kind, datetime.now(timezone.utc))
    result.moved_aside = staged.swap_in(database, aside)
    result.backup = result.moved_aside[0]
    if not result.from_backup:
        result.source = result.backup


def _rebuild(ctx: Context, path: Path, migrations, result: RecoverResult, progress) -> None:
    src = _open_source(ctx, result)
    fresh = Database.open(path, timeout=ctx.timeout)
    try:
        fresh.execute("PRAGMA synchronous = OFF")  # one fsync when it is published
        if src is not None:
            _copy_settings(src, fresh)
        result.applied_migrations = _apply(fresh, migrations, _source_history(src, result), result)
        schema = _source_schema(src, result)
        tables = [(name, sql) for kind, name, _, sql in schema
                  if kind == "table" and not name.startswith("sqlite_")]
        with _triggers_off(fresh):
            for done, (name, sql) in enumerate(tables, 1):
                result.tables.append(_copy_table(src, fresh, name, sql, result))
                if progress:
                    progress(done, len(tables))
        _create_others(fresh, schema, result)
        _copy_sequences(src, fresh)
        if not tables:
            result.tables = [_unknown(t, "source unreadable")
                             for t in sorted(fresh.table_names() - HISTORY_TABLES)]
        _summarize(fresh, result)
        # The application chose the live file's journal mode; a backup's header may differ.
        model = result.database if result.database.exists() else result.source
        if files.is_sqlite(model) and files.journal_mode(model) == "wal":
            fresh.execute("PRAGMA journal_mode = WAL").fetchall()
    finally:
        fresh.close()
        if src is not None:
            src.close()


def _open_source(ctx: Context, result: RecoverResult) -> Database | None:
    if result.from_backup:
        return Database(result.source, open_immutable(result.source), readonly=True)
    try:
        return Database.open(ctx.database, readonly=True, timeout=ctx.timeout)
    except DatabaseCorrupt as err:
        result.warnings.append(f"{ctx.database}: nothing readable ({err.reason}); "
                               "rebuilt from the migrations alone")
        return None


def _copy_settings(src: Database, fresh: Database) -> None:
    """Settings that must be set before the first table exists."""
    for pragma in ("page_size", "auto_vacuum", "user_version"):
        with contextlib.suppress(apsw.Error):
            fresh.execute(f"PRAGMA {pragma} = {int(src.scalar(f'PRAGMA {pragma}'))}")


def _source_history(src: Database | None, result: RecoverResult) -> set[str] | None:
    if src is None:
        return None
    try:
        return set(applied_migrations(src))
    except (apsw.Error, OrchestraError) as err:
        result.warnings.append(f"migration history unreadable ({err}); applied every migration")
        return None


def _apply(fresh: Database, migrations, wanted: set[str] | None, result: RecoverResult) -> list[str]:
    """Apply the migrations the source had applied (all, if that is unknown)."""
    for mid in sorted((wanted or set()) - {m.id for m in migrations}):
        result.warnings.append(f"{mid}: applied to the source but not in the sql dir; its tables "
                               "were created from the source's own CREATE statements")
    whole = None
    if wanted is not None:  # with what they depend on: apply_one refuses a migration without
        by_id = {m.id: m for m in migrations}
        whole = set().union(*(ancestors(mid, by_id) for mid in wanted & set(by_id)))
        for mid in sorted(whole - wanted):
            result.warnings.append(f"{mid}: not in the source's history, but migrations there "
                                   "depend on it; applied, so that the rebuilt history is whole")
    applied = []
    for m in migrations:
        if whole is None or m.id in whole:
            apply_one(fresh, m)
            applied.append(m.id)
    return applied


def _source_schema(src: Database | None, result: RecoverResult) -> list[tuple]:
    if src is None:
        return []
    try:
        return src.rows("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY rowid")
    except apsw.Error as err:
        result.warnings.append(f"source schema unreadable ({err}); no rows could be copied")
        return []


@contextlib.contextmanager
def _triggers_off(fresh: Database):
    """Copied rows must not fire triggers (SQLite cannot disable them, so drop and recreate)."""
    triggers = fresh.rows("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")
    for name, _ in triggers:
        fresh.execute(f"DROP TRIGGER {quote(name)}")
    yield
    for _, sql in triggers:
        fresh.execute(sql)


def _copy_table(src: Database, fresh: Database, name: str, sql: str,
                result: RecoverResult) -> TableRecovery:
    kind, without_rowid = _table_kind(src, name)
    if kind != "table":
        return _unknown(name, f"{kind} table, not copied")
    if name not in fresh.table_names():
        try:
            fresh.execute(sql)
        except apsw.Error as err:
            result.warnings.append(f"{name}: could not be created ({err}); its rows were not copied")
            return _unknown(name, f"not created: {err}")
    wanted = set(_columns(src, name))
    columns = [c for c in _columns(fresh, name) if c in wanted]
    damage = salvage.Damage()
    read = salvage.rows(src.connection, name, columns, without_rowid, damage)
    insert = (f"INSERT OR IGNORE INTO {quote(name)} ({', '.join(map(quote, columns))}) "
              f"VALUES ({', '.join('?' * len(columns))})")
    with fresh.connection:
        if name in HISTORY_TABLES:
            read = list(read)
            if damage.regions:
                return _unknown(name, "damaged; kept the history of the rebuild")
        # The source's rows replace what the migrations inserted: a seeded row
        # (EF Core's HasData) may have been changed or deleted since.
        fresh.execute(f"DELETE FROM {quote(name)}")
        before = fresh.connection.total_changes()
        fresh.connection.executemany(insert, read)
        copied = fresh.connection.total_changes() - before
    return _account(src, name, copied, damage)


def _account(src: Database, name: str, copied: int, damage: salvage.Damage) -> TableRecovery:
    rejected = damage.read - copied
    lost, exact = salvage.count_lost(src.connection, name, damage.read) if damage.regions else (0, True)
    at_most = lost if exact else damage.rowid_gap
    notes = []
    if damage.regions:
        notes.append(f"{damage.regions} damaged stretch(es) skipped")
    if damage.stopped:
        notes.append("reading stopped at the damage (WITHOUT ROWID table)")
    if rejected:
        notes.append(f"{rejected} row(s) rejected by constraints")
    if not exact:
        notes.append("table and indexes damaged: "
                     + ("no bound on the loss" if at_most is None else "upper bound from rowid gaps"))
    return TableRecovery(name, copied, (lost or 0) + rejected, exact,
                         None if at_most is None else max(at_most, lost or 0) + rejected,
                         "; ".join(notes))


def _table_kind(src: Database, name: str) -> tuple[str, bool]:
    for _, tname, kind, _, wr, _ in src.rows("PRAGMA main.table_list"):
        if tname == name:
            return kind, bool(wr)
    return "table", False


def _columns(db: Database, table: str) -> list[str]:
    # hidden 0: ordinary columns; generated ones (2, 3) cannot be inserted
    return [row[1] for row in db.rows(f"PRAGMA table_xinfo({quote(table)})") if row[6] == 0]


def _create_others(fresh: Database, schema: list[tuple], result: RecoverResult) -> None:
    """The source's own indexes, views and triggers that the migrations did not create."""
    existing = {name for (name,) in fresh.rows("SELECT name FROM sqlite_schema")}
    for kind, name, _, sql in schema:
        if kind in ("index", "view", "trigger") and sql and name not in existing:
            try:
                fresh.execute(sql)
            except apsw.Error as err:
                result.warnings.append(f"{kind} {name}: not recreated ({err})")


def _copy_sequences(src: Database | None, fresh: Database) -> None:
    """AUTOINCREMENT counters: never hand out an id the old database already used."""
    try:
        sequences = src.rows("SELECT name, seq FROM sqlite_sequence") if src else []
    except apsw.Error:
        return
    for name, seq in sequences:
        with contextlib.suppress(apsw.Error):
            fresh.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
            fresh.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                          "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (name, seq, name))


def _summarize(fresh: Database, result: RecoverResult) -> None:
    result.rows_copied = sum(t.copied for t in result.tables)
    result.rows_lost = sum(t.lost for t in result.tables)
    bounds = [t.lost_at_most for t in result.tables]
    result.rows_lost_at_most = None if None in bounds else sum(bounds)
    result.foreign_key_violations = len(fresh.rows("PRAGMA foreign_key_check"))
    if result.foreign_key_violations:
        result.warnings.append(f"{result.foreign_key_violations} foreign key violation(s) where "
                               "parent rows were lost; PRAGMA foreign_key_check lists them")
    result.integrity = integrity_of(fresh.connection, "integrity_check")
