"""lint and `-- transactional: false` (yoyo's directive, issue 22): a migration whose forward
file's header says it runs statement by statement, each committed on its own.

On PostgreSQL, CONCURRENTLY, VACUUM and a new enum value used later are fine there (and only
there), what should stay atomic is warned about (non-transactional-mix), and the round-trip runs
such a file statement by statement too. On SQLite the directive only splits the transaction:
transactional-directive says so once a migration, a warning that apply does not show.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli, history
from test_lint import BASE, BASE_ROLLBACK, BASE_SQL, CHANGE, PG_BASE, lint, only
from test_lint_pg import pg_lint as pg_server_lint

DIRECTIVE = "-- transactional: false\n"
ADD = "add `-- transactional: false` to the file's header (the migration then runs statement by statement)"
MIX = ("a kill between statements leaves some done and some not; keep CONCURRENTLY statements "
       "in a migration of their own")
PG_TYPES = PG_BASE + "CREATE TYPE mood AS ENUM ('calm');\n"


def write(tmp_path: Path, forward: str, rollback: str | None = "", *, directive=False,
          rollback_directive=False, dialect="postgresql") -> Path:
    """0001_base (t, and on PostgreSQL the enum mood) and 0002_change: forward and rollback
    with a header each, `-- transactional: false` in the ones asked for."""
    d = tmp_path / dialect
    d.mkdir(parents=True)
    base, base_rollback = ((PG_TYPES, "-- Drops t and mood.\n-- LOSES every row of t.\n\n"
                                      "DROP TABLE t;\nDROP TYPE mood;\n")
                           if dialect == "postgresql" else (BASE_SQL, BASE_ROLLBACK))
    (d / f"{BASE}.sql").write_text(base)
    (d / f"{BASE}.rollback.sql").write_text(base_rollback)
    (d / f"{CHANGE}.sql").write_text(
        f"-- The change under test.\n{DIRECTIVE if directive else ''}-- depends: {BASE}\n\n"
        + forward)
    if rollback is not None:
        (d / f"{CHANGE}.rollback.sql").write_text(
            f"-- Rolls back the change.\n{DIRECTIVE if rollback_directive else ''}\n" + rollback)
    return d


def pg(d: Path, *args):
    return lint(d, *args, dialect="postgresql")[1]


# ---- index-blocks-writes points at the concurrent form and the directive

@pytest.mark.parametrize("statement, says", [
    ("CREATE INDEX ix ON t (name);",
     "build it with `CREATE INDEX CONCURRENTLY` in a migration of its own whose header says "
     "`-- transactional: false`"),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (name);",
     "`CREATE UNIQUE INDEX CONCURRENTLY` first (a migration of its own whose header says "
     "`-- transactional: false`), then `ADD CONSTRAINT u ... USING INDEX`"),
])
def test_index_blocks_writes_suggests_concurrently_with_the_directive(tmp_path, statement, says):
    (f,) = only(pg(write(tmp_path, statement + "\n")), "index-blocks-writes")
    assert says in f["message"] and "by hand" not in f["message"]


# ---- not-transactional: needs the directive, says how to add it

NEEDS_AUTOCOMMIT = [
    ("CREATE INDEX CONCURRENTLY ix ON t (name);", "CREATE INDEX CONCURRENTLY ix"),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON t (name);", "CREATE INDEX CONCURRENTLY ix"),
    ("DROP INDEX CONCURRENTLY IF EXISTS ix_old;", "DROP INDEX CONCURRENTLY ix_old"),
    ("REINDEX INDEX CONCURRENTLY t_pkey;", "REINDEX INDEX CONCURRENTLY t_pkey"),
    ("REINDEX TABLE CONCURRENTLY t;", "REINDEX TABLE CONCURRENTLY t"),
    ("VACUUM (ANALYZE) t;", "VACUUM"),
    ("ALTER TABLE t DETACH PARTITION t_old CONCURRENTLY;", "DETACH PARTITION ... CONCURRENTLY"),
]


@pytest.mark.parametrize("statement, says", NEEDS_AUTOCOMMIT)
def test_not_transactional_without_the_directive_says_why_and_how(tmp_path, statement, says):
    (f,) = only(pg(write(tmp_path, statement + "\n")), "not-transactional")
    assert (f["line"], f["level"]) == (4, "error")
    assert f["message"] == (f"{says} cannot run inside the transaction orchestra-schema runs "
                            f"each migration in; {ADD}")


@pytest.mark.parametrize("statement, says", NEEDS_AUTOCOMMIT)
def test_not_transactional_accepts_them_in_a_directive_file(tmp_path, statement, says):
    assert pg(write(tmp_path, statement + "\n", directive=True)) == []


def test_the_forward_files_directive_governs_its_rollback(tmp_path):
    forward, rollback = "CREATE INDEX CONCURRENTLY ix ON t (name);\n", "DROP INDEX CONCURRENTLY ix;\n"
    assert pg(write(tmp_path / "a", forward, rollback, directive=True)) == []
    found = pg(write(tmp_path / "b", "SELECT 1;\n", rollback))
    (f,) = only(found, "not-transactional")
    assert f["file"].endswith(f"{CHANGE}.rollback.sql") and ADD in f["message"]
    # a rollback may say it for itself
    assert pg(write(tmp_path / "c", "SELECT 1;\n", rollback, rollback_directive=True)) == []


def test_only_false_is_the_directive(tmp_path):
    d = write(tmp_path, "CREATE INDEX CONCURRENTLY ix ON t (name);\n")
    text = (d / f"{CHANGE}.sql").read_text()
    (d / f"{CHANGE}.sql").write_text(text.replace("-- depends:", "-- transactional: true\n-- depends:"))
    assert [f["rule"] for f in pg(d)] == ["not-transactional"]


def test_a_directive_yoyo_cannot_read_is_refused_before_any_rule(tmp_path):
    """yoyo reads true or false only (it fails on anything else): so does the tool."""
    d = write(tmp_path, "CREATE INDEX CONCURRENTLY ix ON t (name);\n")
    text = (d / f"{CHANGE}.sql").read_text()
    (d / f"{CHANGE}.sql").write_text(text.replace("-- depends:", "-- transactional: no\n-- depends:"))
    result = cli("--sql-dir", d, "lint", "--dialect", "postgresql")
    assert result.exit_code == 2 and "`-- transactional: no`: write true or false" in result.stderr


def test_the_directive_counts_only_in_the_header(tmp_path):
    d = write(tmp_path, "SELECT 1;\n-- transactional: false\nCREATE INDEX CONCURRENTLY ix ON t (name);\n")
    assert [f["rule"] for f in pg(d)] == ["not-transactional"]


@pytest.mark.parametrize("statement", ["BEGIN;", "COMMIT;", "ROLLBACK;", "START TRANSACTION;"])
def test_transaction_statements_stay_errors_whatever_the_directive(tmp_path, statement):
    for directive in (False, True):
        (f,) = only(pg(write(tmp_path / str(directive), statement + "\n", directive=directive)),
                    "not-transactional")
        assert f["level"] == "error" and "which orchestra-schema does for each" in f["message"]


def test_analyze_runs_in_a_transaction(tmp_path):
    assert pg(write(tmp_path, "ANALYZE t;\n")) == []


ADD_VALUE = "ALTER TYPE mood ADD VALUE 'angry';\n"


def test_a_new_enum_value_alone_runs_in_the_migrations_transaction(tmp_path):
    """PostgreSQL 12 and later run ADD VALUE in a transaction block: no finding."""
    assert pg(write(tmp_path, ADD_VALUE)) == []


def test_a_new_enum_value_used_in_the_same_transaction_is_an_error(tmp_path):
    use = "ALTER TABLE t ADD COLUMN m mood;\nUPDATE t SET m = 'angry' WHERE id = 1;\n"
    (f,) = only(pg(write(tmp_path / "a", ADD_VALUE + use)), "not-transactional")
    assert (f["line"], f["level"]) == (4, "error")
    assert "ALTER TYPE mood ADD VALUE 'angry' commits only with the migration, and line 6 uses" \
           in f["message"]
    assert "use it in a later migration, or " + ADD in f["message"]
    found = pg(write(tmp_path / "b", ADD_VALUE + use, directive=True))
    assert only(found, "not-transactional") == []
    assert [f["rule"] for f in found] == ["non-transactional-mix"]  # the type, then t


@pytest.mark.parametrize("later", [
    "ALTER TABLE t ADD COLUMN angry integer;\n",  # a name, not the value
    "UPDATE t SET note = 'calm' WHERE id = 1;\n",  # another value
])
def test_a_new_enum_value_not_used_is_no_finding(tmp_path, later):
    assert only(pg(write(tmp_path, ADD_VALUE + later)), "not-transactional") == []


def test_a_value_added_to_a_type_created_in_the_same_file_can_be_used(tmp_path):
    forward = ("CREATE TYPE level AS ENUM ('low');\nALTER TYPE level ADD VALUE 'high';\n"
               "CREATE TABLE n (l level DEFAULT 'high');\n")
    assert only(pg(write(tmp_path, forward)), "not-transactional") == []


# ---- non-transactional-mix

@pytest.mark.parametrize("forward", [
    "CREATE INDEX CONCURRENTLY ix_t_name ON t (name);\n",
    "CREATE INDEX CONCURRENTLY ix_t_name2 ON t (name);\nDROP INDEX CONCURRENTLY ix_t_name;\n",
    "CREATE INDEX CONCURRENTLY ix_a ON t (name);\nCREATE INDEX CONCURRENTLY ix_b ON t (note);\n"
    "DROP INDEX CONCURRENTLY ix_a;\nREINDEX INDEX CONCURRENTLY ix_b;\nVACUUM t;\n",
    "ALTER TYPE mood ADD VALUE 'angry';\nALTER TYPE mood ADD VALUE 'sad';\n",
])
def test_one_table_in_a_directive_file_is_no_mix(tmp_path, forward):
    assert pg(write(tmp_path, forward, directive=True)) == []


@pytest.mark.parametrize("forward, line, says", [
    ("CREATE INDEX CONCURRENTLY ix ON t (name);\nUPDATE t SET note = '' WHERE id = 1;\n", 6,
     "UPDATE changes rows"),
    ("INSERT INTO t (id) VALUES (1);\nDELETE FROM t WHERE id = 1;\n", 5, "INSERT changes rows"),
    ("CREATE INDEX CONCURRENTLY ix ON t (name);\nCREATE TABLE u (a integer);\n"
     "CREATE INDEX CONCURRENTLY ix_u ON u (a);\n", 6, "changing u here after t at line 5"),
    ("CREATE INDEX CONCURRENTLY ix ON t (name);\nALTER TYPE mood ADD VALUE 'angry';\n", 6,
     "changing mood here after t at line 5"),
])
def test_a_directive_file_mixing_what_should_be_atomic_is_warned_once(tmp_path, forward, line, says):
    (f,) = only(pg(write(tmp_path, forward, directive=True)), "non-transactional-mix")
    assert (f["line"], f["level"]) == (line, "warning")
    assert f["message"] == (f"{says} in a file run statement by statement (`-- transactional: "
                            f"false` in its header): {MIX}")


def test_no_mix_in_a_transactional_file(tmp_path):
    forward = "CREATE TABLE u (a integer);\nUPDATE t SET note = '' WHERE id = 1;\n"
    assert pg(write(tmp_path, forward)) == []


def test_a_rollback_run_statement_by_statement_is_checked_too(tmp_path):
    d = write(tmp_path, "CREATE INDEX CONCURRENTLY ix ON t (name);\n",
              "DROP INDEX CONCURRENTLY ix;\nUPDATE t SET note = NULL WHERE id = 1;\n", directive=True)
    (f,) = only(pg(d), "non-transactional-mix")
    assert f["file"].endswith(f"{CHANGE}.rollback.sql") and f["line"] == 4
    assert f"`-- transactional: false` in {CHANGE}.sql" in f["message"]


def test_mix_fails_only_with_strict(tmp_path):
    d = write(tmp_path, "INSERT INTO t (id) VALUES (1);\n", "DELETE FROM t WHERE id = 1;\n",
              directive=True)
    assert cli("--sql-dir", d, "lint", "--dialect", "postgresql").exit_code == 0
    assert cli("--sql-dir", d, "lint", "--dialect", "postgresql", "--strict").exit_code == 1


# ---- SQLite: the directive is accepted and said once

SAYS = ("on SQLite every statement is transactional: `-- transactional: false` only makes each "
        "statement its own transaction, and a kill leaves the statements before it done; "
        "remove the line")


@pytest.mark.parametrize("directive, rollback_directive, where", [
    (True, False, f"{CHANGE}.sql"),
    (True, True, f"{CHANGE}.sql"),  # the rollback repeating it: still once, at the forward file
    (False, True, f"{CHANGE}.rollback.sql"),
])
def test_sqlite_says_once_what_the_directive_does(tmp_path, directive, rollback_directive, where):
    d = write(tmp_path, "CREATE TABLE n (a);\n", "-- LOSES every row of n.\nDROP TABLE n;\n",
              directive=directive, rollback_directive=rollback_directive, dialect="sqlite")
    result, found = lint(d)
    assert result.exit_code == 0
    (f,) = found
    assert (f["rule"], f["level"], f["message"]) == ("transactional-directive", "warning", SAYS)
    assert f["file"].endswith(where) and f["line"] == 2  # the directive's line


def test_sqlite_directive_fails_strict_unless_waived_and_apply_does_not_show_it(tmp_path):
    d = write(tmp_path, "CREATE TABLE n (a);\n", "-- LOSES every row of n.\nDROP TABLE n;\n",
              directive=True, dialect="sqlite")
    assert cli("--sql-dir", d, "lint", "--strict").exit_code == 1
    db = tmp_path / "x.db"
    result = cli("--sql-dir", d, "--database", db, "apply")
    assert result.exit_code == 0 and "lint" not in result.stderr, result.stderr
    assert history(db) == {BASE, CHANGE}
    forward = d / f"{CHANGE}.sql"
    forward.write_text(forward.read_text().replace(
        DIRECTIVE, DIRECTIVE + "-- lint: allow transactional-directive\n"))
    assert cli("--sql-dir", d, "lint", "--strict").exit_code == 0


def test_sqlite_vacuum_stays_an_error_with_the_directive(tmp_path):
    d = write(tmp_path, "VACUUM;\n", directive=True, dialect="sqlite")
    (f,) = only(lint(d)[1], "not-transactional")
    assert "(with `-- transactional: false` too: each statement's own)" in f["message"]


# ---- round-trip: a directive file is replayed statement by statement, CONCURRENTLY included

CONCURRENT = "CREATE INDEX CONCURRENTLY ix_t_name ON t (name);\n"
DROP_CONCURRENT = "DROP INDEX CONCURRENTLY ix_t_name;\n"


def test_sqlite_round_trip_of_a_directive_file(tmp_path):
    d = write(tmp_path, "CREATE INDEX ix_n ON t (note);\n", "DROP INDEX ix_n;\n",
              directive=True, dialect="sqlite")
    assert [f["rule"] for f in lint(d)[1]] == ["transactional-directive"]


def test_postgresql_round_trip_of_concurrent_index_and_its_drop(pgdb, tmp_path):
    d = write(tmp_path, CONCURRENT, DROP_CONCURRENT, directive=True)
    result, found = pg_server_lint(pgdb.url, d, "--strict")
    assert (result.exit_code, found) == (0, [])


def test_postgresql_round_trip_runs_the_concurrent_statements(pgdb, tmp_path):
    """Not left out: a rollback that forgets the index is found."""
    d = write(tmp_path, CONCURRENT + "CREATE INDEX CONCURRENTLY ix_t_note ON t (note);\n",
              DROP_CONCURRENT, directive=True)
    (f,) = only(pg_server_lint(pgdb.url, d)[1], "round-trip")
    assert "ix_t_note" in f["message"] and "ix_t_name" not in f["message"]


def test_postgresql_round_trip_runs_each_statement_in_its_own_transaction(pgdb, tmp_path):
    """A new enum value used by the next statement: fails in one transaction, not one by one."""
    forward = ADD_VALUE + "SELECT 'angry'::mood;\n"
    rollback = "DROP TYPE mood;\nCREATE TYPE mood AS ENUM ('calm');\n"
    (f,) = only(pg_server_lint(pgdb.url, write(tmp_path / "a", forward, rollback))[1], "round-trip")
    assert f["line"] == 5 and "unsafe use of new value" in f["message"], f["message"]
    d = write(tmp_path / "b", forward, rollback, directive=True)
    assert pg_server_lint(pgdb.url, d, "--strict")[1] == []


def test_postgresql_round_trip_builds_an_earlier_directive_migration(pgdb, tmp_path):
    """A migration before the one linted, run statement by statement, makes its index in the
    scratch database: the later rollback that drops it does not fail."""
    d = write(tmp_path, CONCURRENT, DROP_CONCURRENT, directive=True)
    (d / "0003_drop.sql").write_text(f"-- Drops the index.\n{DIRECTIVE}-- depends: {CHANGE}\n\n"
                                     + DROP_CONCURRENT)
    (d / "0003_drop.rollback.sql").write_text("-- Builds it again.\n\n" + CONCURRENT)
    result, found = pg_server_lint(pgdb.url, d, "--strict", d / "0003_drop.sql")
    assert (result.exit_code, found) == (0, [])
