"""What every command gets: where the database, the SQL and the backups are, how long to wait."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .address import PgAddress
from .errors import UsageError
from .files.paths import database_file

from .engines.base import DEFAULT_TIMEOUT  # noqa: F401 (the CLI reads it here)

if TYPE_CHECKING:  # apsw's database.py only where an SQLite file is opened
    from .engines.sqlite.database import Database
    from .engines import Driver
    from .migrations import MigrationFile


@dataclass
class Context:
    """What every command needs: where the database, the SQL and the backups are, how long to wait.

    database: an SQLite file's path, or a PostgreSQL address (address.parse).
    """

    database: Path | PgAddress
    sql_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    backup_dir: Path | None = None  # None: beside an SQLite database; see backups

    @property
    def engine(self) -> str:
        return "postgresql" if isinstance(self.database, PgAddress) else "sqlite"

    @property
    def display(self) -> str:
        """Where the database is, for every report: never a password."""
        return str(self.database)

    def __post_init__(self):
        # An SQLite path: the real file, checked by os.stat before anything opens it (paths.py).
        if not isinstance(self.database, PgAddress):
            self.database = database_file(self.database)

    @property
    def backups(self) -> Path:
        """Where backups and safety copies go: --backup-dir, else beside an SQLite database
        (a PostgreSQL database has no directory: the current one)."""
        if self.backup_dir is not None:
            return Path(self.backup_dir)
        return self.database.parent if self.engine == "sqlite" else Path.cwd()

    def migrations(self) -> list[MigrationFile]:
        from . import migrations  # here: --help and `backup` never read the SQL files
        return migrations.load(self.sql_dir or migrations.default_sql_dir(self.engine))

    def exists(self) -> bool:
        """False for an SQLite file not created yet; a PostgreSQL database must exist."""
        return self.engine != "sqlite" or self.database.exists()

    def connect(self, *, readonly: bool = False, create: bool = False) -> Driver:
        """The database behind the seam (engines/), for the commands written once."""
        from . import engines
        return engines.of(self.engine).connect(self, readonly=readonly, create=create)

    def require_sqlite(self, command: str = "this command") -> None:
        if self.engine != "sqlite":
            raise UsageError(f"{self.display}: {command} works on SQLite databases only so far; "
                             "every other command works on PostgreSQL too")

    def open(self, *, readonly: bool = False, create: bool = False) -> Database:
        """The SQLite file itself, for the commands that are SQLite's alone so far."""
        from .engines.sqlite.database import Database
        self.require_sqlite()
        if not readonly:
            from .engines.sqlite import wal
            wal.refuse(self.database)
        return Database.open(self.database, timeout=self.timeout, readonly=readonly,
                             create=create)
