"""Changing the migration histories without touching the schema: adopt, mark, unmark, forget.

`adopt` records the migrations as applied on a database EF Core made, once
its schema is proved to be what they produce; `mark ID` does the same for one
migration (yoyo's mark, Alembic's stamp), `unmark ID` undoes it, EF's history
kept in step by both; `history forget` is the procedure's "Reset migrations
table" without hand-typed SQL, one row of one history as it is. All take a
backup first (the caller passes how), and change only history rows.

(These live here, not in ef.py, because they need engine, and engine calls
ef.keep_in_step from inside each migration's transaction.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import ef
from .. import migrations as mig
from ..context import Context
from ..engines.runner import applied_migrations, forget_applied, record_applied
from ..engines import Driver, driver_of
from ..errors import OrchestraError, Refused, UsageError
from ..engines.drift import drift, migration_drift

YOYO, EF = "yoyo", "ef"


@dataclass
class AdoptResult:
    database: str
    recorded: list[str]  # migrations recorded as applied, without running them
    already_adopted: bool
    ef_history: list[ef.EfEntry] | None
    backup: Path | None


def adopt(ctx: Context, backup: Callable[[], Path] | None = None) -> AdoptResult:
    """Record the migrations EF Core's history stands for, if the schema is theirs.

    Refuses (exit 5, nothing changed) listing every difference otherwise.
    backup(), if given, runs once adoption is known to be safe, before any write.
    """
    migrations = ctx.migrations()
    with ctx.connect(readonly=True) as db:
        plan = adoption_plan(db, migrations)
        result = AdoptResult(ctx.display, [], not plan, ef.entries(db), None)
    if not plan:
        return result
    result.backup = backup() if backup else None
    with _backup_settled(result.backup), ctx.connect() as db:
        # Checked again under the write lock: the schema cannot change before the commit.
        result.recorded = record_applied(db, plan, check=lambda d: adoption_plan(d, migrations))
        result.ef_history = ef.entries(db)
    return result


@contextlib.contextmanager
def _backup_settled(backup_path: Path | None):
    """The history write is one transaction: when it stops, nothing changed (backup.settle)."""
    try:
        yield
    except OrchestraError as err:
        from ..files.backups import settle
        settle(backup_path, err, changed=False)
        raise


def adoption_plan(db, migrations) -> list:
    """The migrations to record ([] when already adopted); Refused when unsafe.

    EF's history says which: each row it lists stands for migrations here (ef.rules).
    db: a Driver, or an open SQLite Database.
    """
    db = driver_of(db)
    listed, stands_for = ef.ids(ef.entries(db)), ef.rules(db).stands_for
    first = next(iter(stands_for))  # the EF migration that made the tables
    if first not in listed:
        raise Refused(f"{db.display}: {ef.TABLE} does not list {first}, so EF Core did not "
                      "make this schema; nothing changed; adopt is only for EF-made databases")
    unknown = sorted(listed - stands_for.keys())
    if unknown:
        raise Refused(f"{db.display}: {ef.TABLE} also lists {', '.join(unknown)}, which no "
                      "migration here stands for; nothing changed")
    wanted = tuple(m for ef_id in sorted(listed) for m in stands_for[ef_id])
    plan = [m for m in migrations if m.id in wanted]
    if len(plan) != len(wanted):
        lacking = sorted(set(wanted) - {m.id for m in plan})
        raise UsageError(f"the sql dir lacks {', '.join(lacking)}; adopt needs "
                         f"{' and '.join(wanted)}; check --sql-dir")
    applied = applied_migrations(db)
    if set(wanted) <= set(applied):
        return []
    if applied:
        raise Refused(f"{db.display}: already has this tool's history ({', '.join(applied)}); "
                      "nothing changed; adopt only a database without one")
    differences = drift(db, migrations, set(wanted)).differences
    if differences:
        raise Refused(f"{db.display}: schema differs from what {' + '.join(wanted)} produce in "
                      f"{len(differences)} way(s): {'; '.join(differences)}; nothing changed; "
                      "fix the schema (or the SQL), then adopt")
    return plan


@dataclass
class ForgetResult:
    database: str
    migration_id: str
    history: str  # "yoyo" (its entry and our checksum row) or "ef" (__EFMigrationsHistory)
    backup: Path | None


def forget(ctx: Context, migration_id: str, source: str | None = None, yes: bool = False,
           confirm: Callable[[str], bool] | None = None,
           backup: Callable[[], Path] | None = None) -> ForgetResult:
    """Remove one history entry, schema untouched; the id is bound, never spliced.

    backup(), if given, runs after the checks and the confirmation, before the write.
    """
    with ctx.connect(readonly=True) as db:
        source = _which_history(db, migration_id, source)
    question = f"remove {migration_id} from {history_name(source)}"
    if not yes and not (confirm and confirm(question)):
        raise Refused(f"{ctx.display}: would {question}; nothing changed; rerun with --yes")
    backup_path = backup() if backup else None
    with _backup_settled(backup_path), ctx.connect() as db:
        done = forget_applied(db, migration_id) if source == YOYO else ef.delete(db, migration_id)
        if not done:
            raise UsageError(f"{migration_id} left {history_name(source)} meanwhile "
                             "(another run?); nothing changed")
    return ForgetResult(ctx.display, migration_id, source, backup_path)


def _which_history(db: Driver, migration_id: str, source: str | None) -> str:
    histories = ((YOYO, applied_migrations(db)), (EF, ef.ids(ef.entries(db))))
    listed_in = [name for name, ids in histories if migration_id in ids]
    if source is not None and source not in listed_in:
        raise UsageError(f"{migration_id!r} is not in {history_name(source)}; nothing changed; "
                         "`status` lists both histories")
    if not listed_in:
        raise UsageError(f"{migration_id!r} is in neither yoyo's history nor {ef.TABLE}; "
                         "nothing changed; `status` lists both histories")
    if source is None and len(listed_in) > 1:
        raise UsageError(f"{migration_id} is in both yoyo's history and {ef.TABLE}; "
                         "say which with --from yoyo or --from ef; nothing changed")
    return source or listed_in[0]


def history_name(source: str) -> str:
    return "yoyo's history" if source == YOYO else ef.TABLE


@dataclass
class MarkResult:
    database: str
    migration_id: str
    recorded: bool  # False: it was applied already (or meanwhile, by another run)
    differences: list[str]  # where the schema differs, recorded over with --force
    ef_history: list[str]  # rows added to/removed from EF's, in ef.changes' words
    backup: Path | None


def mark(ctx: Context, migration_id: str, force: bool = False,
         backup: Callable[[], Path] | None = None) -> MarkResult:
    """Record one migration as applied without running it, once the live schema is what it
    makes on top of the applied ones; Refused (exit 5) naming every difference otherwise,
    unless force. What it depends on must be applied (yoyo's order holds).

    backup(), if given, runs once marking is known to be safe, before the write.
    """
    migrations = ctx.migrations()
    m = _known(migration_id, migrations)
    result = MarkResult(ctx.display, m.id, False, [], [], None)
    with ctx.connect(readonly=True) as db:
        differences = _mark_check(db, migrations, m, force)
    if differences is None:
        return result
    result.backup = backup() if backup else None

    def check(d: Driver) -> None:  # again under the write lock: no change before the commit
        result.differences = _mark_check(d, migrations, m, force) or []
    result.recorded = _written(result, ctx, check,
                               lambda db, checked: bool(record_applied(db, [m], check=checked)))
    return result


def _known(migration_id: str, migrations) -> mig.MigrationFile:
    found = next((m for m in migrations if m.id == migration_id), None)
    if found is None:
        raise UsageError(f"unknown migration {migration_id!r}: not in the sql dir "
                         f"{migrations[0].path.parent}; nothing changed; `status` lists them "
                         "(check --sql-dir)")
    return found


def _mark_check(db: Driver, migrations, m, force: bool) -> list[str] | None:
    """The differences marking m records over (force), [] when none; None when m is applied."""
    applied = set(applied_migrations(db))
    if m.id in applied:
        return None
    ef.refuse_unadopted(db, applied)
    missing = sorted(mig.ancestors(m.id, {x.id: x for x in migrations}) - {m.id} - applied)
    if missing:
        raise Refused(f"{db.display}: {m.id} depends on {', '.join(missing)}, not applied; "
                      "nothing changed; apply or mark them first (yoyo's order)")
    differences = migration_drift(db, migrations, applied, m.id)
    if differences and not force:
        raise Refused(f"{db.display}: schema differs from what {m.id} makes in "
                      f"{len(differences)} way(s): {'; '.join(differences)}; nothing changed; "
                      "fix the schema (or the SQL), or record it anyway with --force")
    return differences


@dataclass
class UnmarkResult:
    database: str
    migration_id: str
    removed: bool  # False: it was not applied (or was unmarked meanwhile, by another run)
    ef_history: list[str]  # rows removed from (or added to) EF's, in ef.changes' words
    backup: Path | None


def unmark(ctx: Context, migration_id: str, yes: bool = False,
           confirm: Callable[[str], bool] | None = None,
           backup: Callable[[], Path] | None = None) -> UnmarkResult:
    """Forget that one migration is applied, schema untouched: yoyo's history, our checksum
    and the EF row that stands for it. Refused (exit 5) while an applied migration depends on
    it. Asks first, as `history forget` does: yes, or confirm(question) where someone answers.

    backup(), if given, runs after the checks and the confirmation, before the write.
    """
    migrations = ctx.migrations()
    result = UnmarkResult(ctx.display, migration_id, False, [], None)
    with ctx.connect(readonly=True) as db:
        if not _unmark_check(db, migrations, migration_id):
            return result
        ef_after = ef.planned(ef.entries(db), set(db.applied()) - {migration_id}, ef.rules(db))
    question = f"remove {migration_id} from yoyo's history" + (
        f", then {ef.TABLE}: {'; '.join(ef_after)}" if ef_after else "")
    if not yes and not (confirm and confirm(question)):
        raise Refused(f"{ctx.display}: would {question}; nothing changed; rerun with --yes")
    result.backup = backup() if backup else None
    result.removed = _written(
        result, ctx, lambda d: _unmark_check(d, migrations, migration_id),
        lambda db, checked: forget_applied(db, migration_id, check=checked, ef_in_step=True))
    return result


def _unmark_check(db: Driver, migrations, migration_id: str) -> bool:
    """True when migration_id is applied and nothing applied depends on it."""
    applied = applied_migrations(db)
    known = {m.id for m in migrations}
    if migration_id not in known | set(applied):
        raise UsageError(f"unknown migration {migration_id!r}: neither in the sql dir nor in "
                         "yoyo's history; nothing changed; `status` lists them")
    if migration_id not in applied:
        return False
    above = mig.dependents(migration_id, migrations) - {migration_id} if migration_id in known \
        else set()
    on_top = [m.id for m in reversed(migrations) if m.id in above and m.id in applied]
    if on_top:
        one = len(on_top) == 1
        raise Refused(f"{db.display}: {', '.join(on_top)} {'depends' if one else 'depend'} on "
                      f"{migration_id} and {'is' if one else 'are'} applied; nothing changed; "
                      "unmark them first, in that order")
    return True


def _written(result, ctx: Context, check: Callable[[Driver], object],
             write: Callable[[Driver, Callable], bool]) -> bool:
    """mark's or unmark's one transaction, write(db, checked): checked(db) runs check under
    the write lock, and notes EF's history then, so result.ef_history is this run's change.
    The backup is settled if it stops, and dropped when nothing was written (another run did
    it meanwhile): the database is as the backup has it."""
    before = []

    def checked(d: Driver) -> None:
        before.append(ef.entries(d))
        check(d)
    with _backup_settled(result.backup), ctx.connect() as db:
        done = write(db, checked)
        if done:
            result.ef_history = ef.changes(before[-1], ef.entries(db))
    if not done and result.backup is not None:
        from ..files.backups import discard
        discard(result.backup)
        result.backup = None
    return done
