"""What every command gets: where the database, the SQL and the backups are, how long to wait."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .database import DEFAULT_TIMEOUT, Database
from .paths import database_file

if TYPE_CHECKING:
    from .migrations import MigrationFile


@dataclass
class Context:
    """What every command needs: where the database, the SQL and the backups are, how long to wait."""

    database: Path
    sql_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    backup_dir: Path | None = None  # None: beside the database

    def __post_init__(self):
        # The real file, checked by os.stat before anything opens it (paths.py).
        self.database = database_file(self.database)

    @property
    def backups(self) -> Path:
        """Where backups and safety copies go: --backup-dir, else beside the database."""
        return Path(self.backup_dir) if self.backup_dir is not None else self.database.parent

    def migrations(self) -> list[MigrationFile]:
        from . import migrations  # here: --help and `backup` never read the SQL files
        return migrations.load(self.sql_dir)

    def open(self, *, readonly: bool = False, create: bool = False) -> Database:
        return Database.open(self.database, timeout=self.timeout, readonly=readonly, create=create)
