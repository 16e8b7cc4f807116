"""rehearse on PostgreSQL: the real rollback and apply on the live database, in a transaction
that is always rolled back; the database unchanged afterwards; the app's queries never queue
behind it for more than lock_timeout at a time while it waits for a lock."""

from __future__ import annotations

import json

from helpers import run
from test_pg_checks import app_holding_and_reading, applied  # noqa: F401 (fixture)
from test_pg_commands import AGENT, CHAT, pg
from test_pg_schema import catalog_schema


def everything(database) -> tuple:
    """Catalogs (managed tables, history tables) and every table's row count."""
    counts = {t: database.rows(f'SELECT count(*) FROM "{t}"')[0][0] for t in database.tables()}
    ef = database.rows('SELECT * FROM "__EFMigrationsHistory" ORDER BY 1') \
        if "__EFMigrationsHistory" in database.tables() else None
    return catalog_schema(database), counts, ef, database.rows(
        "SELECT migration_id FROM _yoyo_migration ORDER BY 1")


def test_rehearse_rolls_back_and_applies_in_a_transaction_that_is_rolled_back(applied):
    before = everything(applied)
    result = pg(applied, "--json", "rehearse")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["snapshot_mode"], report["only"], report["rolled_back"]) == (
        "transaction", CHAT, [CHAT])
    assert report["rows_lost"] == {"ChatMessages": 5, "ChatSessions": 1}
    assert [s["name"] for s in report["steps"]] == [
        "snapshot", "count rows", "rollback", "check after rollback", "apply again",
        "check after apply"]
    assert all(s["ok"] for s in report["steps"]) and report["ok"]
    assert everything(applied) == before


def test_rehearse_only_agent_sessions(applied):
    before = everything(applied)
    result = pg(applied, "--json", "rehearse", "--only", AGENT)
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["rolled_back"] == [AGENT]
    assert report["rows_lost"] == {"AgentSessions": 1}
    assert everything(applied) == before


def test_rehearse_to_zero(applied):
    before = everything(applied)
    result = pg(applied, "--json", "rehearse", "--to", "0")
    assert result.exit_code == 0, result.stdout
    assert len(json.loads(result.stdout)["rolled_back"]) == 3
    assert everything(applied) == before


def test_an_app_transaction_holding_a_table_makes_it_wait_never_stall_the_app(applied):
    """The app's long transaction holds ChatMessages: the rehearsal's DROP waits lock_timeout
    at a time, steps back, and retries until --timeout (exit 3), database unchanged. Meanwhile
    another app session's queries on the table, which would queue behind a DROP waiting for
    its lock, each finish within a statement_timeout a few times lock_timeout."""
    before = everything(applied)
    with app_holding_and_reading(applied) as app:
        result = run("--timeout", "3", "--database", applied.url, "rehearse")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("orchestra-schema: error: ")
    assert app.failures == [] and app.queries > 10
    assert everything(applied) == before
