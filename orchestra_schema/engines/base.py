"""The seam between the commands and a database engine (dbmate's Driver as the model).

What a DBA reads about (plans, rows at risk, checksums, refusals, EF's history rule)
is written once above this, in engine.py, ef.py and the command modules; a driver
holds only what differs per engine: connecting, the lock that keeps runs apart, one
transaction per migration, the history tables, row counts and the schema snapshot.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..errors import MigrationFailed

CHECKSUM_TABLE = "_orchestra_schema_checksum"
MIGRATION_TABLE = "_yoyo_migration"  # yoyo.migrations.default_migration_table (a test checks)
YOYO_TABLES = frozenset({MIGRATION_TABLE, "_yoyo_log", "_yoyo_version", "yoyo_lock"})
HISTORY_TABLES = YOYO_TABLES | {CHECKSUM_TABLE}
# Our checksums of both files of each applied migration; {} is the table's (quoted) name.
CREATE_CHECKSUM_TABLE = """
CREATE TABLE IF NOT EXISTS {} (
    migration_hash VARCHAR(64) NOT NULL PRIMARY KEY,
    migration_id TEXT NOT NULL,
    forward_sha256 TEXT NOT NULL,
    rollback_sha256 TEXT,
    applied_at_utc TIMESTAMP NOT NULL
)"""


@dataclass(frozen=True)
class AppliedRecord:
    id: str
    applied_at: str | None
    forward_sha256: str | None
    rollback_sha256: str | None


@dataclass
class Integrity:
    """The engine's integrity check of the managed tables (verify, checklist)."""

    method: str  # quick_check, integrity_check, amcheck, amcheck heapallindexed, or n/a
    problems: list[str] = field(default_factory=list)
    note: str | None = None  # why n/a


class Driver(ABC):
    """One open connection to one database, for one command run."""

    engine: str  # "sqlite" or "postgresql"
    display: str  # where the database is, never with a password
    Error: type = Exception  # the engine library's error class
    busy_errors: tuple = ()  # its errors meaning "locked by another connection": exit 3
    # its errors saying the database cannot be written at all (read-only): exit 6 where they
    # are caught, never "a history write the database refused"
    unavailable_errors: tuple = ()

    # ---- reading

    @abstractmethod
    def table_names(self) -> set[str]:
        """Tables of the schema the migrations manage (SQLite: main; PostgreSQL: current_schema)."""

    @abstractmethod
    def applied(self) -> dict[str, AppliedRecord]:
        """yoyo's history with our checksums where recorded, in applied order."""

    @abstractmethod
    def ef_rows(self) -> list[tuple[str, str]] | None:
        """__EFMigrationsHistory as (MigrationId, ProductVersion) in id order; None without it."""

    @abstractmethod
    def read_transaction(self, doing: str = "reading") -> contextlib.AbstractContextManager:
        """Every read inside sees one state of the database."""

    @abstractmethod
    def row_count(self, table: str) -> int:
        ...

    @abstractmethod
    def tables_with_rows(self, tables) -> list[str]:
        """Those of `tables` (tables_losing_rows' answer) that are managed tables holding at
        least one row: each looked into for one row (row_count would read all of them)."""

    @abstractmethod
    def tables_losing_rows(self, statements) -> list[str]:
        """Managed tables the statements would drop or delete rows from, without running them."""

    def dropped_tables(self, statements) -> list[str]:
        """Managed tables the statements would drop, without running them."""
        raise NotImplementedError

    @abstractmethod
    def snapshot(self):
        """schema.Schema of the managed tables."""

    @abstractmethod
    def replay(self, migrations):
        """engine.Replay: what the migrations make on an empty database (nothing kept)."""

    def check_transaction(self, doing: str = "checking") -> contextlib.AbstractContextManager:
        """verify's and checklist's transaction: one state of the database, in which the
        replay and the integrity check may create scratch objects; never committed."""
        return self.read_transaction(doing)

    def integrity(self, full: bool, tables) -> Integrity:
        """The engine's own check of the stored tables and indexes (full: the thorough one)."""
        raise NotImplementedError

    def foreign_key_problems(self, tables) -> list[str]:
        """Rows of `tables` whose foreign keys point at nothing, where the engine could
        have let them in."""
        raise NotImplementedError

    def yoyo_log(self, migration_id: str) -> list[tuple[str, str]]:
        """yoyo's log of one migration: (operation, created_at_utc as ISO text), oldest first."""
        raise NotImplementedError

    # ---- writing: the body runs inside one transaction per migration

    @abstractmethod
    def in_transaction(self, doing: str, body: Callable[[], object]):
        """Run body() in one transaction with the history tables ensured, after taking the
        lock that keeps runs apart; commit if it returns, roll back if it raises.

        A driver may run body() again in a fresh transaction (PostgreSQL, when a table
        lock was not granted within its lock_timeout); body must only read and write
        through the driver.
        """

    @abstractmethod
    def run_statements(self, migration_id: str, statements, path) -> set[str]:
        """Run them; return the tables they wrote, created, altered or dropped."""

    @abstractmethod
    def check_constraints(self, migration_id: str, touched: set[str]) -> None:
        """Before commit: raise MigrationFailed if the change broke a constraint the
        engine does not check per statement (SQLite's foreign keys)."""

    @abstractmethod
    def record(self, migration, operation: str) -> None:
        """yoyo's history row and log entry, and our checksums of both files."""

    @abstractmethod
    def unrecord(self, migration_id: str, operation: str) -> None:
        ...

    @abstractmethod
    def ef_create(self, ddl: str) -> None:
        """Create __EFMigrationsHistory with ddl (ef.Rules.history_ddl; {} is its name)."""

    @abstractmethod
    def ef_insert(self, migration_id: str, product_version: str) -> None:
        ...

    @abstractmethod
    def ef_delete(self, migration_id: str) -> bool:
        """Remove one EF row (bound as a parameter); False if there was none."""

    @contextlib.contextmanager
    def writing_history(self, what: str,
                        undone: str = "the migration was rolled back with it") -> Iterator[None]:
        """Around a history write inside a transaction (a migration's, or adopt's and
        forget's own): one the database refuses (a trigger, a table not shaped as expected)
        fails it, exit 4; undone says what was rolled back."""
        try:
            yield
        except self.busy_errors + self.unavailable_errors:
            raise
        except self.Error as err:
            raise MigrationFailed(f"{what}: {err}; {undone} and nothing changed") from err

    @contextlib.contextmanager
    def explaining(self, migration_id: str) -> Iterator[None]:
        """Around a migration: a driver may explain a failure better afterwards."""
        yield

    @abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
