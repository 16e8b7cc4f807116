"""verify and checklist: is the database sound, and does it match its history?

Drift compares the live schema of the tables the migrations create with what
the applied migrations produce when replayed into an empty in-memory database,
structurally (schema.diff). Tables no migration creates (Hangfire's) are not
drift; they are listed as unmanaged. The history tables (yoyo's, ours, EF's)
are neither. Every check is read-only: the database is opened read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import apsw

from .. import ef
from ..engines.sqlite import files as sqlitefile, wal
from .backup import backups_of, check_backup, read_manifest
from .migrate import migration_statuses
from ..context import Context
from ..engines.sqlite.copying import integrity_pragma
from ..engines.sqlite.database import Database, quote, translated
from ..engines.runner import HISTORY_TABLES, AppliedRecord, applied_migrations, replay
from ..engines import driver_of
from ..engines.base import Integrity
from ..errors import DatabaseCorrupt, DatabaseUnavailable, MigrationFailed, UsageError
from ..files.paths import require_sqlite
from ..schema import diff

MAX_LINES = 10  # of one PRAGMA's complaints; the rest are counted


@dataclass
class Check:
    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class Drift:
    differences: list[str]
    managed_tables: list[str]
    unmanaged_tables: list[str]


@dataclass
class VerifyReport:
    database: str
    ok: bool
    integrity_pragma: str  # quick_check, or integrity_check with --full
    checks: list[Check]
    problems: list[str]  # every check's problems, "check: problem"
    notes: list[str]  # worth knowing, not a problem
    yoyo_history: list[str]
    ef_history: list[ef.EfEntry] | None  # None: no __EFMigrationsHistory table
    managed_tables: list[str]
    unmanaged_tables: list[str]


def verify(ctx: Context, full: bool = False) -> VerifyReport:
    migrations = ctx.migrations()
    if ctx.engine == "sqlite":
        require_sqlite(ctx.database)  # an empty file would pass every check
        _refuse_truncated(ctx.database)
    with (ctx.connect(readonly=True) as db, translated(ctx.database, "verifying"),
          db.check_transaction("verifying")):
        applied = applied_migrations(db)
        ef_history = ef.entries(db)
        found = Drift([], [], [])

        def drift_check():
            nonlocal found
            found = drift(db, migrations, set(applied))
            return found.differences

        # Drift first: it names the managed tables, the only ones the engine's checks look at.
        drifted = _check("drift", drift_check)
        integrity = _answer(lambda: db.integrity(full, found.managed_tables),
                            lambda why: Integrity(integrity_pragma(full), [why]))
        checks = [
            Check("integrity", not integrity.problems, integrity.problems),
            _check("foreign_keys", lambda: db.foreign_key_problems(found.managed_tables)),
            _check("migration_files", lambda: file_problems(migrations, applied)),
            drifted,
            _check("ef_history",
                   lambda: ef.disagreements(ef_history, set(applied), ef.rules(db))),
        ]
    if ctx.engine == "sqlite":  # what the -wal holds that SQLite does not read
        checks.append(_check("wal", lambda: wal.problems(ctx.database)))
    problems = [f"{c.name}: {p}" for c in checks for p in c.problems]
    notes = [f"integrity: n/a: {integrity.note}"] if integrity.note else []
    return VerifyReport(
        database=ctx.display, ok=not problems,
        integrity_pragma=integrity.method, checks=checks, problems=problems,
        notes=notes + [f"{mid}: no checksum recorded when applied; cannot tell whether its "
                       "files changed" for mid, rec in applied.items() if rec.forward_sha256 is None],
        yoyo_history=list(applied), ef_history=ef_history,
        managed_tables=found.managed_tables, unmanaged_tables=found.unmanaged_tables,
    )


def _refuse_truncated(path) -> None:
    """A file shorter than its header says has lost its last pages: named, not half-checked."""
    cut = sqlitefile.truncation(path)
    if cut:
        raise DatabaseCorrupt(f"{path}: {cut}: its last pages are missing; run "
                              "`orchestra-schema recover` (or restore a backup)", cut)


def _answer(run, failed):
    """run(); a database too damaged to answer (or SQL that no longer replays)
    gives failed(error) as the answer instead of a crash. Locks still raise (exit 3)."""
    try:
        return run()
    except (apsw.BusyError, apsw.LockedError):
        raise
    except (apsw.Error, DatabaseUnavailable, MigrationFailed) as err:
        return failed(f"could not check: {err}")


def _check(name: str, run) -> Check:
    problems = _answer(run, lambda why: [why])
    return Check(name, not problems, problems)


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


def file_problems(migrations, applied: dict[str, AppliedRecord]) -> list[str]:
    """Files changed since applied, missing, without rollback, or pending out of order."""
    by_id = {m.id: m for m in migrations}
    newest = max(applied, default="")
    out = []
    for s in migration_statuses(migrations, applied):
        m = by_id.get(s.id)
        if not s.in_sql_dir:
            out.append(f"{s.id}: applied but missing from the sql dir")
        if s.forward_matches is False:
            out.append(f"{s.id}: {m.path} changed since it was applied (SHA-256 differs)")
        if s.rollback_matches is False:
            out.append(f"{s.id}: rollback file {m.rollback_path or '(now missing)'} "
                       "changed since it was applied (SHA-256 differs)")
        if m and not m.has_rollback:
            out.append(f"{s.id}: no rollback file {m.path.stem}.rollback.sql")
        if not s.applied and s.id < newest:
            out.append(f"{s.id}: pending but older than the newest applied migration {newest}")
    return out


def drift(db, migrations, applied: set[str], ignore=()) -> Drift:
    """The managed tables' schema against what the applied migrations produce.

    Managed: every table some migration in the sql dir creates, minus `ignore`.
    db: an SQLite Database or any engine's Driver (its replay: SQLite in memory,
    PostgreSQL in a scratch schema that is rolled back).
    """
    driver = driver_of(db)
    expected = driver.replay([m for m in migrations if m.id in applied])
    created = driver.replay(migrations).created
    managed = set().union(expected.schema.tables, *created.values()) - set(ignore)
    actual = driver.snapshot().restricted_to(managed)
    unmanaged = driver.table_names() - managed - HISTORY_TABLES - {ef.TABLE} - set(ignore)
    return Drift(diff(expected.schema.restricted_to(managed), actual),
                 sorted(managed), sorted(unmanaged))


# ---- checklist: the procedure's Validation Checklist, after rolling back the chat tables

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "n/a"


@dataclass
class Item:
    name: str
    status: str  # pass, fail, or n/a (cannot apply here; detail says why)
    detail: str


@dataclass
class ChecklistReport:
    database: str
    ok: bool  # no item failed
    items: list[Item]


def checklist(ctx: Context, full: bool = False) -> ChecklistReport:
    migrations = ctx.migrations()
    if ctx.engine == "sqlite":
        require_sqlite(ctx.database)  # an empty file would pass every check
        _refuse_truncated(ctx.database)
    with (ctx.connect(readonly=True) as db, translated(ctx.database, "running the checklist"),
          db.check_transaction("running the checklist")):
        chat = ef.rules(db).chat
        if chat not in {m.id for m in migrations}:
            raise UsageError(f"{chat} is not in the sql dir; the checklist is for its rollback; "
                             "check --sql-dir")
        applied = applied_migrations(db)
        created = replay(migrations, db).created
        chat_tables = created[chat]
        others = sorted(set().union(*created.values()) - set(chat_tables))
        integrity = db.integrity(full, sorted(set(others) & db.table_names()))
        items = [
            _item(f"{chat} absent from yoyo's history",
                  lambda: _absent_from_yoyo(applied, chat)),
            _item(f"{chat} absent from {ef.TABLE}", lambda: _absent_from_ef(db, chat)),
            *[_item(f"table {t} does not exist", lambda t=t: _table_absent(db, t))
              for t in chat_tables],
            _item("every other managed table present and matching its history",
                  lambda: _others_match(db, migrations, applied, chat, chat_tables)),
            _item(_integrity_name(integrity), lambda: _integrity_item(integrity)),
            _item("a backup taken before the rollback exists and matches its manifest",
                  lambda: _backup_item(db, ctx, chat, full)),
        ]
    return ChecklistReport(ctx.display, all(i.status != FAIL for i in items), items)


def _item(name: str, run) -> Item:
    return Item(name, *_answer(run, lambda why: (FAIL, why)))


def _absent_from_yoyo(applied: dict[str, AppliedRecord], chat: str):
    if chat in applied:
        return FAIL, f"still applied (since {applied[chat].applied_at})"
    return PASS, "not in _yoyo_migration"


def _absent_from_ef(db, chat: str):
    found = ef.entries(db)
    if found is None:
        return NOT_APPLICABLE, (f"no {ef.TABLE} table: EF Core lists nothing as applied "
                                "(`verify` says whether it should)")
    standing = [e for e, needed in ef.rules(db).stands_for.items() if chat in needed]
    listed = sorted(ef.ids(found) & set(standing))
    if listed:
        return FAIL, (f"still lists {', '.join(listed)}: the EF app believes the chat tables "
                      "exist")
    return PASS, f"not in {ef.TABLE}"


def _table_absent(db, table: str):
    if table in db.table_names():
        return FAIL, f"exists with {db.row_count(table)} row(s)"
    return PASS, "absent"


def _others_match(db, migrations, applied, chat: str, chat_tables):
    others = [m.id for m in migrations if m.id in applied and m.id != chat]
    if not others:
        return NOT_APPLICABLE, "no other migration is applied"
    found = drift(db, migrations, set(applied), ignore=chat_tables)
    if found.differences:
        return FAIL, "; ".join(found.differences)
    return PASS, f"{len(found.managed_tables)} tables match {', '.join(others)}"


def _integrity_name(integrity: Integrity) -> str:
    if integrity.method in ("quick_check", "integrity_check"):
        return f"database passes PRAGMA {integrity.method}"
    return f"database passes {integrity.method if integrity.note is None else 'amcheck'}"


def _integrity_item(integrity: Integrity):
    if integrity.note:
        return NOT_APPLICABLE, integrity.note
    return (FAIL, "; ".join(integrity.problems)) if integrity.problems else (PASS, "ok")


def last_rollback(db, migration_id: str) -> str | None:
    """When migration_id was last rolled back (UTC, from yoyo's log), if ever."""
    return max((at for op, at in driver_of(db).yoyo_log(migration_id) if op == "rollback"),
               default=None)


def last_applied(db, migration_id: str, before: str) -> str | None:
    """When migration_id was last applied or recorded (adopt) before a time, from yoyo's log."""
    return max((at for op, at in driver_of(db).yoyo_log(migration_id)
                if op in ("apply", "mark") and _as_utc(at) <= _as_utc(before)), default=None)


def _backup_item(db, ctx: Context, chat: str, full: bool):
    """The newest backup taken at or before the chat rollback still matches its manifest."""
    when = last_rollback(db, chat)
    if when is None:
        return NOT_APPLICABLE, f"no rollback of {chat} recorded in _yoyo_log"
    rolled_back = _as_utc(when)
    # It must hold the chat rows: taken after the chat tables were last applied.
    applied = last_applied(db, chat, before=when)
    since = _as_utc(applied) if applied else datetime.min.replace(tzinfo=timezone.utc)
    places, found, check_one, passes = _backups(ctx, full)
    taken = sorted((p for p in found
                    if _taken_at(p) is not None and since <= _taken_at(p) <= rolled_back),
                   key=_taken_at)
    if not taken:
        return FAIL, (f"no backup with a manifest in {' or '.join(map(str, places))} taken "
                      f"between {chat}'s last apply and its "
                      f"rollback at {rolled_back:%Y-%m-%dT%H:%M:%SZ}; "
                      "restore is not possible from this tool's backups")
    check = check_one(taken[-1])
    if not check.ok:
        return FAIL, f"{taken[-1]}: {'; '.join(check.problems)}"
    return PASS, f"{taken[-1]} matches its manifest and passes {passes}"


def _backups(ctx: Context, full: bool):
    """Where this database's backups are looked for, those found, how to check one, and
    what that check is called."""
    if ctx.engine == "postgresql":
        from ..engines.postgresql import archive as pgarchive
        return ([ctx.backups], pgarchive.backups_of(ctx.database, ctx.backups),
                lambda p: pgarchive.check_archive(ctx.database, p, read_all=full),
                pgarchive.CHECKS[full])
    # The backup directory, and beside the database (where backups went before it was set).
    places = list(dict.fromkeys(p.resolve() for p in (ctx.backups, ctx.database.parent)))
    return (places, [p for place in places for p in backups_of(ctx.database, place)],
            lambda p: check_backup(p, full=full), integrity_pragma(full))


def _taken_at(backup_path) -> datetime | None:
    try:
        manifest = read_manifest(backup_path)
    except ValueError:
        return None
    return _as_utc(manifest["created_at"]) if manifest and manifest.get("created_at") else None


def _as_utc(stamp: str) -> datetime:
    """yoyo logs naive UTC; manifests carry an offset: compare them as aware UTC times."""
    parsed = datetime.fromisoformat(str(stamp))
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
