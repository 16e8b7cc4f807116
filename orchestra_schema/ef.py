"""EF Core's own history, __EFMigrationsHistory: read it and keep it in step.

Databases in the field were made by `dotnet ef database update`, which ran
one EF migration for all ten tables (SQLite: 20250922204129_AddChatTables;
PostgreSQL: 20250927103132_InitialPostgreSQLMigration). Here those tables are
two migrations (the core, then the chat tables), so EF's row stands for both:
it must be present exactly when both are applied. Rolling back the chat tables
removes it (the EF app must not believe they exist, and the procedure's
checklist asks for it); applying them again puts it back. On PostgreSQL,
20251109091141_AddAgentSessionsTable stands for the migration of that name.

engine.apply_one/rollback_one call keep_in_step inside the migration's own
transaction, so a kill cannot leave the two histories out of step. This
module therefore imports nothing from engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from .engines import driver_of
from .errors import MigrationFailed

TABLE = "__EFMigrationsHistory"
CHAT = "20250922204129_AddChatTables"
CORE = "20250922204128_OrchestraCore"
PRODUCT_VERSION = "9.0.6"  # the EF Core version that wrote the row in the field
# EF migration id -> the migrations here that together make its schema.
STANDS_FOR = {CHAT: (CORE, CHAT)}

PG_INITIAL = "20250927103132_InitialPostgreSQLMigration"
PG_CORE, PG_CHAT = "20250927103131_OrchestraCore", "20250927103132_AddChatTables"
PG_AGENT_SESSIONS = "20251109091141_AddAgentSessionsTable"


@dataclass(frozen=True)
class Rules:
    stands_for: dict[str, tuple[str, ...]]  # EF id -> the migrations here that make it
    product_version: str  # the EF Core version that wrote the rows in the field


RULES = {
    "sqlite": Rules(STANDS_FOR, PRODUCT_VERSION),
    "postgresql": Rules({PG_INITIAL: (PG_CORE, PG_CHAT), PG_AGENT_SESSIONS: (PG_AGENT_SESSIONS,)},
                        "9.0.9"),
}


CHAT_MIGRATION = {"sqlite": CHAT, "postgresql": PG_CHAT}  # what the chat rollback rolls back


def chat_migration(db) -> str:
    return CHAT_MIGRATION[driver_of(db).engine]


def rules(db) -> Rules:
    return RULES[driver_of(db).engine]


@dataclass(frozen=True)
class EfEntry:
    migration_id: str
    product_version: str


def exists(db) -> bool:
    return TABLE in driver_of(db).table_names()


def entries(db) -> list[EfEntry] | None:
    """EF's history rows in id order; None when the table does not exist."""
    rows = driver_of(db).ef_rows()
    return None if rows is None else [EfEntry(*row) for row in rows]


def ids(found: list[EfEntry] | None) -> set[str]:
    return {e.migration_id for e in found or ()}


def keep_in_step(db, applied: set[str]) -> None:
    """Add or remove EF rows so each is present exactly when what it stands for is applied.

    Runs inside the caller's transaction (engine.apply_one/rollback_one).
    """
    driver = driver_of(db)
    found = entries(driver)
    if found is None:
        return
    present, rule = ids(found), rules(driver)
    for ef_id, needed in rule.stands_for.items():
        wanted = set(needed) <= applied
        try:
            if wanted and ef_id not in present:
                driver.ef_insert(ef_id, rule.product_version)
            elif not wanted and ef_id in present:
                driver.ef_delete(ef_id)
        except driver.busy_errors:
            raise
        except driver.Error as err:  # e.g. a trigger, or a table not shaped as EF makes it
            raise MigrationFailed(
                f"{TABLE}: could not {'add' if wanted else 'remove'} {ef_id}: {err}; "
                "the migration was rolled back with it and nothing changed") from err


def changes(before: list[EfEntry] | None, after: list[EfEntry] | None) -> list[str]:
    """What a command changed in EF's history, in keep_in_step's words."""
    old, new = ids(before), ids(after)
    versions = {e.migration_id: e.product_version for e in after or ()}
    return ([f"added {i} (ProductVersion {versions[i]})" for i in sorted(new - old)]
            + [f"removed {i}" for i in sorted(old - new)])


def disagreements(found: list[EfEntry] | None, applied: set[str],
                  stands_for: dict[str, tuple[str, ...]] = STANDS_FOR) -> list[str]:
    """Where EF's history does not agree with the applied migrations."""
    if found is None:
        return []
    present = ids(found)
    if present and not applied:
        return [f"{TABLE} lists {', '.join(sorted(present))} but this tool's history is empty: "
                "the database was made by EF Core; run `orchestra-schema adopt`"]
    out = []
    for ef_id, needed in stands_for.items():
        missing = [m for m in needed if m not in applied]
        if ef_id in present and missing:
            out.append(f"{TABLE} lists {ef_id} but {', '.join(missing)} is not applied: "
                       "the EF app believes tables exist that do not")
        elif ef_id not in present and not missing:
            out.append(f"{TABLE} lacks {ef_id} although {', '.join(needed)} are applied")
    for unknown in sorted(present - stands_for.keys()):
        out.append(f"{TABLE} lists {unknown}, which no migration here stands for")
    return out


def delete(db, migration_id: str) -> bool:
    """Remove one EF row (bound as a parameter); False if there was none."""
    return driver_of(db).ef_delete(migration_id)
