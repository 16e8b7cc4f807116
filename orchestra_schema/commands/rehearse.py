"""rehearse: the procedure's "Testing Rollback Procedure" without the hand-made copy.

An online snapshot of the live database: by default a view of the live file,
held still by SQLite's locks, whose changed pages go to a temporary file
(overlay); else a copy through SQLite's backup API, to a temporary file or to
memory (engines/sqlite/rehearsal.py). PostgreSQL: the live database inside one
transaction that is always rolled back. On the snapshot the real engine rolls back to the target, the result
is checked, the migrations are applied again, and the schema must be what it
was. Nothing runs on the live database but reads (and, in WAL mode, the
checkpoint that holds it still).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import ef, engines
from .. import migrations as mig
from ..context import Context
from ..engines import driver_of
from ..engines.runner import (HISTORY_TABLES, applied_migrations, apply_one, count_rows,
                              dropped_tables, rollback_one, tables_losing_rows)
from ..errors import MigrationFailed, UsageError
from ..schema import diff
from .migrate import check_rollback_safe


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str


@dataclass
class RehearsalReport:
    database: str
    snapshot: str  # "memory", the temporary file (deleted afterwards), or "transaction"
    target: str | None  # --to; None with --only
    snapshot_mode: str = ""  # "overlay", "copy", "memory" or "transaction"; see _snapshot
    rolled_back: list[str] = field(default_factory=list)
    rows_lost: dict[str, int] = field(default_factory=dict)  # per table dropped or deleted from
    warnings: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ok: bool = True
    only: str | None = None  # --only: that migration and what depends on it
    # a `-- transactional: false` migration's statements, one line each: how it runs, its
    # lock, and whether the rehearsal runs it (step_plan)
    plan: list[str] = field(default_factory=list)


def default_target(migrations, chat_id: str) -> str:
    """Keep what the chat migration depends on (the core): roll back the chat tables."""
    chat = next((m for m in migrations if m.id == chat_id), None)
    if chat is None or len(chat.depends) != 1:
        raise UsageError(f"no default target without {chat_id} in the sql dir; give --to ID or 0")
    return chat.depends[0]


def rehearse(ctx: Context, to: str | None = None, memory: bool = False,
             workdir: Path | None = None, only: str | None = None,
             review=None) -> RehearsalReport:
    """review(migrations, plan), if given, sees what will be rolled back and applied again."""
    migrations = ctx.migrations()
    if to is not None and only is not None:
        raise UsageError("rehearse takes --to ID|0 or --only ID, not both")
    engine = engines.of(ctx.engine)
    if to is None and only is None:  # the chat tables alone (PostgreSQL: AgentSessions stays)
        chat = ef.RULES[ctx.engine].chat
        to, only = ((None, chat) if engine.rehearses_chat_alone
                    else (default_target(migrations, chat), None))
    if only is None:
        mig.resolve_target(to, migrations)  # an unknown --to fails before anything is copied
    else:
        mig.dependents(only, migrations)
    report = RehearsalReport(ctx.display, "", to, only=only)
    with engine.rehearsal(ctx, report, memory, workdir) as (snap, seconds, detail):
        report.steps.append(Step("snapshot", seconds, True, detail))
        _rehearse_on(snap, migrations, report, review, engine)
    report.problems = [f"{s.name}: {s.detail}" for s in report.steps if not s.ok]
    report.ok = not report.problems
    return report


def _rehearse_on(snap, migrations, report: RehearsalReport, review=None, engine=None) -> None:
    scratch_errors = engine.scratch_errors if engine else ()
    applied = applied_migrations(snap)
    plan = (mig.plan_rollback(migrations, set(applied), report.target) if report.only is None
            else mig.plan_rollback_only(migrations, set(applied), report.only))
    if review:
        review(migrations, plan)
    # Refused exactly where the real rollback would be.
    report.warnings = check_rollback_safe(plan, applied, {m.id for m in migrations})
    if engine:
        report.plan = step_plan(driver_of(snap), engine, plan)
    if not plan:
        return
    start: dict = {}
    _timed(report, "count rows", lambda: _record_start(snap, start), scratch_errors)
    statements = [s for m in plan for s in m.rollback_statements]
    dropped, losing = dropped_tables(snap, statements), tables_losing_rows(snap, statements)
    # What the real rollback announces (all rows of each table it drops or deletes
    # from); replaced by the loss measured on the snapshot once the rollback ran.
    report.rows_lost = {t: start["counts"][t] for t in losing if t in start["counts"]}
    report.rolled_back = [m.id for m in plan]
    out_of_step = ef.disagreements(ef.entries(driver_of(snap)), set(applied), ef.rules(driver_of(snap)))
    if out_of_step:  # the real rollback and apply would change EF's history too: not rehearsed
        report.steps.append(Step("EF history", 0.0, False, "; ".join(out_of_step)))
        return
    steps = [
        ("rollback", lambda: _run(rollback_one, snap, plan)),
        ("check after rollback",
         lambda: _after_rollback(snap, dropped, losing, start["counts"], report)),
        ("apply again", lambda: _run(apply_one, snap, list(reversed(plan)))),
        ("check after apply", lambda: _after_apply(snap, start["schema"], start["history"])),
    ]
    for name, run in steps:
        if not _timed(report, name, run, scratch_errors):
            break  # later steps would only repeat the failure


def step_plan(driver, engine, plan) -> list[str]:
    """For each `-- transactional: false` migration rolled back (then applied again), each
    statement: how it runs and the lock it holds (the dry run's words), and whether this
    rehearsal runs it."""
    lines = []
    for said, direction, migrations in (("rollback", "rollback", plan),
                                        ("apply again", "apply", reversed(plan))):
        for m in migrations:
            if not m.in_steps(direction):
                continue
            statements = m.side(direction)[0]
            for number, statement in enumerate(statements, 1):
                left_out = (driver.outside_transaction(statement) and not driver.in_steps
                            and not driver.plain_concurrently)
                lines.append(f"{said} {m.id}, statement {number} of {len(statements)}: "
                             f"{engine.step_note(statement)}"
                             + ("; left out of this rehearsal" if left_out else ""))
    return lines


def _record_start(snap, into: dict) -> list[str]:
    """What the rehearsal must find again: schema, row counts, both histories."""
    into.update(schema=driver_of(snap).snapshot(), counts=count_rows(snap, snap.table_names()),
                history=_histories(snap))
    return []


def _timed(report: RehearsalReport, name: str, run, scratch_errors=()) -> bool:
    """Run one step, record its time and outcome; run() returns its problems."""
    start = time.perf_counter()
    try:
        problems = run()
    except MigrationFailed as err:
        if isinstance(err.__cause__, scratch_errors):
            raise  # the snapshot's files failed, not the SQL (Engine.scratch_errors)
        problems = [str(err)]
    ok = not problems
    report.steps.append(Step(name, round(time.perf_counter() - start, 3), ok,
                             "; ".join(problems) if problems else "ok"))
    return ok


def _run(operation, snap, plan) -> list[str]:
    for m in plan:
        operation(snap, m)
    return []


def _after_rollback(snap, dropped, losing, before: dict[str, int],
                    report: RehearsalReport) -> list[str]:
    """Dropped tables are gone; every table the rollback does not drop or delete
    from is there with all its rows. Records the rows each table lost."""
    now = count_rows(snap, snap.table_names())
    report.rows_lost = {t: before[t] - now.get(t, 0) for t in report.rows_lost}
    problems = [f"{t} still exists" for t in dropped if t in now]
    for table, rows in sorted(before.items()):
        if table in losing or table in HISTORY_TABLES or table == ef.TABLE:
            continue
        if table not in now:
            problems.append(f"{table} is gone (not dropped by the rollback file)")
        elif now[table] != rows:
            problems.append(f"{table} has {now[table]} row(s), had {rows}")
    return problems + ef.disagreements(ef.entries(driver_of(snap)), set(applied_migrations(snap)),
                                       ef.rules(driver_of(snap)))


def _after_apply(snap, before_schema, before_history) -> list[str]:
    problems = [f"schema differs from the start: {d}" for d in diff(before_schema, driver_of(snap).snapshot())]
    if _histories(snap) != before_history:
        problems.append(f"histories differ from the start: {_histories(snap)} now, "
                        f"{before_history} before")
    return problems


def _histories(db) -> tuple:
    return sorted(applied_migrations(db)), sorted(ef.ids(ef.entries(driver_of(db))))
