"""Drift: the managed tables' schema against what the applied migrations produce, on any
engine (verify, adopt, mark, history forget and copy-to's proof ask the same question)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import ef
from ..schema import changed, diff
from . import HISTORY_TABLES, driver_of


@dataclass
class Drift:
    differences: list[str]
    managed_tables: list[str]
    unmanaged_tables: list[str]



def drift(db, migrations, applied: set[str], ignore=()) -> Drift:
    """The managed tables' schema against what the applied migrations produce.

    Managed: every table some migration in the sql dir creates, minus `ignore`.
    db: an SQLite Database or any engine's Driver (its replay: SQLite in memory,
    PostgreSQL in a scratch schema that is rolled back).
    """
    driver = driver_of(db)
    expected = driver.replay([m for m in migrations if m.id in applied])
    created = driver.replay(migrations).created
    managed = set().union(expected.schema.tables, *created.values()) - set(ignore)
    actual = driver.snapshot().restricted_to(managed)
    unmanaged = driver.table_names() - managed - HISTORY_TABLES - {ef.TABLE} - set(ignore)
    return Drift(diff(expected.schema.restricted_to(managed), actual),
                 sorted(managed), sorted(unmanaged))


def migration_drift(db, migrations, applied: set[str], migration_id: str) -> list[str]:
    """What the live schema lacks, or has beyond, what migration_id makes on top of the
    applied migrations (mark): the tables, views and triggers its replay changes, each
    compared whole (an index it adds: its table's indexes); the rest is verify's drift.
    Data it inserts is not compared.
    """
    driver = driver_of(db)
    before = driver.replay([m for m in migrations if m.id in applied]).schema
    after = driver.replay([m for m in migrations if m.id in applied | {migration_id}]).schema
    touched = changed(before, after)
    return diff(after.restricted_to(touched), driver.snapshot().restricted_to(touched))
