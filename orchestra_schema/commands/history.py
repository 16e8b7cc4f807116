"""Changing the migration histories without touching the schema: adopt, forget.

`adopt` records the migrations as applied on a database EF Core made, once
its schema is proved to be what they produce; `history forget` is the
procedure's "Reset migrations table" without hand-typed SQL. Both take a
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
from ..context import Context
from ..engines.runner import applied_migrations, forget_applied, record_applied
from ..engines import Driver, driver_of
from ..errors import OrchestraError, Refused, UsageError
from ..engines.drift import drift

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
