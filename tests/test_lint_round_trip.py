"""round-trip's last step: forward, rollback, then forward again on what the rollback left.

A rollback can give back the schema and still leave rows behind: the schema compares equal,
and only the second forward run finds that the migration cannot be applied again.
"""

from __future__ import annotations

from helpers import cli, history
from test_lint import BASE, CHANGE, lint, only, pg_dir, sql_dir
from test_lint_pg import pg_lint

SEED = "CREATE TABLE n (a);\n\nINSERT INTO t (id, name) VALUES (1, 'seeded');\n"
# Drops n but deletes the wrong row of t: the seeded row stays.
LEAVES_THE_ROW = "-- LOSES: every row of n\nDROP TABLE n;\nDELETE FROM t WHERE id = 2;\n"


def test_round_trip_reports_a_forward_file_that_fails_when_applied_again(tmp_path):
    d = sql_dir(tmp_path, SEED, LEAVES_THE_ROW)
    (f,) = only(lint(d)[1], "round-trip")
    assert (f["file"].endswith(f"{CHANGE}.sql"), f["line"], f["level"]) == (True, 6, "error")
    assert "fails when applying it again after its rollback" in f["message"]
    assert "UNIQUE constraint failed: t.id" in f["message"]


def test_apply_leaves_the_rows_to_lint_and_still_warns_of_the_schema(tmp_path):
    """apply's lint replays the schema only (apply runs the rows next, all or nothing): the
    seeded row left behind is lint's finding, not apply's; a rollback that leaves a table is."""
    d = sql_dir(tmp_path, SEED, LEAVES_THE_ROW)
    db = tmp_path / "x.db"
    result = cli("--sql-dir", d, "--database", db, "apply")
    assert result.exit_code == 0 and "round-trip" not in result.stderr
    assert history(db) == {BASE, CHANGE}
    d = sql_dir(tmp_path / "keeps", SEED, "-- LOSES: the seeded row of t\nDELETE FROM t WHERE id = 1;\n")
    result = cli("--sql-dir", d, "--database", tmp_path / "y.db", "apply")
    assert result.exit_code == 0
    assert "round-trip: rolling back does not give back the schema" in result.stderr


def test_round_trip_passes_a_rollback_that_deletes_what_it_seeded(tmp_path):
    d = sql_dir(tmp_path, SEED, "-- LOSES: every row of n, the seeded row of t\n"
                                "DROP TABLE n;\nDELETE FROM t WHERE id = 1;\n")
    assert only(lint(d)[1], "round-trip") == []


def test_round_trip_on_postgresql_applies_the_forward_file_again(pgdb, tmp_path):
    d = pg_dir(tmp_path, "CREATE TABLE n (a integer);\n\n"
                         "INSERT INTO t (id, name) VALUES (1, 'seeded');\n",
               "-- LOSES every row of n.\nDROP TABLE n;\nDELETE FROM t WHERE id = 2;\n")
    (f,) = only(pg_lint(pgdb.url, d)[1], "round-trip")
    assert f["file"].endswith(f"{CHANGE}.sql") and f["line"] == 6
    assert "fails when applying it again after its rollback" in f["message"]
    assert "duplicate key value violates unique constraint" in f["message"]


def test_round_trip_on_postgresql_names_another_schema_from_the_second_forward_run(pgdb, tmp_path):
    """The rollback gives the schema back but leaves a row; the forward file, run again, reads
    that row and creates another table: the second run's schema is compared, not assumed."""
    d = pg_dir(tmp_path, "CREATE TABLE n (a integer);\n\n"
                         "INSERT INTO t (id, name) SELECT count(*) + 1, 'seeded' FROM t;\n"
                         "DO $$ BEGIN IF (SELECT count(*) FROM t) > 1 THEN "
                         "CREATE TABLE extra (a integer); END IF; END $$;\n",
               "-- LOSES every row of n.\nDROP TABLE n;\n")
    (f,) = only(pg_lint(pgdb.url, d)[1], "round-trip")
    assert f["file"].endswith(f"{CHANGE}.sql") and f["line"] == 4
    assert "applied again after its rollback it gives another schema" in f["message"]
    assert "extra" in f["message"]
