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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import ef
from . import CHECKSUM_TABLE, HISTORY_TABLES, YOYO_TABLES, AppliedRecord, driver_of
from ..errors import Busy

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
    """Apply m and record it (and EF's history), atomically. False if it was already applied."""
    driver = driver_of(db)

    def body():
        applied = driver.applied()
        if m.id in applied:
            return False  # another run applied it while we waited for the lock
        missing = [d for d in m.depends if d not in applied]
        if missing:
            raise HistoryChanged(
                f"{m.id}: not applied: {', '.join(missing)}, which it depends on, was rolled back "
                "meanwhile by another run; nothing more changed; run apply again")
        touched = driver.run_statements(m.id, m.statements, m.path)
        with driver.writing_history(f"{m.id}: could not record it in yoyo's history"):
            driver.record(m, "apply")
        ef.keep_in_step(driver, set(applied) | {m.id})
        driver.check_constraints(m.id, touched)
        return True

    with driver.explaining(m.id):
        return driver.in_transaction(f"applying {m.id}", body)


def rollback_one(db, m: MigrationFile, dependents=()) -> bool:
    """Run m's rollback file and remove its history (and EF's row), atomically.

    dependents: ids of the migrations that depend on m; none may be applied.
    """
    driver = driver_of(db)

    def body():
        applied = driver.applied()
        if m.id not in applied:
            return False  # another run rolled it back while we waited
        on_top = [d for d in dependents if d in applied]
        if on_top:
            raise HistoryChanged(
                f"{m.id}: not rolled back: {', '.join(on_top)}, which depends on it, was applied "
                "meanwhile by another run; nothing more changed; run the rollback again")
        touched = driver.run_statements(m.id, m.rollback_statements, m.rollback_path)
        with driver.writing_history(f"{m.id}: could not remove it from yoyo's history"):
            driver.unrecord(m.id, "rollback")
        ef.keep_in_step(driver, set(applied) - {m.id})
        driver.check_constraints(m.id, touched)
        return True

    with driver.explaining(m.id):
        return driver.in_transaction(f"rolling back {m.id}", body)


def record_applied(db, migrations, check=None) -> list[str]:
    """Record migrations as applied without running them (adopting a database
    whose schema they already describe), in one transaction; returns the ids recorded.

    check(db), if given, runs first under the write lock: raise to record nothing.
    """
    driver = driver_of(db)

    def body():
        if check:
            check(driver)
        already, recorded = driver.applied(), []
        for m in migrations:
            if m.id not in already:
                with driver.writing_history(f"{m.id}: could not record it in yoyo's history",
                                            undone="nothing was recorded"):
                    driver.record(m, "mark")  # yoyo's word for recorded, not run
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
    driver_of(db).run_statements(m.id, m.statements, m.path)


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
