"""What every command gets: where the database, the SQL and the backups are, how long to wait."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when used: `status` and --help must not pay for yoyo
    from .database import Database
    from .migrations import MigrationFile


DEFAULT_TIMEOUT = 10.0  # seconds; the CLI's --timeout default too


@dataclass
class Context:
    """What every command needs: where the database, the SQL and the backups are, how long to wait."""

    database: Path
    sql_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    backup_dir: Path | None = None  # None: beside the database

    @property
    def backups(self) -> Path:
        """Where backups and safety copies go: --backup-dir, else beside the database."""
        return Path(self.backup_dir) if self.backup_dir is not None else self.database.parent

    def migrations(self) -> list[MigrationFile]:
        from . import migrations
        return migrations.load(self.sql_dir)

    def open(self, *, readonly: bool = False, create: bool = False) -> Database:
        from .database import Database
        return Database.open(self.database, timeout=self.timeout, readonly=readonly, create=create)
