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

DEFAULT_TIMEOUT = 10.0  # seconds to wait for another process's lock; the CLI's --timeout default
CHECKSUM_TABLE = "_orchestra_schema_checksum"
MIGRATION_TABLE = "_yoyo_migration"  # yoyo.migrations.default_migration_table (a test checks)
YOYO_TABLES = frozenset({MIGRATION_TABLE, "_yoyo_log", "_yoyo_version", "yoyo_lock"})
# What a failed statement's message says happened, inside one transaction per migration.
UNDONE = "the migration was rolled back and nothing changed; fix the SQL and run again"
PROGRESS_TABLE = "_orchestra_schema_progress"  # how far a non-transactional migration got
HISTORY_TABLES = YOYO_TABLES | {CHECKSUM_TABLE, PROGRESS_TABLE}
# Our checksums of both files of each applied migration; {} is the table's (quoted) name.
CREATE_CHECKSUM_TABLE = """
CREATE TABLE IF NOT EXISTS {} (
    migration_hash VARCHAR(64) NOT NULL PRIMARY KEY,
    migration_id TEXT NOT NULL,
    forward_sha256 TEXT NOT NULL,
    rollback_sha256 TEXT,
    applied_at_utc TIMESTAMP NOT NULL
)"""


# One row per migration part way through `-- transactional: false` statements; {} is its name.
CREATE_PROGRESS_TABLE = """
CREATE TABLE IF NOT EXISTS {} (
    migration_id TEXT NOT NULL PRIMARY KEY,
    operation TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    updated_at_utc TIMESTAMP NOT NULL
)"""


@dataclass(frozen=True)
class Progress:
    """A non-transactional migration stopped part way: `done` of `total` statements of its
    forward (operation "apply") or rollback ("rollback") file ran, that file's sha256."""

    migration_id: str
    operation: str
    done: int
    total: int
    sha256: str


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

    def lock(self) -> None:
        """Hold the lock that keeps runs apart until the connection closes (PostgreSQL's
        session advisory lock); SQLite's is its write lock, taken by each transaction."""

    @abstractmethod
    def in_transaction(self, doing: str, body: Callable[[], object]):
        """Run body() in one transaction with the history tables ensured, after taking the
        lock that keeps runs apart; commit if it returns, roll back if it raises.

        A driver may run body() again in a fresh transaction (PostgreSQL, when a table
        lock was not granted within its lock_timeout); body must only read and write
        through the driver.
        """

    @abstractmethod
    def run_statements(self, migration_id: str, statements, path, first: int = 1,
                       undone: str = UNDONE) -> set[str]:
        """Run them; return the tables they wrote, created, altered or dropped. A failure
        (MigrationFailed) names the statement (numbered from `first`) and says `undone`."""

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

    # ---- a `-- transactional: false` migration, one statement at a time (runner.run_in_steps)

    def progress(self) -> dict[str, Progress]:
        """The migrations stopped part way through their statements ({} without the table)."""
        return {}

    def set_progress(self, migration_id: str, progress: Progress | None) -> None:
        """Record how far a migration got (None: forget it), in the current transaction or,
        outside one, at once; creates the table on first use."""
        raise NotImplementedError

    in_steps = True  # False inside a transaction of the caller's (copy-to's target, rehearse)
    plain_concurrently = True  # there, CONCURRENTLY runs plainly (an empty table); else skipped

    def in_transaction_forms(self, m, direction: str, plain: bool | None = None) -> list[str]:
        """m's statements as one transaction can run them: a `-- transactional: false`
        migration's CONCURRENTLY statements plainly (or left out, listed in self.skipped),
        VACUUM left out. A transactional migration's are run as written."""
        statements = m.side(direction)[0]
        if not m.in_steps(direction):
            return statements
        plain = self.plain_concurrently if plain is None else plain
        out = []
        for number, statement in enumerate(statements, 1):
            form = statement
            if self.outside_transaction(statement):
                form = self.in_transaction_form(statement) if plain else None
            if form is None:
                self.skipped.append(f"{m.id} statement {number}: "
                                    f"{statement.strip().splitlines()[0][:80]}")
            else:
                out.append(form)
        return out

    @property
    def skipped(self) -> list[str]:
        if "_skipped" not in self.__dict__:
            self._skipped: list[str] = []
        return self._skipped

    def in_transaction_form(self, statement: str) -> str | None:
        """What a statement that cannot run in a transaction does inside one (CREATE INDEX
        for CREATE INDEX CONCURRENTLY), or None when it has no such form (VACUUM)."""
        return statement

    def outside_transaction(self, statement: str) -> bool:
        """The statement cannot run inside a transaction block (PostgreSQL: CONCURRENTLY,
        VACUUM): it runs alone, and its progress is recorded just after it."""
        return False

    def autocommit(self, doing: str, body: Callable[[], object]):
        """Run body() outside any transaction, after taking the run lock; each statement
        waits for a table lock at most the engine's short lock_timeout, tried again until
        --timeout (exit 3)."""
        raise NotImplementedError

    def concurrent_index(self, statement: str) -> tuple[str, str] | None:
        """("create" or "drop", index name) for CREATE/DROP INDEX CONCURRENTLY, else None."""
        return None

    def index_state(self, name: str) -> str | None:
        """"valid", "invalid" (a CONCURRENTLY build that did not finish) or None (absent)."""
        return None

    def drop_index(self, name: str) -> None:
        """Drop an index without blocking writes (PostgreSQL: DROP INDEX CONCURRENTLY)."""
        raise NotImplementedError

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


class Engine(ABC):
    """What a command asks of an engine beyond one connection: the commands branch on
    nothing else. Each method imports its engine's modules when called, so `status`
    loads neither the page reader nor pg_dump's archive code."""

    name: str  # "sqlite" or "postgresql"
    restore_check: str  # what checked the database restore put back
    without_manifest: str | None = None  # what a backup without a manifest is trusted on
    secure_delete = False  # rollback --secure-delete means something (SQLite's pages)
    rehearses_chat_alone = False  # rehearse's default: --only the chat migration, not --to

    @abstractmethod
    def connect(self, ctx, *, readonly: bool = False, create: bool = False) -> Driver:
        """One connection to ctx.database, behind the Driver seam."""

    @abstractmethod
    def backup(self, ctx, output, directory, keep, progress, full_check):
        """The backup command's copy and manifest (files.backups.BackupResult)."""

    @abstractmethod
    def restore(self, ctx, backup_path, yes: bool, make_backup: bool, progress):
        """Put a backup back (files.backups.RestoreResult)."""

    @abstractmethod
    def recover(self, ctx, source, yes: bool, progress):
        """Rebuild a damaged database; an engine that recovers by itself refuses (exit 2)."""

    @abstractmethod
    def rehearsal(self, ctx, report, memory: bool, workdir) -> contextlib.AbstractContextManager:
        """Where rehearse may roll back and apply again without changing the live database:
        yields (the database or driver to rehearse on, the snapshot's seconds, what the
        snapshot step says); sets report.snapshot and report.snapshot_mode."""

    scratch_errors: tuple = ()  # the rehearsal's own files failing (not the SQL): exit 6

    @abstractmethod
    def schema_sql(self, migrations, server) -> str:
        """The schema the migrations produce, as the engine writes it."""

    def step_note(self, statement: str) -> str:
        """For --dry-run: how one statement of a `-- transactional: false` migration runs and
        which lock it holds meanwhile."""
        return "in a transaction of its own"

    def empty_file(self, ctx) -> bool:
        """The database is a file cut to nothing (status says so)."""
        return False

    def before_checks(self, ctx) -> None:
        """verify and checklist: refuse a database every check would wrongly pass."""

    def file_checks(self, ctx) -> list[tuple[str, Callable[[], list[str]]]]:
        """verify's checks of the files beside the database: (name, run) pairs."""
        return []

    def translated(self, ctx, doing: str) -> contextlib.AbstractContextManager:
        """Around a check: the engine library's errors as the tool's, naming the database."""
        return contextlib.nullcontext()

    check_errors: tuple = ()  # a check's errors that mean "could not check", not a crash
    busy_errors: tuple = ()  # ... except these: locked by another connection, exit 3

    def integrity_method(self, full: bool) -> str:
        """What the integrity check is called when it could not run."""
        return "integrity_check" if full else "quick_check"

    @abstractmethod
    def backups(self, ctx, full: bool):
        """(places looked in, this database's backups found, check(path), the check's name)."""
