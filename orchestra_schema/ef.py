"""EF Core's own history, __EFMigrationsHistory: read it and keep it in step.

Databases in the field were made by `dotnet ef database update`, which ran
one EF migration, 20250922204129_AddChatTables, for all ten tables. Here
those tables are two migrations (the core, then the chat tables), so EF's row
stands for both: it must be present exactly when both are applied. Rolling
back the chat tables removes it (the EF app must not believe they exist, and
the procedure's checklist asks for it); applying them again puts it back.

engine.apply_one/rollback_one call keep_in_step inside the migration's own
transaction, so a kill cannot leave the two histories out of step. This
module therefore imports nothing from engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from .database import Database, quote, translated
from .errors import MigrationFailed

TABLE = "__EFMigrationsHistory"
CHAT = "20250922204129_AddChatTables"
CORE = "20250922204128_OrchestraCore"
PRODUCT_VERSION = "9.0.6"  # the EF Core version that wrote the row in the field
# EF migration id -> the migrations here that together make its schema.
STANDS_FOR = {CHAT: (CORE, CHAT)}


@dataclass(frozen=True)
class EfEntry:
    migration_id: str
    product_version: str


def exists(db: Database) -> bool:
    return TABLE in db.table_names()


def entries(db: Database) -> list[EfEntry] | None:
    """EF's history rows in id order; None when the table does not exist."""
    if not exists(db):
        return None
    with translated(db.path, f"reading {TABLE}"):
        return [EfEntry(*row) for row in db.rows(
            f'SELECT "MigrationId", "ProductVersion" FROM {quote(TABLE)} ORDER BY "MigrationId"')]


def ids(found: list[EfEntry] | None) -> set[str]:
    return {e.migration_id for e in found or ()}


def keep_in_step(db: Database, applied: set[str]) -> None:
    """Add or remove EF rows so each is present exactly when what it stands for is applied.

    Runs inside the caller's transaction (engine.apply_one/rollback_one).
    """
    if not exists(db):
        return
    present = ids(entries(db))
    for ef_id, needed in STANDS_FOR.items():
        wanted = set(needed) <= applied
        try:
            if wanted and ef_id not in present:
                db.execute(f"INSERT INTO {quote(TABLE)} VALUES (?, ?)", (ef_id, PRODUCT_VERSION))
            elif not wanted and ef_id in present:
                delete(db, ef_id)
        except (apsw.BusyError, apsw.LockedError):
            raise
        except apsw.Error as err:  # e.g. a trigger, or a table not shaped as EF makes it
            raise MigrationFailed(
                f"{TABLE}: could not {'add' if wanted else 'remove'} {ef_id}: {err}; "
                "the migration was rolled back with it and nothing changed") from err


def changes(before: list[EfEntry] | None, after: list[EfEntry] | None) -> list[str]:
    """What a command changed in EF's history, in keep_in_step's words."""
    old, new = ids(before), ids(after)
    versions = {e.migration_id: e.product_version for e in after or ()}
    return ([f"added {i} (ProductVersion {versions[i]})" for i in sorted(new - old)]
            + [f"removed {i}" for i in sorted(old - new)])


def disagreements(found: list[EfEntry] | None, applied: set[str]) -> list[str]:
    """Where EF's history does not agree with the applied migrations."""
    if found is None:
        return []
    present = ids(found)
    if present and not applied:
        return [f"{TABLE} lists {', '.join(sorted(present))} but this tool's history is empty: "
                "the database was made by EF Core; run `orchestra-schema adopt`"]
    out = []
    for ef_id, needed in STANDS_FOR.items():
        missing = [m for m in needed if m not in applied]
        if ef_id in present and missing:
            out.append(f"{TABLE} lists {ef_id} but {', '.join(missing)} is not applied: "
                       "the EF app believes tables exist that do not")
        elif ef_id not in present and not missing:
            out.append(f"{TABLE} lacks {ef_id} although {', '.join(needed)} are applied")
    for unknown in sorted(present - STANDS_FOR.keys()):
        out.append(f"{TABLE} lists {unknown}, which no migration here stands for")
    return out


def delete(db: Database, migration_id: str) -> bool:
    """Remove one EF row (bound as a parameter); False if there was none."""
    with translated(db.path, f"deleting {migration_id} from {TABLE}"):
        db.execute(f'DELETE FROM {quote(TABLE)} WHERE "MigrationId" = ?', (migration_id,))
        return db.connection.changes() > 0
