"""`orchestra-schema restore BACKUP`: put a verified backup back, keeping a safety copy first.

SQLite: through its backup API into the live file, one write transaction (a file SQLite
cannot open is moved aside instead). PostgreSQL: pg_restore in one transaction. Both:
engines/*/ behind engines.of(...).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import engines
from ..files.backups import RestoreResult

if TYPE_CHECKING:
    from ..context import Context


def restore(ctx: Context, backup_path: Path, yes: bool = False, make_backup: bool = True,
            progress=None) -> RestoreResult:
    """Restore ctx.database from backup_path after verifying it.

    make_backup=False skips the pre-restore copy of a healthy database; the
    copy of a damaged one is always kept (recover can salvage from it).
    """
    return engines.of(ctx.engine).restore(ctx, Path(backup_path), yes, make_backup, progress)
