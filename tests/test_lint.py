"""lint: each rule on a small migration that triggers it and one that does not.

SQLite rules run on real in-memory replays of the files; PostgreSQL's static
rules need only the parser (their round-trip is in test_lint_pg.py). No server here, so
nothing skips; the server tests go through conftest's pg_cluster, which fails under CI=true.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import cli, history

BASE = "0001_base"
CHANGE = "0002_change"
BASE_SQL = """\
-- Creates t (indexed, with a trigger) and child, whose rows go with t's.
-- Rollback drops both.

CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, note TEXT);
CREATE INDEX ix_t_name ON t (name);
CREATE TRIGGER tr_t AFTER INSERT ON t BEGIN SELECT 1; END;
CREATE TABLE child (id INTEGER PRIMARY KEY, t_id INTEGER REFERENCES t (id) ON DELETE CASCADE);
"""
BASE_ROLLBACK = """\
-- Rolls back 0001_base: drops child and t.
-- LOSES every row of child and t.

DROP TABLE child;
DROP TABLE t;
"""
HEADER = f"-- The change under test.\n-- depends: {BASE}\n\n"
ROLLBACK_HEADER = "-- Rolls back the change.\n\n"


def sql_dir(tmp_path: Path, forward: str, rollback: str | None = "", *, header=HEADER,
            rollback_header=ROLLBACK_HEADER) -> Path:
    d = tmp_path / "sql"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{BASE}.sql").write_text(BASE_SQL)
    (d / f"{BASE}.rollback.sql").write_text(BASE_ROLLBACK)
    (d / f"{CHANGE}.sql").write_text(header + forward)
    if rollback is not None:
        (d / f"{CHANGE}.rollback.sql").write_text(rollback_header + rollback)
    return d


def lint(d: Path, *args, dialect="sqlite"):
    result = cli("--sql-dir", d, "--json", "lint", "--dialect", dialect, *args)
    assert result.exit_code in (0, 1), result.stderr
    return result, json.loads(result.stdout)


def only(found, rule):
    return [f for f in found if f["rule"] == rule]


def test_the_projects_own_sql_has_no_finding():
    result = cli("lint")
    assert (result.exit_code, result.stdout) == (0, ""), result.stdout
    assert "0 error(s), 0 warning(s) in 4 file(s)" in result.stderr


PG_SQL = Path(__file__).resolve().parent.parent / "sql" / "postgresql"


def test_the_projects_postgresql_sql_has_no_finding_without_a_server():
    pg_sql = PG_SQL
    result = cli("--sql-dir", pg_sql, "lint", "--dialect", "postgresql", "--strict")
    assert (result.exit_code, result.stdout) == (0, ""), result.stdout


def test_a_finding_is_one_line_file_line_rule_message_and_exit_1(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n\nDELETE FROM t;\n", "DROP TABLE n;\n")
    result = cli("--sql-dir", d, "lint")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{d / CHANGE}.sql:6: data-loss: DELETE without WHERE deletes every row of t in a forward "
        "migration; if intended, say so in the header (a `-- LOSES:` line naming t), else keep "
        "the data",
        f"{d / CHANGE}.rollback.sql:3: data-loss: DROP TABLE n deletes every row of it; name n on "
        "a `-- LOSES:` line of the header so the reviewer sees the loss"]
    assert result.stderr.splitlines()[-1] == (
        "orchestra-schema: error: lint: 1 error(s), 1 warning(s) in 4 file(s); "
        "fix each finding listed")


def test_json_lists_file_line_rule_level_message(tmp_path):
    _, found = lint(sql_dir(tmp_path, "DELETE FROM t;\n"))
    assert found == [{"file": str(tmp_path / "sql" / f"{CHANGE}.sql"), "line": 4,
                      "rule": "data-loss", "level": "error", "message": found[0]["message"]}]


def test_warnings_fail_only_with_strict(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n", "DROP TABLE n;\n")
    assert cli("--sql-dir", d, "lint").exit_code == 0
    strict = cli("--sql-dir", d, "lint", "--strict")
    assert strict.exit_code == 1 and "(--strict)" in strict.stderr


def test_paths_lint_only_the_files_given(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n", None)
    _, found = lint(d, d / f"{BASE}.sql")
    assert found == []
    _, found = lint(d, d / f"{CHANGE}.sql")
    assert [f["rule"] for f in found] == ["no-rollback"]
    bad = cli("--sql-dir", d, "lint", tmp_path / "nothing.txt")
    assert bad.exit_code == 2 and "not a migration file" in bad.stderr


# ---- rules for both engines, SQLite side

def test_round_trip_names_what_the_rollback_leaves_behind(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\nCREATE INDEX ix_n ON n (a);\n"
                          "CREATE INDEX ix_t_note ON t (note);\n",
                "DROP TABLE n;\n")
    _, found = lint(d, "--strict")
    (f,) = only(found, "round-trip")
    assert (f["file"].endswith(".rollback.sql"), f["line"], f["level"]) == (True, 3, "error")
    assert "index ix_t_note on t: left over" in f["message"]
    assert "ix_n" not in f["message"]  # dropped with its table


def test_round_trip_names_what_the_rollback_drops_too_much(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n",
                "-- LOSES: n and t\nDROP TABLE n;\nDROP INDEX ix_t_name;\n")
    (f,) = only(lint(d)[1], "round-trip")
    assert "index ix_t_name on t: missing" in f["message"]


def test_round_trip_clean_pair(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\nCREATE INDEX ix_t_note ON t (note);\n",
                "-- LOSES: every row of n\nDROP INDEX ix_t_note;\nDROP TABLE n;\n")
    assert lint(d, "--strict")[1] == []


def test_round_trip_reports_a_statement_that_fails_at_its_line(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n\nCREATE INDEX ix ON missing (a);\n", "")
    (f,) = only(lint(d)[1], "round-trip")
    assert f["line"] == 6 and "no such table: main.missing" in f["message"]


def test_no_rollback(tmp_path):
    assert only(lint(sql_dir(tmp_path, "CREATE TABLE n (a);\n", None))[1], "no-rollback")[0][
        "line"] == 1
    assert only(lint(sql_dir(tmp_path / "b", "SELECT 1;\n", ""))[1], "no-rollback") == []


@pytest.mark.parametrize("statement, what", [
    ("DELETE FROM t;", "DELETE without WHERE deletes every row of t"),
    ("UPDATE t SET name = 'x';", "UPDATE without WHERE overwrites every row of t"),
    ("WITH x AS (SELECT 1) DELETE FROM \"t\";", "DELETE without WHERE deletes every row of t"),
    ("ALTER TABLE t DROP COLUMN note;", "DROP COLUMN note deletes its value in every row of t"),
    ("DROP TABLE child;", "DROP TABLE child deletes every row of it"),
])
def test_data_loss_is_an_error_in_a_forward_file(tmp_path, statement, what):
    (f,) = only(lint(sql_dir(tmp_path, statement + "\n"))[1], "data-loss")
    assert (f["level"], f["line"]) == ("error", 4) and f["message"].startswith(what)


@pytest.mark.parametrize("statement", [
    "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE name IS NULL);",
    "UPDATE t SET name = 'x' WHERE id = 1;",
    "CREATE TRIGGER tr_del AFTER DELETE ON t BEGIN DELETE FROM child; END;",
])
def test_data_loss_not_for_statements_keeping_rows(tmp_path, statement):
    assert only(lint(sql_dir(tmp_path, statement + "\n", ""))[1], "data-loss") == []


def test_data_loss_declared_in_the_header_is_intended(tmp_path):
    header = f"-- Empties t.\n-- LOSES: every row of t.\n-- depends: {BASE}\n\n"
    assert only(lint(sql_dir(tmp_path, "DELETE FROM t;\n", header=header))[1], "data-loss") == []
    other = f"-- Empties a table.\n-- LOSES: every row of child.\n-- depends: {BASE}\n\n"
    assert only(lint(sql_dir(tmp_path / "b", "DELETE FROM t;\n", header=other))[1], "data-loss")


def test_data_loss_in_a_rollback_is_a_warning(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n", "DROP TABLE n;\n")
    (f,) = only(lint(d)[1], "data-loss")
    assert (f["level"], f["file"].endswith(".rollback.sql")) == ("warning", True)


def test_header_missing_is_an_error(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n", "DROP TABLE n;\n",
                header="", rollback_header="")
    found = only(lint(d)[1], "header")
    assert {(Path(f["file"]).name, f["line"], f["level"]) for f in found} == {
        (f"{CHANGE}.sql", 1, "error"), (f"{CHANGE}.rollback.sql", 1, "error")}
    assert any("depends" in f["message"] for f in found)


def test_header_without_depends_after_the_first_migration(tmp_path):
    (f,) = only(lint(sql_dir(tmp_path, "SELECT 1;\n", "", header="-- A change.\n\n"))[1], "header")
    assert "`-- depends:`" in f["message"]
    assert only(lint(sql_dir(tmp_path / "b", "SELECT 1;\n", ""))[1], "header") == []


def test_header_with_todo_is_a_warning(tmp_path):
    header = f"-- TODO say what this does.\n-- depends: {BASE}\n\n"
    (f,) = only(lint(sql_dir(tmp_path, "SELECT 1;\n", "", header=header))[1], "header")
    assert f["level"] == "warning"


def test_a_lint_allow_line_waives_a_rule_for_its_file(tmp_path):
    header = f"-- Empties t.\n-- lint: allow data-loss\n-- depends: {BASE}\n\n"
    assert lint(sql_dir(tmp_path, "DELETE FROM t;\n", "", header=header))[1] == []


# ---- SQLite rules

@pytest.mark.parametrize("pragma", ["foreign_keys = OFF", "journal_mode = WAL",
                                    "main.legacy_alter_table=ON"])
def test_pragma_in_transaction(tmp_path, pragma):
    (f,) = only(lint(sql_dir(tmp_path, f"PRAGMA {pragma};\n", ""))[1], "pragma-in-transaction")
    assert f["line"] == 4 and f["level"] == "error"


def test_pragma_that_works_in_a_transaction_is_fine(tmp_path):
    assert lint(sql_dir(tmp_path, "PRAGMA defer_foreign_keys = ON;\n", ""))[1] == []


REBUILD = """\
CREATE TABLE t_new (id INTEGER PRIMARY KEY, name TEXT, note TEXT);
INSERT INTO t_new SELECT id, name, note FROM t;
DROP TABLE t;
ALTER TABLE t_new RENAME TO t;
"""


def test_rebuild_loses_names_each_index_and_trigger(tmp_path):
    found = lint(sql_dir(tmp_path, REBUILD, ""))[1]
    (f,) = only(found, "rebuild-loses")
    assert f["line"] == 6
    assert "index ix_t_name" in f["message"] and "trigger tr_t" in f["message"]
    assert only(found, "data-loss") == []  # the rows were copied: a rebuild is no loss


def test_rebuild_recreating_indexes_and_triggers(tmp_path):
    again = REBUILD + ("CREATE INDEX ix_t_name ON t (name);\n"
                       "CREATE TRIGGER tr_t AFTER INSERT ON t BEGIN SELECT 1; END;\n")
    found = lint(sql_dir(tmp_path, again, ""))[1]
    assert only(found, "rebuild-loses") == [] and only(found, "round-trip") == []
    (warning,) = only(found, "implicit-delete")  # child's cascade, were foreign keys on
    assert warning["level"] == "warning" and "child (ON DELETE CASCADE)" in warning["message"]


@pytest.mark.parametrize("statement", ["VACUUM;", "BEGIN;", "COMMIT;", "END TRANSACTION;",
                                       "ATTACH DATABASE 'x.db' AS x;", "ROLLBACK;"])
def test_not_transactional(tmp_path, statement):
    (f,) = only(lint(sql_dir(tmp_path, statement + "\n", ""))[1], "not-transactional")
    assert f["line"] == 4


def test_savepoints_are_transactional(tmp_path):
    d = sql_dir(tmp_path, "SAVEPOINT a;\nCREATE TABLE n (a);\nROLLBACK TO a;\nRELEASE a;\n", "")
    assert lint(d)[1] == []


def test_implicit_delete_names_the_tables_a_drop_reaches(tmp_path):
    header = f"-- Drops t.\n-- LOSES: every row of t.\n-- depends: {BASE}\n\n"
    d = sql_dir(tmp_path, "DROP TABLE t;\n", "", header=header)
    (f,) = only(lint(d)[1], "implicit-delete")
    assert f["level"] == "error" and f["line"] == 5
    assert "child (ON DELETE CASCADE)" in f["message"]


def test_implicit_delete_not_when_the_referencing_tables_go_too(tmp_path):
    header = f"-- Drops t and child.\n-- LOSES: every row of t and child.\n-- depends: {BASE}\n\n"
    d = sql_dir(tmp_path, "DROP TABLE child;\nDROP TABLE t;\n", "", header=header)
    assert only(lint(d)[1], "implicit-delete") == []


# ---- new, apply, rehearse

def test_new_lints_its_pair_and_shows_only_the_todo_warnings(tmp_path):
    d = sql_dir(tmp_path, "SELECT 1;\n", "")
    result = cli("--sql-dir", d, "new", "add_things")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "lint:" in line]
    assert len(warnings) == 2 and all(": header: the header still says TODO" in w
                                      for w in warnings)


def test_apply_warns_with_lint_errors_and_still_applies(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\nDELETE FROM t;\n", "DROP TABLE n;\n")
    db = tmp_path / "x.db"
    result = cli("--sql-dir", d, "--database", db, "apply")
    assert result.exit_code == 0
    assert f"orchestra-schema: warning: lint: {d / CHANGE}.sql:5: data-loss:" in result.stderr
    assert "rollback.sql" not in result.stderr  # errors only, not the rollback's warning
    assert history(db) == {BASE, CHANGE}
    assert "lint:" not in cli("--sql-dir", d, "--database", db, "apply").stderr  # nothing runs


# ---- PostgreSQL rules, read by PostgreSQL's parser

PG_BASE = """\
-- Creates t.

CREATE TABLE t (id integer PRIMARY KEY, name text, note text, p integer);
"""


def pg_dir(tmp_path: Path, forward: str, rollback: str = "") -> Path:
    d = tmp_path / "pg"
    d.mkdir(parents=True)
    (d / f"{BASE}.sql").write_text(PG_BASE)
    (d / f"{BASE}.rollback.sql").write_text("-- Drops t.\n-- LOSES every row of t.\n\n"
                                            "DROP TABLE t;\n")
    (d / f"{CHANGE}.sql").write_text(HEADER + forward)
    (d / f"{CHANGE}.rollback.sql").write_text(ROLLBACK_HEADER + rollback)
    return d


def pg_lint(tmp_path, forward, rollback=""):
    return lint(pg_dir(tmp_path, forward, rollback), dialect="postgresql")[1]


@pytest.mark.parametrize("rule, statement, says", [
    ("index-blocks-writes", 'CREATE INDEX ix ON "t" (name);', "SHARE lock"),
    ("index-blocks-writes", "ALTER TABLE t ADD CONSTRAINT u UNIQUE (name);", "ACCESS EXCLUSIVE"),
    ("rewrite", "ALTER TABLE t ALTER COLUMN name TYPE varchar(10);", "ACCESS EXCLUSIVE"),
    ("rewrite", "ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid();", "gen_random_uuid"),
    ("rewrite", "ALTER TABLE t ADD COLUMN n bigserial;", "bigserial"),
    ("validate-scan", "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES t (id);",
     "SHARE ROW EXCLUSIVE"),
    ("validate-scan", "ALTER TABLE t ADD CONSTRAINT c CHECK (p > 0);", "NOT VALID"),
    ("validate-scan", "ALTER TABLE t ALTER COLUMN name SET NOT NULL;", "IS NOT NULL) NOT VALID"),
    ("rename", "ALTER TABLE t RENAME COLUMN note TO notes;", "column t.note"),
    ("rename", "ALTER TABLE t RENAME TO t2;", "table t"),
    ("not-transactional", "CREATE INDEX CONCURRENTLY ix ON t (name);", "CONCURRENTLY"),
    ("not-transactional", "COMMIT;", "COMMIT"),
    ("data-loss", "TRUNCATE t;", "TRUNCATE t"),
    ("data-loss", "ALTER TABLE t DROP COLUMN note;", "DROP COLUMN note"),
    ("data-loss", "UPDATE t SET name = 'x';", "UPDATE without WHERE"),
])
def test_postgresql_rule_triggers(tmp_path, rule, statement, says):
    found = pg_lint(tmp_path, statement + "\n")
    (f,) = only(found, rule)
    assert f["line"] == 4 and f["level"] == "error" and says in f["message"], f["message"]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE n (a integer);\nCREATE INDEX ix_n ON n (a);\n"
    "ALTER TABLE n ADD CONSTRAINT c CHECK (a > 0), ALTER COLUMN a SET NOT NULL;\n"
    "ALTER TABLE n ALTER COLUMN a TYPE bigint, ADD COLUMN u uuid DEFAULT gen_random_uuid();\n"
    "ALTER TABLE n RENAME COLUMN a TO b;",  # a table created in the same file is new and empty
    "ALTER TABLE t ADD COLUMN created timestamptz DEFAULT now();",
    "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES t (id) NOT VALID;",
    "ALTER TABLE t VALIDATE CONSTRAINT fk;",
    "UPDATE t SET name = 'x' WHERE id = 1;",
])
def test_postgresql_rules_stay_quiet_on_the_safe_patterns(tmp_path, statement):
    assert pg_lint(tmp_path, statement + "\n") == []


def test_postgresql_syntax_error_is_a_finding_at_its_line(tmp_path):
    (f,) = pg_lint(tmp_path, "SELECT 1;\nCREATE TABLE (;\n")
    assert (f["rule"], f["line"]) == ("syntax", 5)


def test_rehearse_warns_with_lint_errors_of_the_rollback_it_rehearses(tmp_path):
    d = sql_dir(tmp_path, "CREATE TABLE n (a);\n",
                "-- LOSES every row of n.\nPRAGMA foreign_keys = OFF;\nDROP TABLE n;\n")
    db = tmp_path / "x.db"
    assert cli("--sql-dir", d, "--database", db, "apply").exit_code == 0
    result = cli("--sql-dir", d, "--database", db, "rehearse", "--to", BASE, "--memory")
    assert result.exit_code == 0, result.stderr
    assert (f"orchestra-schema: warning: lint: {d / CHANGE}.rollback.sql:4: "
            "pragma-in-transaction:") in result.stderr


def test_rebuild_by_renaming_the_old_table_first_loses_what_it_took_along(tmp_path):
    rebuild = ("ALTER TABLE t RENAME TO t_old;\n"
               "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, note TEXT);\n"
               "INSERT INTO t SELECT id, name, note FROM t_old;\nDROP TABLE t_old;\n")
    found = lint(sql_dir(tmp_path, rebuild, ""))[1]
    (f,) = only(found, "rebuild-loses")
    assert f["line"] == 7
    for lost in ("index ix_t_name", "trigger tr_t", "the foreign key of child"):
        assert lost in f["message"]
    assert only(found, "data-loss") == []


def test_round_trip_sees_a_check_constraint_the_rollback_does_not_restore(tmp_path):
    forward = ("CREATE TABLE t_new (id INTEGER PRIMARY KEY, name TEXT CHECK (name <> ''), note TEXT);\n"
               "INSERT INTO t_new SELECT id, name, note FROM t;\nDROP TABLE t;\n"
               "ALTER TABLE t_new RENAME TO t;\nCREATE INDEX ix_t_name ON t (name);\n"
               "CREATE TRIGGER tr_t AFTER INSERT ON t BEGIN SELECT 1; END;\n")
    (f,) = only(lint(sql_dir(tmp_path, forward, ""))[1], "round-trip")
    assert "table t: its definition differs" in f["message"]


def test_apply_no_lint_skips_the_review(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_a.sql").write_text("CREATE TABLE a(x);\n")  # no header, no rollback: lint errors
    with_lint = cli("--sql-dir", sql, "-d", tmp_path / "a.db", "apply")
    without = cli("--sql-dir", sql, "-d", tmp_path / "b.db", "apply", "--no-lint")
    assert with_lint.exit_code == without.exit_code == 0
    assert "warning: lint:" in with_lint.stderr and "lint" not in without.stderr
