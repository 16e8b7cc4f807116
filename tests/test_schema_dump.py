"""schema: the committed schema files are current, and --check catches one that is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import cli

REPO = Path(__file__).resolve().parent.parent
SQLITE_SCHEMA = REPO / "sql" / "schema.sqlite.sql"


def test_committed_sqlite_schema_file_is_current():
    result = cli("schema", "--check", SQLITE_SCHEMA)
    assert result.exit_code == 0, result.stdout
    assert result.stdout == ""


def test_schema_prints_each_table_then_its_indexes_and_triggers_by_name(tmp_path):
    d = tmp_path / "sql"
    d.mkdir()
    (d / "1_a.sql").write_text(
        "-- x\nCREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT UNIQUE);\n"
        "CREATE INDEX ix_b_v2 ON b (v, id);\nCREATE INDEX ix_b_v1 ON b (v);\n"
        "CREATE TRIGGER tr_b AFTER INSERT ON b BEGIN SELECT 1; END;\n"
        "CREATE TABLE a (id INTEGER PRIMARY KEY);\nCREATE VIEW v AS SELECT * FROM a;\n")
    out = cli("--sql-dir", d, "schema").stdout
    body = [line for line in out.splitlines() if line and not line.startswith("--")]
    assert body == ["CREATE TABLE a (id INTEGER PRIMARY KEY);",
                    "CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT UNIQUE);",
                    "CREATE INDEX ix_b_v1 ON b (v);", "CREATE INDEX ix_b_v2 ON b (v, id);",
                    "CREATE TRIGGER tr_b AFTER INSERT ON b BEGIN SELECT 1; END;",
                    "CREATE VIEW v AS SELECT * FROM a;"]
    assert cli("--sql-dir", d, "schema").stdout == out  # no timestamps: the same every run


def test_check_exits_1_with_a_diff_when_a_migration_changed_the_schema(tmp_path):
    d = tmp_path / "sql"
    shutil.copytree(REPO / "sql" / "sqlite", d)
    (d / "20250922204130_Notes.sql").write_text(
        "-- Adds Notes.\n-- depends: 20250922204129_AddChatTables\n\n"
        'CREATE TABLE "Notes" ("Id" TEXT NOT NULL PRIMARY KEY);\n')
    (d / "20250922204130_Notes.rollback.sql").write_text(
        "-- Drops Notes.\n-- LOSES every row of Notes.\n\nDROP TABLE \"Notes\";\n")
    result = cli("--sql-dir", d, "schema", "--check", SQLITE_SCHEMA)
    assert result.exit_code == 1
    assert f"--- {SQLITE_SCHEMA}\n+++ migrations\n" in result.stdout
    assert '+CREATE TABLE "Notes" ("Id" TEXT NOT NULL PRIMARY KEY);' in result.stdout
    assert result.stderr.startswith(f"orchestra-schema: error: {SQLITE_SCHEMA}: differs")
    data = json.loads(cli("--sql-dir", d, "--json", "schema", "--check", SQLITE_SCHEMA).stdout)
    assert data["matches"] is False and "+CREATE TABLE" in data["diff"]


def test_check_of_a_missing_file_is_a_usage_error(tmp_path):
    result = cli("schema", "--check", tmp_path / "none.sql")
    assert result.exit_code == 2 and "schema file not found" in result.stderr
