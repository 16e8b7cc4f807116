"""`orchestra-schema recover`: the rollback procedure's "If Database Corruption Occurs".

SQLite rebuilds a damaged file from the migrations and what the file (or a backup) still
holds; PostgreSQL refuses: it recovers from crashes by itself. Both behind engines.of(...).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import engines

if TYPE_CHECKING:
    from ..context import Context


def recover(ctx: Context, source: Path | None = None, yes: bool = False, progress=None):
    """Rebuild ctx.database from `source` (a backup) or from what it still holds."""
    return engines.of(ctx.engine).recover(ctx, source, yes, progress)
