"""EF Core's own history, __EFMigrationsHistory: read it and keep it in step.

Databases in the field were made by `dotnet ef database update`, which ran
one EF migration for all ten tables (SQLite: 20250922204129_AddChatTables;
PostgreSQL: 20250927103132_InitialPostgreSQLMigration). Here those tables are
two migrations (the core, then the chat tables), so EF's row stands for both:
it must be present exactly when both are applied. Rolling back the chat tables
removes it (the EF app must not believe they exist, and the procedure's
checklist asks for it); applying them again puts it back. On PostgreSQL,
20251109091141_AddAgentSessionsTable stands for the migration of that name.
RULES below is the one definition of which rows stand for what, per engine.

A database this tool changes gets EF's table (EF's own definition) if it has
none: with no table, EF Core believes nothing is applied, and `dotnet ef
database update` would try to create tables that exist.

engine.apply_one/rollback_one call keep_in_step inside the migration's own
transaction, so a kill cannot leave the two histories out of step. This
module therefore imports nothing from engines: `db` below is an engines.base.Driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Refused

TABLE = "__EFMigrationsHistory"
CORE, CHAT = "20250922204128_OrchestraCore", "20250922204129_AddChatTables"  # SQLite's
PG_INITIAL = "20250927103132_InitialPostgreSQLMigration"
PG_CORE, PG_CHAT = "20250927103131_OrchestraCore", "20250927103132_AddChatTables"
PG_AGENT_SESSIONS = "20251109091141_AddAgentSessionsTable"


@dataclass(frozen=True)
class Rules:
    """EF Core's history on one engine, as `dotnet ef database update` writes it."""
    stands_for: dict[str, tuple[str, ...]]  # EF id -> the migrations here that make it
    product_version: str  # the EF Core version that wrote the rows in the field
    chat: str  # the migration here that makes the chat tables (what the procedure rolls back)
    history_ddl: str  # EF's CREATE TABLE for its history; {} is the table's quoted name


# The one definition of EF's history per engine; every command reads it from here.
RULES = {
    # As EF Core 9.0.6's script makes it (tests/data/ef-core-9-initial-script.sql), byte for byte.
    "sqlite": Rules({CHAT: (CORE, CHAT)}, "9.0.6", CHAT, """CREATE TABLE IF NOT EXISTS {} (
    "MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY,
    "ProductVersion" TEXT NOT NULL
)"""),
    # As EF Core's Npgsql provider makes it.
    "postgresql": Rules({PG_INITIAL: (PG_CORE, PG_CHAT), PG_AGENT_SESSIONS: (PG_AGENT_SESSIONS,)},
                        "9.0.9", PG_CHAT, """CREATE TABLE IF NOT EXISTS {} (
    "MigrationId" character varying(150) NOT NULL,
    "ProductVersion" character varying(32) NOT NULL,
    CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY ("MigrationId"))"""),
}


def rules(db) -> Rules:
    return RULES[db.engine]


@dataclass(frozen=True)
class EfEntry:
    migration_id: str
    product_version: str


def exists(db) -> bool:
    return TABLE in db.table_names()


def entries(db) -> list[EfEntry] | None:
    """EF's history rows in id order; None when the table does not exist."""
    rows = db.ef_rows()
    return None if rows is None else [EfEntry(*row) for row in rows]


def ids(found: list[EfEntry] | None) -> set[str]:
    return {e.migration_id for e in found or ()}


def keep_in_step(db, applied: set[str]) -> None:
    """Make EF's table if missing (with EF's own definition), then add or remove rows so
    each is present exactly when what it stands for is applied: EF Core then knows what
    is applied, and `dotnet ef database update` finds nothing to do.

    Runs inside the caller's transaction (engine.apply_one/rollback_one).
    """
    driver, rule = db, rules(db)
    found = entries(driver)
    if found is None:
        with driver.writing_history(f"{TABLE}: could not create it"):
            driver.ef_create(rule.history_ddl)
    rows = wanted(rule, applied)
    for ef_id in rule.stands_for:
        want, listed = ef_id in rows, ef_id in ids(found)
        with driver.writing_history(f"{TABLE}: could not {'add' if want else 'remove'} {ef_id}"):
            if want and not listed:
                driver.ef_insert(ef_id, rule.product_version)
            elif listed and not want:
                driver.ef_delete(ef_id)


def in_step(db) -> bool:
    """EF's table exists and keep_in_step would change none of its rows."""
    driver = db
    found, rule = entries(driver), rules(driver)
    return found is not None and ids(found) & rule.stands_for.keys() == wanted(
        rule, set(driver.applied()))


def wanted(rule: Rules, applied: set[str]) -> set[str]:
    """The EF rows that must be present: those whose migrations here are all applied."""
    return {ef_id for ef_id, needed in rule.stands_for.items() if set(needed) <= applied}


def changes(before: list[EfEntry] | None, after: list[EfEntry] | None) -> list[str]:
    """What a command changed in EF's history, in keep_in_step's words."""
    old, new = ids(before), ids(after)
    versions = {e.migration_id: e.product_version for e in after or ()}
    return ([f"added {i} (ProductVersion {versions[i]})" for i in sorted(new - old)]
            + [f"removed {i}" for i in sorted(old - new)])


def planned(found: list[EfEntry] | None, applied: set[str], rule: Rules) -> list[str]:
    """What keep_in_step would do once `applied` are the applied migrations, for a dry run:
    in changes()' words, the table's creation first."""
    rows = wanted(rule, applied)
    kept = [e for e in found or () if e.migration_id in rows or e.migration_id not in rule.stands_for]
    after = kept + [EfEntry(i, rule.product_version) for i in sorted(rows - ids(found))]
    return ([f"created {TABLE} (EF Core's definition)"] if found is None else []) + changes(
        found, after)


def as_sql_comment(planned_changes: list[str], command: str) -> str:
    """A dry run's line on EF's history, after the migrations' statements."""
    if not planned_changes:
        return ""
    return f"-- then in EF Core's history, as {command} leaves it: {'; '.join(planned_changes)}"


def disagreements(found: list[EfEntry] | None, applied: set[str], rule: Rules) -> list[str]:
    """Where EF's history does not agree with the applied migrations, as EF Core reads it:
    a missing row (or table) means EF believes those tables do not exist, and
    `dotnet ef database update` would try to create them."""
    present = ids(found)
    if present and not applied:
        return [f"{TABLE} lists {', '.join(sorted(present))} but this tool's history is empty: "
                "the database was made by EF Core; run `orchestra-schema adopt`"]
    needed_by = {ef_id: needed for ef_id, needed in rule.stands_for.items()
                 if set(needed) <= applied}
    if found is None:
        return [f"no {TABLE} table although {', '.join(m for n in needed_by.values() for m in n)} "
                "are applied: EF Core believes nothing is applied; "
                "run `orchestra-schema apply` to create it with EF's rows"] if needed_by else []
    out = []
    for ef_id, needed in rule.stands_for.items():
        missing = [m for m in needed if m not in applied]
        if ef_id in present and missing:
            out.append(f"{TABLE} lists {ef_id} but {', '.join(missing)} is not applied: "
                       "the EF app believes tables exist that do not")
        elif ef_id not in present and not missing:
            out.append(f"{TABLE} lacks {ef_id} although {', '.join(needed)} are applied: EF "
                       "Core believes those tables do not exist; run `orchestra-schema apply` "
                       "to write it")
    for unknown in sorted(present - rule.stands_for.keys()):
        out.append(f"{TABLE} lists {unknown}, which no migration here stands for")
    return out


def delete(db, migration_id: str) -> bool:
    """Remove one EF row (bound as a parameter); False if there was none."""
    driver = db
    with driver.writing_history(f"{TABLE}: could not remove {migration_id}",
                                undone="nothing was removed"):
        return driver.ef_delete(migration_id)


def refuse_unadopted(db, applied: set[str]) -> None:
    """EF Core made this schema: applying the SQL on top would fail on every CREATE."""
    listed = ids(entries(db))
    if listed and not applied:
        raise Refused(
            f"{db.display}: made by EF Core ({TABLE} lists {', '.join(sorted(listed))}) "
            "and not adopted; nothing changed; "
            "run `orchestra-schema adopt` first"
        )
