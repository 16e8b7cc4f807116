"""verify on real files: each kind of problem is found and named, and nothing is written."""

import json
import shutil

import pytest

from helpers import (CHAT, CHAT_TABLES, CORE, CORE_TABLES, build_ef_database, cli, connect,
                      file_state, tables)
from orchestra_schema.migrations import default_sql_dir

REPORT_KEYS = ["database", "ok", "integrity_pragma", "checks", "problems", "notes", "yoyo_history",
               "ef_history", "managed_tables", "unmanaged_tables"]
CHECKS = ["integrity", "foreign_keys", "migration_files", "drift", "ef_history", "wal"]


def verify(path, *args):
    result = cli("--database", path, "--json", "verify", *args)
    return result, json.loads(result.stdout)


def failed(report) -> dict[str, list[str]]:
    return {c["name"]: c["problems"] for c in report["checks"] if not c["ok"]}


@pytest.fixture
def sql_dir(tmp_path):
    """A copy of the shipped SQL that a test may edit."""
    return shutil.copytree(default_sql_dir(), tmp_path / "sql")


def test_a_sound_database_passes_and_lists_what_it_does_not_manage(db):
    before = file_state(db)
    result, report = verify(db)
    assert result.exit_code == 0, result.output
    assert list(report) == REPORT_KEYS
    assert [c["name"] for c in report["checks"]] == CHECKS
    assert report["ok"] is True and report["problems"] == []
    assert report["integrity_pragma"] == "quick_check"
    assert report["yoyo_history"] == [CORE, CHAT]
    # apply wrote EF's row, as `dotnet ef database update` would have
    assert report["ef_history"] == [{"migration_id": CHAT, "product_version": "9.0.6"}]
    assert set(report["managed_tables"]) == CORE_TABLES | CHAT_TABLES
    assert report["unmanaged_tables"] == ["HangFire.Job"]  # not _yoyo_*, not our checksums
    assert file_state(db) == before
    text = cli("--database", db, "verify")
    assert "unmanaged tables (not this tool's, not drift): HangFire.Job" in text.stdout
    assert "yoyo history: " + CORE in text.stdout


def test_full_runs_integrity_check(db):
    result, report = verify(db, "--full")
    assert result.exit_code == 0
    assert report["integrity_pragma"] == "integrity_check"


def test_migration_file_edited_after_it_was_applied(tmp_path, sql_dir):
    path = tmp_path / "orchestra.db"
    assert cli("--database", path, "--sql-dir", sql_dir, "apply").exit_code == 0
    with open(sql_dir / f"{CORE}.sql", "a") as f:
        f.write("-- edited after it was applied\n")
    with open(sql_dir / f"{CHAT}.rollback.sql", "a") as f:
        f.write("DROP TABLE IF EXISTS Nothing;\n")
    before = file_state(path)

    result = cli("--database", path, "--sql-dir", sql_dir, "--json", "verify")

    assert result.exit_code == 1
    problems = failed(json.loads(result.stdout))["migration_files"]
    assert problems == [
        f"{CORE}: {sql_dir / f'{CORE}.sql'} changed since it was applied (SHA-256 differs)",
        f"{CHAT}: rollback file {sql_dir / f'{CHAT}.rollback.sql'} changed since it was applied "
        "(SHA-256 differs)",
    ]
    assert "verify found 2 problem(s) in migration_files" in result.stderr
    assert file_state(path) == before


def test_missing_out_of_order_and_rollback_less_migrations(tmp_path, sql_dir):
    path = tmp_path / "orchestra.db"
    assert cli("--database", path, "--sql-dir", sql_dir, "apply").exit_code == 0
    (sql_dir / f"{CHAT}.sql").unlink()
    (sql_dir / f"{CHAT}.rollback.sql").unlink()
    (sql_dir / "20250101000000_Older.sql").write_text("CREATE TABLE Older (Id INTEGER);\n")

    result = cli("--database", path, "--sql-dir", sql_dir, "--json", "verify")

    assert result.exit_code == 1
    problems = failed(json.loads(result.stdout))["migration_files"]
    assert f"{CHAT}: applied but missing from the sql dir" in problems
    assert "20250101000000_Older: no rollback file 20250101000000_Older.rollback.sql" in problems
    assert ("20250101000000_Older: pending but older than the newest applied migration "
            f"{CHAT}") in problems


def test_index_dropped_and_index_added_by_hand(db):
    with connect(db) as c:
        c.execute('DROP INDEX "IX_ChatMessages_CreatedAt"')
        c.execute('CREATE INDEX "IX_ByHand" ON "Tasks" ("Command")')
        c.execute('CREATE INDEX "IX_HangFire_State" ON "HangFire.Job" ("State")')  # not ours
    before = file_state(db)

    result, report = verify(db)

    assert result.exit_code == 1
    assert failed(report) == {"drift": [
        "index IX_ChatMessages_CreatedAt on ChatMessages: missing",
        "index IX_ByHand on Tasks: not expected (extra)",
    ]}
    assert "drift: index IX_ChatMessages_CreatedAt on ChatMessages: missing" in report["problems"]
    text = cli("--database", db, "verify")
    assert "FAIL  drift" in text.stdout and "IX_ByHand on Tasks" in text.stdout
    assert file_state(db) == before


def test_table_column_and_foreign_key_drift(db):
    with connect(db) as c:
        c.execute('DROP TABLE "OrchestrationLogs"')
        c.execute('ALTER TABLE "Agents" ADD COLUMN "Extra" TEXT')
        c.execute('CREATE TABLE "ChatSessions2" AS SELECT * FROM "ChatSessions"')  # unmanaged
    result, report = verify(db)
    assert result.exit_code == 1
    assert failed(report)["drift"] == ["table OrchestrationLogs: missing",
                                       "column Agents.Extra: not expected (extra)"]
    assert report["unmanaged_tables"] == ["ChatSessions2", "HangFire.Job"]


def test_tables_of_a_forgotten_migration_are_drift(db):
    assert cli("--database", db, "history", "forget", CHAT, "--from", "yoyo", "--yes").exit_code == 0
    result, report = verify(db)
    assert result.exit_code == 1
    assert failed(report)["drift"] == ["table ChatMessages: not expected (extra)",
                                       "table ChatSessions: not expected (extra)"]


def test_foreign_key_violations(db):
    with connect(db) as c:
        c.execute("INSERT INTO ChatMessages VALUES ('orphan', 'no-such', 'a', 'c', 0, 'now', NULL)")
    result, report = verify(db)
    assert result.exit_code == 1
    assert failed(report) == {"foreign_keys": [
        "ChatMessages: 1 row(s) reference missing ChatSessions rows (first rowid 16)"]}


def overwrite_middle_page(path) -> None:
    """Fill ChatMessages so it is most of the file, then overwrite the page in the middle."""
    with connect(path) as c:
        with c:  # one transaction
            c.executemany("INSERT INTO ChatMessages VALUES (?, 's0', 'user', ?, 0, 'now', NULL)",
                          [(f"bulk{i}", "x" * 400) for i in range(3000)])
        page_size, pages = (c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count"))
    with open(path, "r+b") as f:
        f.seek(page_size * (pages // 2))
        f.write(bytes([0x5A]) * page_size)


def test_a_page_overwritten_in_the_middle_is_a_problem_not_a_crash(db):
    overwrite_middle_page(db)
    before = file_state(db)

    for args in ([], ["--full"]):
        result, report = verify(db, *args)
        assert result.exit_code == 1, result.stderr
        integrity = failed(report)["integrity"]
        assert integrity[0].startswith(f"PRAGMA {report['integrity_pragma']}")
        assert any(p.startswith("table ChatMessages is damaged") for p in integrity), integrity
        assert not any("HangFire" in p or "Tasks" in p for p in integrity)
    text = cli("--database", db, "verify")
    assert text.exit_code == 1 and "FAIL  integrity" in text.stdout
    assert "internal error" not in text.stderr
    assert file_state(db) == before


def test_ef_history_is_shown_and_checked(ef_db):
    result, report = verify(ef_db)
    assert result.exit_code == 0, result.output
    assert report["ef_history"] == [{"migration_id": CHAT, "product_version": "9.0.6"}]
    assert report["yoyo_history"] == [CORE, CHAT]
    assert "__EFMigrationsHistory" not in report["unmanaged_tables"]
    with connect(ef_db) as c:
        c.execute("INSERT INTO __EFMigrationsHistory VALUES ('20990101000000_Later', '9.0.6')")
    result, report = verify(ef_db)
    assert failed(report) == {"ef_history": [
        "__EFMigrationsHistory lists 20990101000000_Later, which no migration here stands for"]}


def test_the_issues_path_for_a_new_user(tmp_path):
    """Adopt an EF-made orchestra.db, rehearse the chat rollback, run it, pass the
    checklist, re-apply; then verify names a hand-edited migration file, a dropped
    index and a corrupted page."""
    path = build_ef_database(tmp_path / "orchestra.db")
    sql_dir = shutil.copytree(default_sql_dir(), tmp_path / "sql")
    base = ["--database", path, "--sql-dir", sql_dir]
    for step in (["adopt"], ["rehearse"], ["rollback", "--to", CORE, "--yes"], ["checklist"],
                 ["apply"], ["verify"]):
        result = cli(*base, *step)
        assert result.exit_code == 0, (step, result.output)
    assert CHAT_TABLES <= tables(path)

    with open(sql_dir / f"{CHAT}.sql", "a") as f:
        f.write("-- edited by hand\n")
    with connect(path) as c:
        c.execute('DROP INDEX "IX_ChatSessions_UserId"')
    overwrite_middle_page(path)

    result = cli(*base, "--json", "verify")

    assert result.exit_code == 1
    problems = failed(json.loads(result.stdout))
    assert any(CHAT in p and "changed since it was applied" in p for p in problems["migration_files"])
    assert "index IX_ChatSessions_UserId on ChatSessions: missing" in problems["drift"]
    assert any("table ChatMessages is damaged" in p for p in problems["integrity"])
