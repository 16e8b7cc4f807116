"""Which migrations an SQLite database says are applied: yoyo's history and our checksums.

Only reads, and needs nothing of yoyo but its table's name, so the commands
that only look (status, backup's manifest) do not import yoyo at all.
"""

from __future__ import annotations

from .database import Database, translated
from ..base import CHECKSUM_TABLE, MIGRATION_TABLE, AppliedRecord


def applied_migrations(db: Database) -> dict[str, AppliedRecord]:
    """yoyo's history (with our checksums where recorded), in applied order."""
    with translated(db.path, "reading the migration history"):
        tables = db.table_names()
        if MIGRATION_TABLE not in tables:
            return {}
        join = (f"LEFT JOIN {CHECKSUM_TABLE} c USING (migration_hash)"
                if CHECKSUM_TABLE in tables else "")
        sums = "c.forward_sha256, c.rollback_sha256" if join else "NULL, NULL"
        rows = db.rows(
            f"SELECT m.migration_id, m.applied_at_utc, {sums} "
            f"FROM {MIGRATION_TABLE} m {join} ORDER BY m.applied_at_utc"
        )
    return {r[0]: AppliedRecord(*r) for r in rows}
