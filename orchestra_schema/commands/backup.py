"""`orchestra-schema backup`: the options checked once, the copy made by the engine
(SQLite: an online copy through its backup API; PostgreSQL: pg_dump's archive), each
with a manifest beside it (files/backups.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import engines
from ..errors import UsageError
from ..files.backups import BackupResult

if TYPE_CHECKING:
    from ..context import Context


def backup(ctx: Context, output: Path | None = None, directory: Path | None = None,
           keep: int | None = None, progress=None, full_check: bool = False) -> BackupResult:
    """Back ctx.database up online; returns where, and what the manifest records."""
    if output is not None and directory is not None:
        raise UsageError("give --output or --dir, not both")
    if keep is not None and keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 backup")
    return engines.of(ctx.engine).backup(ctx, output, directory, keep, progress, full_check)
