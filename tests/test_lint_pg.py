"""lint's round-trip and schema on PostgreSQL: a real throwaway cluster (tests/pgserver.py)."""

from __future__ import annotations

import json
from pathlib import Path


from helpers import cli
from test_lint import CHANGE, only, pg_dir

REPO = Path(__file__).resolve().parent.parent
PG_SQL = REPO / "sql" / "postgresql"
PG_SCHEMA = REPO / "sql" / "schema.postgresql.sql"


def pg_lint(url, d, *args):
    result = cli("--database", url, "--sql-dir", d, "--json", "lint", *args)
    assert result.exit_code in (0, 1), result.stderr
    return result, json.loads(result.stdout)


def scratch_databases(pgdb) -> list[str]:
    return [r[0] for r in pgdb.rows(
        "SELECT datname FROM pg_database WHERE datname LIKE 'orchestra_schema_scratch%'")]


def test_the_projects_postgresql_sql_has_no_finding_with_a_server(pgdb):
    result, found = pg_lint(pgdb.url, PG_SQL)
    assert (result.exit_code, found) == (0, [])
    assert scratch_databases(pgdb) == []  # the scratch database is dropped afterwards


def test_round_trip_names_what_the_rollback_leaves_behind(pgdb, tmp_path):
    d = pg_dir(tmp_path, "CREATE TABLE n (a integer PRIMARY KEY);\nCREATE TABLE m (b integer);\n"
                         "ALTER TABLE m ADD CONSTRAINT m_b CHECK (b > 0);\n",
               "-- LOSES every row of n and m.\n"
               "ALTER TABLE m DROP CONSTRAINT m_b;\nDROP TABLE n;\n")
    (f,) = only(pg_lint(pgdb.url, d)[1], "round-trip")
    assert f["file"].endswith(f"{CHANGE}.rollback.sql") and f["line"] == 4
    assert "table m: left over" in f["message"] and "table n" not in f["message"]
    clean = pg_dir(tmp_path / "b", "CREATE TABLE n (a integer PRIMARY KEY);\n",
                   "-- LOSES every row of n.\nDROP TABLE n;\n")
    assert pg_lint(pgdb.url, clean)[1] == []


def test_round_trip_names_what_the_rollback_drops_too_much(pgdb, tmp_path):
    d = pg_dir(tmp_path, "CREATE TABLE n (a integer);\n",
               "-- LOSES every row of n and t's note.\n"
               "DROP TABLE n;\nALTER TABLE t DROP COLUMN note;\n")
    (f,) = only(pg_lint(pgdb.url, d)[1], "round-trip")
    assert "column t.note: missing" in f["message"]


def test_round_trip_reports_the_failing_statement_at_its_line(pgdb, tmp_path):
    d = pg_dir(tmp_path, "CREATE TABLE n (a integer);\n\nCREATE INDEX ix ON missing (a);\n")
    (f,) = only(pg_lint(pgdb.url, d)[1], "round-trip")
    assert f["line"] == 6 and 'relation "missing" does not exist' in f["message"]


def test_committed_postgresql_schema_file_is_current(pgdb):
    result = cli("--database", pgdb.url, "--sql-dir", PG_SQL, "schema", "--check", PG_SCHEMA)
    assert result.exit_code == 0, result.stdout
    assert scratch_databases(pgdb) == []


def test_postgresql_schema_check_shows_the_change(pgdb, tmp_path):
    d = pg_dir(tmp_path, "CREATE TABLE n (a integer PRIMARY KEY);\n",
               "-- LOSES every row of n.\nDROP TABLE n;\n")
    on_server = ("--database", pgdb.url, "--sql-dir", d, "schema")
    committed = tmp_path / "schema.sql"
    committed.write_text(cli(*on_server).stdout.replace("integer", "bigint", 1))
    result = cli(*on_server, "--check", committed)
    assert result.exit_code == 1
    assert "-    a bigint NOT NULL," in result.stdout
    assert "+    a integer NOT NULL," in result.stdout


def test_no_password_in_any_output(pgdb, tmp_path):
    from pgserver import PASSWORD
    d = pg_dir(tmp_path, "CREATE INDEX ix ON t (name);\n")
    ok = cli("--database", pgdb.url, "--sql-dir", d, "lint")
    bad = cli("--database", pgdb.url.replace("%3BP", "%3Bx"), "--sql-dir", d, "lint")
    assert ok.exit_code == 1 and bad.exit_code == 6
    assert "password authentication failed" in bad.stderr
    for out in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert PASSWORD not in out and "s3cret" not in out
