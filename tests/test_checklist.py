"""checklist: the procedure's Validation Checklist after rolling back the chat tables."""

import json

from helpers import CHAT, CORE, cli, connect, file_state

ITEMS = [
    f"{CHAT} absent from yoyo's history",
    f"{CHAT} absent from __EFMigrationsHistory",
    "table ChatSessions does not exist",
    "table ChatMessages does not exist",
    "every other managed table present and matching its history",
    "database passes PRAGMA quick_check",
    "a backup taken before the rollback exists and matches its manifest",
]


def checklist(path, *args):
    result = cli("--database", path, "--json", "checklist", *args)
    report = json.loads(result.stdout)
    assert list(report) == ["database", "ok", "items"]
    return result, {i["name"]: (i["status"], i["detail"]) for i in report["items"]}


def roll_back_chat(path):
    result = cli("--database", path, "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 0, result.stderr


def test_passes_after_rolling_back_the_chat_tables_of_an_ef_database(ef_db):
    roll_back_chat(ef_db)
    before = file_state(ef_db)

    result, items = checklist(ef_db)

    assert result.exit_code == 0, result.stdout
    assert list(items) == ITEMS
    assert [status for status, _ in items.values()] == ["pass"] * 7
    assert items[ITEMS[4]][1] == f"8 tables match {CORE}"
    # The rollback made its own backup first; the item names it.
    assert ".backup_" in items[ITEMS[6]][1] and "matches its manifest" in items[ITEMS[6]][1]
    assert file_state(ef_db) == before
    text = cli("--database", ef_db, "checklist").stdout.splitlines()
    assert text[0] == f"[pass] {CHAT} absent from yoyo's history: not in _yoyo_migration"


def test_fails_before_the_rollback_naming_each_item(ef_db):
    result, items = checklist(ef_db)
    assert result.exit_code == 1
    assert [n for n, (status, _) in items.items() if status == "fail"] == ITEMS[:4]
    assert items["table ChatMessages does not exist"] == ("fail", "exists with 15 row(s)")
    assert items[ITEMS[6]] == ("n/a", f"no rollback of {CHAT} recorded in _yoyo_log")
    assert "checklist: 4 item(s) failed" in result.stderr


def test_backup_item_fails_without_a_backup_or_with_a_changed_one(ef_db):
    assert cli("--database", ef_db, "rollback", "--to", CORE, "--yes", "--no-backup").exit_code == 0
    result, items = checklist(ef_db)
    assert result.exit_code == 1 and items[ITEMS[6]][0] == "fail"
    assert "taken between" in items[ITEMS[6]][1]
    assert cli("--database", ef_db, "apply").exit_code == 0
    roll_back_chat(ef_db)  # takes a backup first
    from orchestra_schema.engines.sqlite.backup import backups_of
    newest = backups_of(ef_db)[-1]
    with open(newest, "r+b") as f:  # one byte changed after the fact
        f.seek(200)
        f.write(b"\x01")
    result, items = checklist(ef_db)
    assert result.exit_code == 1 and items[ITEMS[6]][0] == "fail"
    assert "blake3 digest differs from its manifest" in items[ITEMS[6]][1]


def test_ef_item_cannot_apply_without_ef_history(db):
    roll_back_chat(db)
    with connect(db) as c:  # as an older version left it: no EF table
        c.execute('DROP TABLE "__EFMigrationsHistory"')
    result, items = checklist(db)
    assert result.exit_code == 0
    status, detail = items[ITEMS[1]]
    assert status == "n/a" and "no __EFMigrationsHistory table" in detail


def test_a_stale_ef_row_fails(ef_db):
    roll_back_chat(ef_db)
    with connect(ef_db) as c:
        c.execute("INSERT INTO __EFMigrationsHistory VALUES (?, '9.0.6')", (CHAT,))
    result, items = checklist(ef_db)
    assert result.exit_code == 1
    assert items[ITEMS[1]][0] == "fail"


def test_a_damaged_core_table_fails(ef_db):
    roll_back_chat(ef_db)
    with connect(ef_db) as c:
        c.execute('DROP INDEX "IX_Tasks_Status"')
        c.execute('DROP TABLE "OrchestrationLogs"')
    result, items = checklist(ef_db)
    assert result.exit_code == 1
    assert items[ITEMS[4]] == ("fail", "table OrchestrationLogs: missing; "
                                       "index IX_Tasks_Status on Tasks: missing")


def test_nothing_else_applied_cannot_apply(ef_db):
    assert cli("--database", ef_db, "rollback", "--to", "0", "--yes").exit_code == 0
    result, items = checklist(ef_db, "--full")
    assert result.exit_code == 0
    assert items[ITEMS[4]] == ("n/a", "no other migration is applied")
    assert items["database passes PRAGMA integrity_check"] == ("pass", "ok")


def test_a_backup_taken_after_the_rollback_does_not_count(ef_db):
    """It cannot hold the chat rows: the window ends at the rollback."""
    assert cli("--database", ef_db, "rollback", "--to", CORE, "--yes", "--no-backup").exit_code == 0
    assert cli("--database", ef_db, "backup").exit_code == 0  # whole and checked, but too late
    result, items = checklist(ef_db)
    assert result.exit_code == 1 and items[ITEMS[6]][0] == "fail"
    assert "taken between" in items[ITEMS[6]][1]
