"""One transaction per migration, including its history, on any engine.

Each migration runs in one transaction that also writes yoyo's history rows, our
checksums and EF Core's row: a kill at any instant leaves the database exactly
before or after the migration. The driver (engines/) supplies the transaction,
the lock that keeps runs apart and the history SQL; the rules are here, once.

A run plans before it has the lock, so each migration's dependencies are checked
again under it: a run that finds the history changed under its plan stops (exit 3).

`db` below is a Driver, or an open SQLite Database (wrapped in the SQLite driver).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import ef
from . import CHECKSUM_TABLE, HISTORY_TABLES, YOYO_TABLES, AppliedRecord, driver_of
from .base import Progress
from ..errors import Busy, Refused

if TYPE_CHECKING:  # annotations only: rollback on PostgreSQL never imports apsw's schema.py
    from ..migrations import MigrationFile
    from ..schema import Schema

__all__ = ["CHECKSUM_TABLE", "HISTORY_TABLES", "YOYO_TABLES", "AppliedRecord"]


class HistoryChanged(Busy):
    """Another run changed the history between this run's plan and its turn at the lock."""


def applied_migrations(db) -> dict[str, AppliedRecord]:
    """yoyo's history (with our checksums where recorded), in applied order."""
    return driver_of(db).applied()


def apply_one(db, m: MigrationFile) -> bool:
    """Apply m and record it (and EF's history), atomically. False if it was already applied.
    A `-- transactional: false` migration runs statement by statement (run_in_steps)."""
    driver = driver_of(db)
    if m.in_steps("apply") and driver.in_steps:
        return run_in_steps(driver, m, "apply")

    def body():
        applied = driver.applied()
        if m.id in applied:
            return False  # another run applied it while we waited for the lock
        missing = [d for d in m.depends if d not in applied]
        if missing:
            raise HistoryChanged(
                f"{m.id}: not applied: {', '.join(missing)}, which it depends on, was rolled back "
                "meanwhile by another run; nothing more changed; run apply again")
        touched = driver.run_statements(m.id, driver.in_transaction_forms(m, "apply"),
                                        m.path)
        _write_history(driver, m, "apply", applied)
        driver.check_constraints(m.id, touched)
        return True

    with driver.explaining(m.id):
        return driver.in_transaction(f"applying {m.id}", body)


def rollback_one(db, m: MigrationFile, dependents=()) -> bool:
    """Run m's rollback file and remove its history (and EF's row), atomically.

    dependents: ids of the migrations that depend on m; none may be applied.
    """
    driver = driver_of(db)
    if m.in_steps("rollback") and driver.in_steps:
        return run_in_steps(driver, m, "rollback", dependents)

    def body():
        applied = driver.applied()
        if m.id not in applied:
            return False  # another run rolled it back while we waited
        on_top = [d for d in dependents if d in applied]
        if on_top:
            raise HistoryChanged(
                f"{m.id}: not rolled back: {', '.join(on_top)}, which depends on it, was applied "
                "meanwhile by another run; nothing more changed; run the rollback again")
        touched = driver.run_statements(
            m.id, driver.in_transaction_forms(m, "rollback"), m.rollback_path)
        _write_history(driver, m, "rollback", applied)
        driver.check_constraints(m.id, touched)
        return True

    with driver.explaining(m.id):
        return driver.in_transaction(f"rolling back {m.id}", body)


# ---- `-- transactional: false`: one statement at a time, each recorded as done

def run_in_steps(driver, m: MigrationFile, operation: str, dependents=()) -> bool:
    """Run m's forward (operation "apply") or rollback file one statement at a time: each
    in a transaction of its own with its progress row, or, where the engine cannot run it
    in one (CREATE INDEX CONCURRENTLY), alone with its progress recorded just after. The
    history (yoyo's, checksums, EF's) is written after the last statement, in one
    transaction. A run stopped at any instant is resumed by the next: status shows how far
    it got; an index a killed CONCURRENTLY build left INVALID is dropped and built again.
    False when there was nothing to do."""
    statements, path = m.side(operation)
    total = len(statements)
    driver.lock()  # PostgreSQL: the session lock, on a connection with no transaction open
    done = _steps_done(driver, m, operation, statements, dependents)
    if done is None:
        return False
    if done == 0 and statements and driver.outside_transaction(statements[0]):
        # killed during its first statement (a long CONCURRENTLY build), a run leaves this row:
        # status and verify then say the migration is part way, not merely pending
        driver.set_progress(m.id, Progress(m.id, operation, 0, total, _digest([])))
    for number in range(done + 1, total + 1):
        _step(driver, m, operation, number, statements[number - 1], path,
              Progress(m.id, operation, number, total, _digest(statements[:number])))
    return _finish_steps(driver, m, operation)


def _digest(statements) -> str:
    """What the statements done so far were: those may not change before the rest runs
    (a failed statement after them may be fixed)."""
    return hashlib.sha256("\0".join(statements).encode()).hexdigest()


def _steps_done(driver, m, operation, statements, dependents) -> int | None:
    """How many statements an earlier run did (0: none), under the run lock; None when
    the migration is already where the operation takes it."""
    found = driver.progress().get(m.id)
    if found and found.operation != operation:
        raise Refused(f"{m.id}: partly {_past(found.operation)} ({found.done} of {found.total} "
                      f"statements); nothing changed; run `orchestra-schema {found.operation}` "
                      "again to finish that first")
    if found and found.sha256 != _digest(statements[:found.done]):
        raise Refused(f"{m.id}: {_first(found.done)} of its "
                      f"{'forward' if operation == 'apply' else 'rollback'} file changed since "
                      "they ran; nothing changed; put them back as they were to resume (only "
                      "the statements not yet run may change)")
    applied = driver.applied()
    if found is None and (m.id in applied) == (operation == "apply"):
        return None
    if operation == "apply":
        missing = [d for d in m.depends if d not in applied]
        if missing:
            raise HistoryChanged(f"{m.id}: not applied: {', '.join(missing)}, which it depends "
                                 "on, is not applied (another run rolled it back?); nothing "
                                 "changed; run apply again")
    else:
        on_top = [d for d in dependents if d in applied]
        if on_top:
            raise HistoryChanged(f"{m.id}: not rolled back: {', '.join(on_top)}, which depends "
                                 "on it, is applied; nothing changed")
    return found.done if found else 0


def _step(driver, m, operation, number, statement, path, progress: Progress) -> None:
    """One statement and its progress row; a CONCURRENTLY index statement first looks at
    what an interrupted one left."""
    undone = (f"this statement was undone; {_first(number - 1)} of {progress.total} stay "
              f"done and recorded ({m.id} is partly {_past(operation)}); fix statement {number} "
              f"and run `orchestra-schema {operation}` again to resume there")

    def body():
        # SQLite holds no lock between statements: another run may have gone on meanwhile
        current = driver.progress().get(m.id)
        if (current.done if current else 0) != number - 1 or (
                m.id in driver.applied()) != (operation == "rollback"):
            raise HistoryChanged(f"{m.id}: another run went on with it meanwhile (at statement "
                                 f"{number} of {progress.total}); nothing more changed here; "
                                 f"run `orchestra-schema {operation}` again")
        if not _index_already(driver, statement):
            driver.run_statements(m.id, [statement], path, first=number, undone=undone)
        driver.set_progress(m.id, progress)

    doing = f"{_ing(operation)} {m.id}, statement {number} of {progress.total}"
    try:
        if driver.outside_transaction(statement):
            driver.autocommit(doing, body)
        else:
            driver.in_transaction(doing, body)
    except HistoryChanged:
        raise
    except Busy as err:
        raise Busy(f"{err}; {_first(number - 1)} of {m.id} stay done and recorded; run "
                   f"`orchestra-schema {operation}` again to resume at statement {number}") from None


def _index_already(driver, statement: str) -> bool:
    """True when a CONCURRENTLY index statement has nothing left to do, as if it said IF
    [NOT] EXISTS: the index is there and valid (CREATE), or gone (DROP); a kill after the
    build but before its progress row leaves exactly that. An INVALID index (a build
    killed or timed out part way; PostgreSQL keeps it, unusable, but writes maintain it)
    is dropped first, so CREATE builds it again."""
    found = driver.concurrent_index(statement)
    if found is None:
        return False
    verb, name = found
    state = driver.index_state(name)
    if state == "invalid":
        driver.drop_index(name)
        state = None
    return (state == "valid") == (verb == "create")


def _finish_steps(driver, m, operation) -> bool:
    """The history, after the last statement, in one transaction with the progress row."""
    def body():
        applied = driver.applied()
        if (m.id in applied) == (operation == "apply"):
            return False  # another run finished it meanwhile
        _write_history(driver, m, operation, applied,
                       undone=f"its statements stay done; run {operation} again")
        driver.set_progress(m.id, None)
        return True

    with driver.explaining(m.id):
        return driver.in_transaction(f"recording {m.id}", body)


def _write_history(driver, m, operation: str, applied, undone: str | None = None) -> None:
    """yoyo's row and log entry and our checksums written (apply) or removed (rollback), and
    EF's history kept in step, in the caller's transaction; a refused write fails it (exit 4)."""
    how = {} if undone is None else {"undone": undone}
    if operation == "apply":
        with driver.writing_history(f"{m.id}: could not record it in yoyo's history", **how):
            driver.record(m, "apply")
        ef.keep_in_step(driver, set(applied) | {m.id})
    else:
        with driver.writing_history(f"{m.id}: could not remove it from yoyo's history", **how):
            driver.unrecord(m.id, "rollback")
        ef.keep_in_step(driver, set(applied) - {m.id})


def _first(count: int) -> str:
    """The statements 1 to count, in words."""
    return ("none of the statements" if count == 0 else "statement 1" if count == 1
            else f"statements 1-{count}")


def _past(operation: str) -> str:
    return "applied" if operation == "apply" else "rolled back"


def _ing(operation: str) -> str:
    return "applying" if operation == "apply" else "rolling back"


def record_applied(db, migrations, check=None) -> list[str]:
    """Record migrations as applied without running them (adopting a database
    whose schema they already describe), in one transaction; returns the ids recorded.

    check(db), if given, runs first under the write lock: raise to record nothing.
    """
    driver = driver_of(db)

    def body():
        if check:
            check(driver)
        already, partly, recorded = driver.applied(), driver.progress(), []
        for m in migrations:
            if m.id not in already:
                with driver.writing_history(f"{m.id}: could not record it in yoyo's history",
                                            undone="nothing was recorded"):
                    driver.record(m, "mark")  # yoyo's word for recorded, not run
                    if m.id in partly:  # finished by hand: nothing left to resume
                        driver.set_progress(m.id, None)
                recorded.append(m.id)
        ef.keep_in_step(driver, set(driver.applied()))
        return recorded

    return driver.in_transaction("recording migrations as applied", body)


def bring_ef_in_step(db) -> bool:
    """EF's history made true (its table created if missing) where no migration ran to do
    it, in a transaction of its own; False when it already was."""
    driver = driver_of(db)

    def body():
        if ef.in_step(driver):
            return False
        ef.keep_in_step(driver, set(driver.applied()))
        return True

    return not ef.in_step(driver) and driver.in_transaction(f"writing {ef.TABLE}", body)


def forget_applied(db, migration_id: str, check=None, ef_in_step: bool = False) -> bool:
    """Remove one entry from yoyo's history and our checksums, schema untouched.

    False if the id was not in the history. check(db), if given, runs first under the
    write lock (raise to remove nothing); ef_in_step: EF's history follows (unmark).
    """
    driver = driver_of(db)

    def body():
        if check:
            check(driver)
        if migration_id not in driver.applied():
            return False
        with driver.writing_history(f"{migration_id}: could not remove it from yoyo's history",
                                    undone="nothing was removed"):
            driver.unrecord(migration_id, "unmark")
        if ef_in_step:
            ef.keep_in_step(driver, set(driver.applied()))
        return True

    return driver.in_transaction(f"forgetting {migration_id}", body)


def count_rows(db, tables) -> dict[str, int]:
    driver = driver_of(db)
    existing = driver.table_names()
    return {t: driver.row_count(t) for t in tables if t in existing}


def dropped_tables(db, statements) -> list[str]:
    """Tables the statements would drop (SQLite: its authorizer, compiling them)."""
    return driver_of(db).dropped_tables(statements)


def tables_losing_rows(db, statements) -> list[str]:
    """Tables the statements would drop or delete rows from (DROP TABLE, DELETE)."""
    return driver_of(db).tables_losing_rows(statements)


@dataclass
class Replay:
    schema: Schema  # what the migrations produce on an empty database
    created: dict[str, list[str]]  # migration id -> tables it creates, in order


def run_forward(db, m: MigrationFile) -> None:
    """m's forward statements on db (a scratch database), without history or checks.

    Raises MigrationFailed naming the statement that fails.
    """
    driver = driver_of(db)
    driver.run_statements(m.id, driver.in_transaction_forms(m, "apply", plain=True),
                          m.path)


def replay(migrations, db=None) -> Replay:
    """Run the migrations, in order, on an empty database (SQLite: in memory; with a
    PostgreSQL driver: a scratch schema, rolled back). Raises MigrationFailed naming
    the statement that fails."""
    if db is None:
        from .sqlite.database import Database
        from .sqlite.driver import SqliteDriver
        with Database.in_memory() as scratch:
            return SqliteDriver(scratch).replay(migrations)
    return driver_of(db).replay(migrations)
