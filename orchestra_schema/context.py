"""What every command gets: where the database and the SQL are, how long to wait."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import migrations as mig
from .database import DEFAULT_TIMEOUT, Database
from .paths import database_file


@dataclass
class Context:
    """What every command needs: where the database and the SQL are, how long to wait."""

    database: Path
    sql_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self):
        # The real file, checked by os.stat before anything opens it (paths.py).
        self.database = database_file(self.database)

    def migrations(self) -> list[mig.MigrationFile]:
        return mig.load(self.sql_dir)

    def open(self, *, readonly: bool = False, create: bool = False) -> Database:
        return Database.open(self.database, timeout=self.timeout, readonly=readonly, create=create)
