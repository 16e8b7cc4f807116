"""One plain function per migration command; each returns data and never prints."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from .. import ef, engines
from .. import migrations as mig
from ..context import Context
from ..engines import AppliedRecord, Driver
from ..errors import OrchestraError, Refused, UsageError

# apply and rollback import engine (and the driver's yoyo side) when they run; status
# needs neither, nor backup (apsw's copying): it reads the history through the driver.


@dataclass
class MigrationStatus:
    id: str
    applied: bool
    applied_at: str | None
    has_rollback: bool
    in_sql_dir: bool
    forward_matches: bool | None  # None: no checksum recorded, or not applied
    rollback_matches: bool | None
    # a `-- transactional: false` migration stopped part way: "partly applied: statement 2
    # of 3 done" (the next apply, or rollback, resumes it)
    partly: str | None = None


@dataclass
class StatusReport:
    database: str
    migrations: list[MigrationStatus]
    ef_history: list[ef.EfEntry] | None = None  # None: no __EFMigrationsHistory table
    notes: list[str] = field(default_factory=list)


def _migration_status(mid: str, m: mig.MigrationFile | None, rec: AppliedRecord | None):
    # Matches are None (unknown) unless applied, on disk, and checksummed when applied.
    comparable = bool(m and rec and rec.forward_sha256)
    return MigrationStatus(
        id=mid,
        applied=rec is not None,
        applied_at=_utc(rec.applied_at) if rec else None,
        has_rollback=bool(m and m.has_rollback),
        in_sql_dir=m is not None,
        forward_matches=rec.forward_sha256 == m.forward_sha256 if comparable else None,
        rollback_matches=rec.rollback_sha256 == m.rollback_sha256 if comparable else None,
    )


def _utc(stored: str | None) -> str | None:
    """yoyo stores naive UTC; say so: ISO 8601 with Z."""
    if not stored:
        return None
    return datetime.fromisoformat(str(stored)).strftime("%Y-%m-%dT%H:%M:%SZ")


def migration_statuses(migrations, applied: dict[str, AppliedRecord],
                       progress=None) -> list[MigrationStatus]:
    """Every migration in the sql dir, then applied ones the sql dir lacks."""
    rows = [_migration_status(m.id, m, applied.get(m.id)) for m in migrations]
    known = {m.id for m in migrations}
    rows += [_migration_status(mid, None, rec) for mid, rec in applied.items() if mid not in known]
    for row in rows:
        row.partly = partly((progress or {}).get(row.id))
    return rows


def partly(p) -> str | None:
    """How far a non-transactional migration got (an engines.base.Progress), in words."""
    if p is None:
        return None
    past = "applied" if p.operation == "apply" else "rolled back"
    done = (f"statement {p.done} of {p.total} done" if p.done
            else f"none of its {p.total} statement(s) done, the first stopped part way")
    return f"partly {past}: {done}; run `orchestra-schema {p.operation}` again to resume"


def status(ctx: Context) -> StatusReport:
    migrations = ctx.migrations()
    with ctx.connect(readonly=True) as db:
        applied, progress = db.applied(), db.progress()
        ef_history = ef.entries(db)
        out_of_step = ef.disagreements(ef_history, set(applied), ef.rules(db)) if applied else []
    report = StatusReport(database=ctx.display,
                          migrations=migration_statuses(migrations, applied, progress),
                          ef_history=ef_history, notes=out_of_step)
    if engines.of(ctx.engine).empty_file(ctx):
        # SQLite takes an empty file for an empty database: every migration is
        # pending, which is true, but the file may be a database cut to nothing.
        report.notes.append("empty file (0 bytes): SQLite reads it as an empty database, so "
                            "nothing is applied; if it held data, restore it from a backup")
    return report


@dataclass
class ApplyResult:
    database: str
    created: bool
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # applied meanwhile by another run
    sql: str | None = None  # dry run only
    ef_history: list[str] = field(default_factory=list)  # rows added to/removed from EF's


def apply(ctx: Context, to: str | None = None, dry_run: bool = False,
          review: Callable[[list, list], None] | None = None) -> ApplyResult:
    """review(migrations, plan), if given, sees the plan before anything runs (lint)."""
    from ..engines.runner import apply_one, bring_ef_in_step
    migrations = ctx.migrations()
    mig.resolve_target(to, migrations)  # an unknown --to fails before any file is touched
    exists = ctx.exists()
    result = ApplyResult(database=ctx.display, created=not exists)
    if dry_run or review:
        with contextlib.ExitStack() as stack:  # a look at the history; no lock is held
            db = stack.enter_context(ctx.connect(readonly=True)) if exists else None
            applied = set(db.applied()) if db else set()
            if db:
                ef.refuse_unadopted(db, applied)
            plan = mig.plan_apply(migrations, applied, to)
            if review:  # before the write connection plans again: lint's time is not in that window
                review(migrations, plan)
            if dry_run:
                result.ef_history = ef.planned(ef.entries(db) if db else None,
                                               applied | {m.id for m in plan},
                                               ef.RULES[ctx.engine])
        if dry_run:
            result.sql = mig.dry_run_sql(plan, "apply", engines.of(ctx.engine).step_note) + \
                ef.as_sql_comment(result.ef_history, "apply")
            return result
    try:
        with ctx.connect(create=True) as db:
            applied = set(db.applied())
            ef.refuse_unadopted(db, applied)
            ef_before = ef.entries(db)
            for m in mig.plan_apply(migrations, applied, to):
                (result.applied if apply_one(db, m) else result.skipped).append(m.id)
            bring_ef_in_step(db)  # up to date, or made by an older version without EF's table
            result.ef_history = ef.changes(ef_before, ef.entries(db))
    except BaseException:  # Ctrl-C and unmapped errors too, not only the tool's own
        if result.created and ctx.exists() and ctx.database.stat().st_size == 0:
            ctx.database.unlink()  # "nothing changed": not even an empty file for the app to find
        raise
    return result


@dataclass
class RollbackResult:
    database: str
    rolled_back: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # Tables whose rows the rollback deletes -> how many; None: not counted (exact_counts=False)
    rows_lost: dict[str, int | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sql: str | None = None
    ef_history: list[str] = field(default_factory=list)  # rows added to/removed from EF's
    backup: Path | None = None  # made by `backup` before the first change


def rollback(ctx: Context, to: str | None = None, dry_run: bool = False, yes: bool = False,
             confirm: Callable[[dict[str, int]], bool] | None = None,
             backup: Callable[[], Path] | None = None,
             secure_delete: bool = False, only: str | None = None,
             exact_counts: bool = True) -> RollbackResult:
    """Roll back every applied migration not needed by `to` ('0': all), or with `only`,
    that migration and the applied ones that depend on it, nothing else.

    Refuses (exit 5) when a rollback file is missing or changed since it was
    applied, or when rows would be lost and neither --yes nor confirm() agrees.
    backup() is called, once something will really be rolled back, before the
    first change; it returns the backup's path (and fails the rollback if it fails).
    secure_delete: SQLite overwrites the freed pages with zeros, so dropped rows
    cannot be read back from the file (slower: it writes every freed page).
    exact_counts=False: with --yes, rows_lost names the tables that hold rows (value None)
    without counting them, for a caller that shows no numbers; a dry run, a question or a
    refusal always counts exactly.
    """
    from ..engines.runner import rollback_one, tables_losing_rows
    migrations = ctx.migrations()
    if (to is None) == (only is None):
        raise UsageError("rollback needs exactly one of --to ID|0 and --only ID")
    if only is None:
        mig.resolve_target(to, migrations)  # an unknown id fails before anything is opened
    else:
        mig.dependents(only, migrations)
    if secure_delete and not engines.of(ctx.engine).secure_delete:
        raise UsageError("--secure-delete is for SQLite files; PostgreSQL's DROP TABLE "
                         "removes the table's files; nothing changed")
    result = RollbackResult(database=ctx.display)
    with ctx.connect(readonly=dry_run) as db:
        # The plan and the rows it puts at risk from one state of the database: read apart,
        # another run's rollback in between left a table in the plan but not in the file.
        with db.read_transaction("planning the rollback"):
            applied = db.applied()
            plan = (mig.plan_rollback(migrations, set(applied), to) if only is None
                    else mig.plan_rollback_only(migrations, set(applied), only))
            result.warnings = check_rollback_safe(plan, applied, {m.id for m in migrations})
            statements = [s for m in plan for s in m.rollback_statements]
            holding = db.tables_with_rows(tables_losing_rows(db, statements))
            result.rows_lost = _rows_at_risk(db, holding, exact_counts or dry_run or not yes)
        if dry_run:
            result.ef_history = ef.planned(ef.entries(db), set(applied) - {m.id for m in plan},
                                           ef.rules(db))
            result.sql = mig.dry_run_sql(plan, "rollback", engines.of(ctx.engine).step_note) + \
                ef.as_sql_comment(result.ef_history, "rollback")
            return result
        if secure_delete:
            db.db.execute("PRAGMA secure_delete = ON")
        if result.rows_lost and not yes and not (confirm and confirm(result.rows_lost)):
            lost = ", ".join(f"{t} {n}" for t, n in result.rows_lost.items())
            raise Refused(
                f"{ctx.display}: rollback would delete rows ({lost}); nothing changed; "
                "rerun with --yes to accept the loss; a backup is taken first unless --no-backup"
            )
        ef_before = ef.entries(db)
        if plan and backup is not None:
            result.backup = backup()
        try:
            for m in plan:
                dependents = [d.id for d in migrations if m.id in d.depends]
                (result.rolled_back if rollback_one(db, m, dependents) else result.skipped).append(m.id)
        except OrchestraError as err:
            _settle_backup(result, err)
            raise
        result.ef_history = ef.changes(ef_before, ef.entries(db))
    return result


def _rows_at_risk(db: Driver, holding: list[str], exact: bool) -> dict[str, int | None]:
    """Exact counts only where someone reads them: counting every row of a big table
    (COUNT(*) reads all of it) would cost more than the DROP TABLE it warns about."""
    return {t: db.row_count(t) if exact else None for t in holding}


def _settle_backup(result: RollbackResult, err: OrchestraError) -> None:
    """A rollback stopped after its backup: dropped if nothing changed, else named
    (backup.settle). err.result carries the result for --json."""
    from ..files.backups import settle
    result.backup = settle(result.backup, err, changed=bool(result.rolled_back))
    err.result = result


def check_rollback_safe(plan, applied: dict[str, AppliedRecord], known: set[str]) -> list[str]:
    unknown = [mid for mid in applied if mid not in known]
    if unknown:
        raise Refused(
            f"history lists applied migration(s) {', '.join(unknown)} that the sql dir lacks; "
            "nothing changed; use the sql dir they came from (--sql-dir)"
        )
    warnings = []
    for m in plan:
        if not m.has_rollback:
            raise Refused(
                f"{m.id}: no rollback file {m.path.stem}.rollback.sql; nothing changed; "
                "write one (stock yoyo would record the rollback and leave the tables)"
            )
        recorded = applied[m.id].rollback_sha256
        if applied[m.id].forward_sha256 is None:
            warnings.append(f"{m.id}: no checksum recorded when applied; cannot tell "
                            "whether its rollback file changed since")
        elif recorded != m.rollback_sha256:
            raise Refused(
                f"{m.rollback_path}: changed since {m.id} was applied (SHA-256 differs); "
                "nothing changed; restore the file as applied (git) or review the change"
            )
    return warnings


def new(ctx: Context, name: str) -> tuple[Path, Path]:
    if ctx.sql_dir is None and mig.installed_sql_dir(ctx.engine):
        raise UsageError(f"{mig.default_sql_dir(ctx.engine)}: the SQL installed with the package "
                         "is not for editing; give --sql-dir DIR (your checkout's sql/)")
    return mig.new_pair(ctx.sql_dir or mig.default_sql_dir(ctx.engine), name)
