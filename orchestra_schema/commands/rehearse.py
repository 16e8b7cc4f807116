"""rehearse: the procedure's "Testing Rollback Procedure" without the hand-made copy.

An online snapshot of the live database: by default a view of the live file,
held still by SQLite's locks, whose changed pages go to a temporary file
(overlay); else a copy through SQLite's backup API, to a temporary file or to
memory. On the snapshot the real engine rolls back to the target, the result
is checked, the migrations are applied again, and the schema must be what it
was. Nothing runs on the live database but reads (and, in WAL mode, the
checkpoint that holds it still).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from .. import ef
from ..engines.sqlite import overlay, rawcopy, files as sqlitefile
from ..files import staging
from .. import migrations as mig
from .migrate import check_rollback_safe
from ..context import Context
from ..engines.sqlite.copying import copy_pages
from ..engines.sqlite.database import Database, translated
from ..engines.runner import (HISTORY_TABLES, applied_migrations, apply_one, count_rows,
                              dropped_tables, rollback_one, tables_losing_rows)
from ..engines import driver_of
from ..errors import DatabaseUnavailable, MigrationFailed, UsageError
from ..schema import diff


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
    if to is None and only is None:  # the chat tables alone (PostgreSQL: AgentSessions stays)
        chat = ef.RULES[ctx.engine].chat
        to, only = ((default_target(migrations, chat), None) if ctx.engine == "sqlite"
                    else (None, chat))
    if only is None:
        mig.resolve_target(to, migrations)  # an unknown --to fails before anything is copied
    else:
        mig.dependents(only, migrations)
    if ctx.engine == "postgresql":
        report = _rehearse_in_transaction(ctx, migrations, to, only, review)
    else:
        report = _rehearse_on_snapshot(ctx, migrations, to, only, memory, workdir, review)
    report.problems = [f"{s.name}: {s.detail}" for s in report.steps if not s.ok]
    report.ok = not report.problems
    return report


def _rehearse_on_snapshot(ctx, migrations, to, only, memory, workdir, review) -> RehearsalReport:
    with ctx.open(readonly=True) as live, _place(live, memory, workdir) as where, \
            contextlib.ExitStack() as stack:
        report = RehearsalReport(str(ctx.database), where, to, only=only)
        start = time.perf_counter()
        with translated(ctx.database, "taking the snapshot"):
            snap = stack.enter_context(_snapshot(live, where, ctx.timeout, report))
        report.steps.append(Step("snapshot", round(time.perf_counter() - start, 3), True, "ok"))
        with translated(Path(where), "rehearsing on the snapshot"), _scratch_errors(where):
            _rehearse_on(snap, migrations, report, review)
    return report


def _rehearse_in_transaction(ctx, migrations, to, only, review) -> RehearsalReport:
    """PostgreSQL: the real rollback and apply on the live database, inside one
    repeatable-read transaction that is always rolled back. The run lock and the
    lock_timeout retries are the migration commands' own (rollback_one, apply_one):
    a table the app holds is waited for at most lock_timeout at a time, until
    --timeout (exit 3). Once the rollback has its locks, the app's queries on the
    tables it drops wait until the rehearsal ends (its checks and the apply again)."""
    report = RehearsalReport(ctx.display, "transaction", to, "transaction", only=only)
    with ctx.connect() as driver:
        start = time.perf_counter()
        driver.lock()
        with driver.check_transaction("rehearsing"):
            report.steps.append(Step("snapshot", round(time.perf_counter() - start, 3), True,
                                     "ok (a transaction, rolled back at the end)"))
            _rehearse_on(driver, migrations, report, review)
    return report


def _rehearse_on(snap, migrations, report: RehearsalReport, review=None) -> None:
    applied = applied_migrations(snap)
    plan = (mig.plan_rollback(migrations, set(applied), report.target) if report.only is None
            else mig.plan_rollback_only(migrations, set(applied), report.only))
    if review:
        review(migrations, plan)
    # Refused exactly where the real rollback would be.
    report.warnings = check_rollback_safe(plan, applied, {m.id for m in migrations})
    if not plan:
        return
    start: dict = {}
    _timed(report, "count rows", lambda: _record_start(snap, start))
    statements = [s for m in plan for s in m.rollback_statements]
    dropped, losing = dropped_tables(snap, statements), tables_losing_rows(snap, statements)
    # What the real rollback announces (all rows of each table it drops or deletes
    # from); replaced by the loss measured on the snapshot once the rollback ran.
    report.rows_lost = {t: start["counts"][t] for t in losing if t in start["counts"]}
    report.rolled_back = [m.id for m in plan]
    out_of_step = ef.disagreements(ef.entries(snap), set(applied), ef.rules(snap))
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
        if not _timed(report, name, run):
            break  # later steps would only repeat the failure


def _record_start(snap: Database, into: dict) -> list[str]:
    """What the rehearsal must find again: schema, row counts, both histories."""
    into.update(schema=driver_of(snap).snapshot(), counts=count_rows(snap, snap.table_names()),
                history=_histories(snap))
    return []


def _timed(report: RehearsalReport, name: str, run) -> bool:
    """Run one step, record its time and outcome; run() returns its problems."""
    start = time.perf_counter()
    try:
        problems = run()
    except MigrationFailed as err:
        if isinstance(err.__cause__, _SCRATCH_FAILURES):
            raise  # the snapshot's files failed, not the SQL: see _scratch_errors
        problems = [str(err)]
    ok = not problems
    report.steps.append(Step(name, round(time.perf_counter() - start, 3), ok,
                             "; ".join(problems) if problems else "ok"))
    return ok


def _run(operation, snap: Database, plan) -> list[str]:
    for m in plan:
        operation(snap, m)
    return []


def _after_rollback(snap: Database, dropped, losing, before: dict[str, int],
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
    return problems + ef.disagreements(ef.entries(snap), set(applied_migrations(snap)),
                                       ef.rules(snap))


def _after_apply(snap: Database, before_schema, before_history) -> list[str]:
    problems = [f"schema differs from the start: {d}" for d in diff(before_schema, driver_of(snap).snapshot())]
    if _histories(snap) != before_history:
        problems.append(f"histories differ from the start: {_histories(snap)} now, "
                        f"{before_history} before")
    return problems


def _histories(db: Database) -> tuple:
    return sorted(applied_migrations(db)), sorted(ef.ids(ef.entries(db)))


# What the snapshot's own files (the view's, its journal) raise when their
# directory is full or out of inodes; not a fault of the SQL.
_SCRATCH_FAILURES = (apsw.IOError, apsw.FullError, apsw.CantOpenError)


@contextlib.contextmanager
def _scratch_errors(where: str):
    """A failure of the snapshot's files: no result to report, one line, exit 6."""
    try:
        yield
    except (apsw.Error, MigrationFailed, DatabaseUnavailable) as err:
        cause = err if isinstance(err, apsw.Error) else err.__cause__
        if not isinstance(cause, _SCRATCH_FAILURES):
            raise
        directory = "memory" if where == "memory" else Path(where).parent.parent
        raise DatabaseUnavailable(
            f"{directory}: cannot write the rehearsal's snapshot ({cause}); the live database is "
            "unchanged; free space there or choose --workdir") from err


@contextlib.contextmanager
def _place(live: Database, memory: bool, workdir: Path | None):
    """Where the snapshot goes: "memory", or a file in a temporary directory removed after."""
    if memory:
        yield "memory"
        return
    if workdir is not None and not Path(workdir).is_dir():
        raise UsageError(f"{workdir}: --workdir is not a directory")
    try:
        directory = Path(tempfile.mkdtemp(prefix="orchestra-rehearse-", dir=workdir))
    except OSError as err:
        raise DatabaseUnavailable(
            f"{workdir or tempfile.gettempdir()}: cannot create the snapshot's directory "
            f"({err.strerror}); the live database is unchanged; choose --workdir") from err
    try:
        yield str(directory / live.path.name)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _snapshot(live: Database, where: str, timeout: float, report: RehearsalReport):
    """The database the rehearsal may change, the live one as of one instant.

    On disk, a view (overlay): the live file, held still for the whole
    rehearsal, with the pages the rehearsal writes kept in the temporary file.
    Where the file cannot be held still, or in memory: a whole copy through
    the backup API (WAL writers carry on, rollback-journal writers commit
    between its steps).
    """
    if where == "memory":
        report.snapshot_mode = "memory"
        with Database.in_memory() as db:
            copy_pages(live.connection, db.connection, None, timeout, incremental=True)
            yield db
        return
    with contextlib.ExitStack() as stack:
        try:
            reader, = stack.enter_context(rawcopy.still_file(
                live.path, readers=1, timeout=timeout, void="the rehearsal's results are void"))
        except rawcopy.Unstable:
            report.snapshot_mode = "copy"
            staging.check_free_space(Path(where).parent, sqlitefile.database_size(live.path))
            db = stack.enter_context(Database.open(Path(where), create=True, timeout=timeout))
            db.execute("PRAGMA synchronous = OFF")  # a throwaway copy: no fsync (3x faster)
            copy_pages(live.connection, db.connection, None, timeout, incremental=True)
            yield db
            return
        report.snapshot_mode = "overlay"
        vfs = stack.enter_context(overlay.view(reader, Path(where)))
        db = stack.enter_context(Database.open(Path(where), create=True, vfs=vfs, timeout=timeout))
        db.execute("PRAGMA synchronous = OFF")  # a throwaway file: no fsync
        yield db
