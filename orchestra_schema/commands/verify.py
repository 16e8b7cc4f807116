"""verify and checklist: is the database sound, and does it match its history?

Drift compares the live schema of the tables the migrations create with what
the applied migrations produce when replayed into an empty in-memory database,
structurally (schema.diff). Tables no migration creates (Hangfire's) are not
drift; they are listed as unmanaged. The history tables (yoyo's, ours, EF's)
are neither. Every check is read-only: the database is opened read-only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import ef, engines
from ..context import Context
from ..engines import driver_of
from ..engines.base import Integrity
from ..engines.drift import Drift, drift
from ..engines.runner import AppliedRecord, applied_migrations, replay
from ..errors import DatabaseUnavailable, MigrationFailed, UsageError
from ..files.backups import read_manifest
from .migrate import migration_statuses

MAX_LINES = 10  # of one PRAGMA's complaints; the rest are counted


@dataclass
class Check:
    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)


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


@contextlib.contextmanager
def _checking(ctx: Context, doing: str):
    """(engine, driver) in one read transaction of the database verify and checklist look at,
    once the engine has refused a database every check would wrongly pass (an empty file)."""
    engine = engines.of(ctx.engine)
    engine.before_checks(ctx)
    with (ctx.connect(readonly=True) as db, engine.translated(ctx, doing),
          db.check_transaction(doing)):
        yield engine, db


def verify(ctx: Context, full: bool = False) -> VerifyReport:
    migrations = ctx.migrations()
    with _checking(ctx, "verifying") as (engine, db):
        applied = applied_migrations(db)
        ef_history = ef.entries(db)
        found = Drift([], [], [])

        def drift_check():
            nonlocal found
            found = drift(db, migrations, set(applied))
            return found.differences

        # Drift first: it names the managed tables, the only ones the engine's checks look at.
        drifted = _check(engine, "drift", drift_check)
        integrity = _answer(engine, lambda: db.integrity(full, found.managed_tables),
                            lambda why: Integrity(engine.integrity_method(full), [why]))
        checks = [
            Check("integrity", not integrity.problems, integrity.problems),
            _check(engine, "foreign_keys",
                   lambda: db.foreign_key_problems(found.managed_tables)),
            _check(engine, "migration_files",
                   lambda: file_problems(migrations, applied, db.progress())),
            drifted,
            _check(engine, "ef_history",
                   lambda: ef.disagreements(ef_history, set(applied), ef.rules(db))),
        ]
    checks += [_check(engine, name, run) for name, run in engine.file_checks(ctx)]
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


def _answer(engine, run, failed):
    """run(); a database too damaged to answer (or SQL that no longer replays)
    gives failed(error) as the answer instead of a crash. Locks still raise (exit 3)."""
    try:
        return run()
    except (DatabaseUnavailable, MigrationFailed) + engine.check_errors as err:
        if isinstance(err, engine.busy_errors):
            raise
        return failed(f"could not check: {err}")


def _check(engine, name: str, run) -> Check:
    problems = _answer(engine, run, lambda why: [why])
    return Check(name, not problems, problems)


def file_problems(migrations, applied: dict[str, AppliedRecord], progress=None) -> list[str]:
    """Files changed since applied, missing, without rollback, pending out of order, or
    stopped part way (a `-- transactional: false` migration)."""
    by_id = {m.id: m for m in migrations}
    newest = max(applied, default="")
    out = []
    for s in migration_statuses(migrations, applied, progress):
        if s.partly:
            out.append(f"{s.id}: {s.partly}")
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
    with _checking(ctx, "running the checklist") as (engine, db):
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
            _item(engine, f"{chat} absent from yoyo's history",
                  lambda: _absent_from_yoyo(applied, chat)),
            _item(engine, f"{chat} absent from {ef.TABLE}", lambda: _absent_from_ef(db, chat)),
            *[_item(engine, f"table {t} does not exist", lambda t=t: _table_absent(db, t))
              for t in chat_tables],
            _item(engine, "every other managed table present and matching its history",
                  lambda: _others_match(db, migrations, applied, chat, chat_tables)),
            _item(engine, _integrity_name(integrity), lambda: _integrity_item(integrity)),
            _item(engine, "a backup taken before the rollback exists and matches its manifest",
                  lambda: _backup_item(db, ctx, chat, full)),
        ]
    return ChecklistReport(ctx.display, all(i.status != FAIL for i in items), items)


def _item(engine, name: str, run) -> Item:
    return Item(name, *_answer(engine, run, lambda why: (FAIL, why)))


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
    return engines.of(ctx.engine).backups(ctx, full)


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
