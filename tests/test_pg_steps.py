"""`-- transactional: false` on a real PostgreSQL server: a CREATE INDEX CONCURRENTLY
migration for ChatMessages runs statement by statement, resumes where it stopped, repairs
the INVALID index a failed build leaves, and rolls back the same way."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import cli
from orchestra_schema.migrations import default_sql_dir
from pgserver import PASSWORD

CHAT = "20250927103132_AddChatTables"
INDEX_ID = "20261208000000_ChatMessagesAuthorIndex"
INDEX = "IX_ChatMessages_Author"
FORWARD = f"""-- The author index, built without blocking the app's writes.
-- transactional: false
-- depends: {CHAT}
CREATE INDEX CONCURRENTLY "{INDEX}" ON "ChatMessages" ("Author");
"""
ROLLBACK = f"""DROP INDEX CONCURRENTLY "{INDEX}";
"""


def sql_dir(tmp_path, forward=FORWARD, rollback=ROLLBACK, name=INDEX_ID):
    """The shipped PostgreSQL migrations and one more."""
    where = tmp_path / "sql"
    shutil.copytree(default_sql_dir("postgresql"), where)
    (where / f"{name}.sql").write_text(forward)
    (where / f"{name}.rollback.sql").write_text(rollback)
    return where


def pg(database, where, *args):
    result = cli("--database", database.url, "--sql-dir", where, *args)
    assert PASSWORD not in result.stdout + result.stderr
    return result


def index_state(database, name=INDEX):
    rows = database.rows("SELECT x.indisvalid FROM pg_index x JOIN pg_class c "
                         "ON c.oid = x.indexrelid WHERE c.relname = %s", (name,))
    return None if not rows else "valid" if rows[0][0] else "invalid"


def history(database) -> set[str]:
    return {r[0] for r in database.rows("SELECT migration_id FROM _yoyo_migration")}


def add_messages(database, count=200, author="author {}"):
    database.run_sql(f"""
        INSERT INTO "ChatSessions" VALUES ('51462f0a-ef08-4c51-aaf2-89fc4e821db8', 'u1', 'i1',
            't', now(), now()) ON CONFLICT DO NOTHING;
        INSERT INTO "ChatMessages" SELECT gen_random_uuid(),
            '51462f0a-ef08-4c51-aaf2-89fc4e821db8', format('{author}', n % 7), 'hello', 0,
            now(), NULL FROM generate_series(1, {count}) AS n;
    """)


def test_a_concurrent_index_applies_and_rolls_back_statement_by_statement(pgdb, tmp_path):
    where = sql_dir(tmp_path)
    assert pg(pgdb, where, "apply", "--to", CHAT).exit_code == 0
    add_messages(pgdb)
    result = pg(pgdb, where, "apply")
    assert result.exit_code == 0, result.output
    assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)
    assert "_orchestra_schema_progress" not in pgdb.tables()  # only while a run is part way
    assert pg(pgdb, where, "-q", "verify").exit_code == 0
    result = pg(pgdb, where, "rollback", "--only", INDEX_ID, "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    assert index_state(pgdb) is None and INDEX_ID not in history(pgdb)
    assert pg(pgdb, where, "-q", "verify").exit_code == 0


def test_a_failed_statement_is_named_and_the_next_run_resumes_after_the_done_ones(pgdb, tmp_path):
    """Statement 2 fails: statement 1 stays done and recorded (status and verify say so);
    with statement 2 fixed, apply resumes at it and does not run statement 1 again."""
    forward = FORWARD + 'CREATE INDEX CONCURRENTLY "IX_Bad" ON "ChatMessages" ("Nope");\n'
    where = sql_dir(tmp_path, forward, 'DROP INDEX CONCURRENTLY IF EXISTS "IX_Bad";\n' + ROLLBACK)
    assert pg(pgdb, where, "apply", "--to", CHAT).exit_code == 0
    result = pg(pgdb, where, "apply")
    assert result.exit_code == 4, result.output
    assert f"{INDEX_ID}: statement 2 in" in result.stderr and '"Nope" does not exist' in result.stderr
    assert "statement 1 of 2 stay done and recorded" in result.stderr
    assert index_state(pgdb) == "valid" and INDEX_ID not in history(pgdb)
    status = json.loads(pg(pgdb, where, "--json", "status").stdout)
    partly = {m["id"]: m["partly"] for m in status["migrations"]}
    assert partly[INDEX_ID].startswith("partly applied: statement 1 of 2 done")
    verify = pg(pgdb, where, "verify")
    assert verify.exit_code == 1 and f"{INDEX_ID}: partly applied" in verify.stdout
    # statement 1 changed: refused; statement 2 fixed: resumed there
    (where / f"{INDEX_ID}.sql").write_text(forward.replace('("Author")', '("Content")'))
    assert pg(pgdb, where, "apply").exit_code == 5
    (where / f"{INDEX_ID}.sql").write_text(forward.replace('"Nope"', '"CreatedAt"'))
    pgdb.run_sql(f'DROP INDEX "{INDEX}"')  # were statement 1 run again, it would build this
    result = pg(pgdb, where, "apply")
    assert result.exit_code == 0, result.output
    assert index_state(pgdb) is None and index_state(pgdb, "IX_Bad") == "valid"
    assert INDEX_ID in history(pgdb) and "_orchestra_schema_progress" not in pgdb.tables()


def test_an_invalid_index_a_failed_build_left_is_named_dropped_and_built_again(pgdb, tmp_path):
    """A UNIQUE build on duplicates fails part way and PostgreSQL keeps the index INVALID:
    verify names it; once the data is fixed, apply drops it and builds it again."""
    unique = FORWARD.replace("CREATE INDEX", "CREATE UNIQUE INDEX")
    where = sql_dir(tmp_path, unique)
    assert pg(pgdb, where, "apply", "--to", CHAT).exit_code == 0
    add_messages(pgdb, 20)
    result = pg(pgdb, where, "apply")
    assert result.exit_code == 4 and "could not create unique index" in result.stderr
    assert index_state(pgdb) == "invalid"
    verify = pg(pgdb, where, "verify")
    assert verify.exit_code == 1 and f"index {INDEX} on ChatMessages is INVALID" in verify.stdout
    pgdb.run_sql('DELETE FROM "ChatMessages" a USING "ChatMessages" b '
                 'WHERE a."Author" = b."Author" AND a."Id" > b."Id"')
    result = pg(pgdb, where, "apply")
    assert result.exit_code == 0, result.output
    assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)
    assert pg(pgdb, where, "-q", "verify").exit_code == 0


def test_without_the_directive_concurrently_is_refused_by_postgresql_and_nothing_changes(
        pgdb, tmp_path):
    where = sql_dir(tmp_path, FORWARD.replace("-- transactional: false\n", ""))
    assert pg(pgdb, where, "apply", "--to", CHAT).exit_code == 0
    result = pg(pgdb, where, "apply", "--no-lint")
    assert result.exit_code == 4 and "cannot run inside a transaction block" in result.stderr
    assert index_state(pgdb) is None and INDEX_ID not in history(pgdb)


@pytest.mark.parametrize("case", ["bad value"])
def test_a_directive_yoyo_cannot_read_is_refused(pgdb, tmp_path, case):
    where = sql_dir(tmp_path, FORWARD.replace("transactional: false", "transactional: no"))
    result = pg(pgdb, where, "status")
    assert result.exit_code == 2 and "`-- transactional: no`: write true or false" in result.stderr


def test_the_dry_run_says_how_each_statement_runs_and_the_lock_it_holds(pgdb, tmp_path):
    forward = FORWARD + 'ALTER TABLE "ChatMessages" ADD COLUMN "Pinned" boolean;\n'
    where = sql_dir(tmp_path, forward)
    assert pg(pgdb, where, "apply", "--to", CHAT).exit_code == 0
    result = pg(pgdb, where, "apply", "--dry-run", "--no-lint")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = lines.index(f"-- apply {INDEX_ID} ({where / (INDEX_ID + '.sql')})")
    assert lines[at + 1].startswith("-- `-- transactional: false`: one statement at a time")
    assert lines[at + 2].startswith("-- statement 1 of 2: outside a transaction (PostgreSQL "
                                    "refuses it inside one); lock SHARE UPDATE EXCLUSIVE on "
                                    "ChatMessages: the app's reads and writes go on")
    assert lines[at + 4].startswith("-- statement 2 of 2: in a transaction of its own; lock "
                                    "ACCESS EXCLUSIVE (most forms) on ChatMessages")
    assert index_state(pgdb) is None and INDEX_ID not in history(pgdb)


def test_rehearse_leaves_concurrently_out_and_says_so(pgdb, tmp_path):
    """Inside the rehearsal's one transaction CONCURRENTLY cannot run, and a plain build
    would block the app's writes until it ends: left out, listed, the rest rehearsed."""
    where = sql_dir(tmp_path)
    assert pg(pgdb, where, "apply").exit_code == 0
    result = pg(pgdb, where, "--json", "rehearse", "--only", INDEX_ID)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["rolled_back"] == [INDEX_ID]
    skipped = [w for w in report["warnings"] if w.startswith("not rehearsed:")]
    assert len(skipped) == 2 and "DROP INDEX CONCURRENTLY" in skipped[0]
    assert "CREATE INDEX CONCURRENTLY" in skipped[1]
    assert report["plan"] == [
        f"rollback {INDEX_ID}, statement 1 of 1: outside a transaction (PostgreSQL refuses it "
        "inside one); lock SHARE UPDATE EXCLUSIVE: the app's reads and writes go on; it waits for "
        "that lock at most 200 ms at a time (lock_timeout), tried again until --timeout; left out "
        "of this rehearsal",
        f"apply again {INDEX_ID}, statement 1 of 1: outside a transaction (PostgreSQL refuses it "
        "inside one); lock SHARE UPDATE EXCLUSIVE on ChatMessages: the app's reads and writes go "
        "on; it waits for the transactions older than it; it waits for that lock at most 200 ms "
        "at a time (lock_timeout), tried again until --timeout; left out of this rehearsal"]
    assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)


def test_inside_a_callers_transaction_concurrently_runs_plainly(pgdb, tmp_path):
    """As copy-to applies the migrations on its empty target: all inside its one
    transaction, CONCURRENTLY dropped (the table is empty, nobody else uses it)."""
    from orchestra_schema import address
    from orchestra_schema.context import Context
    from orchestra_schema.engines.runner import apply_one
    from orchestra_schema.migrations import load
    where = sql_dir(tmp_path)
    with Context(address.parse(pgdb.url), sql_dir=where).connect() as driver, \
            driver.conn.transaction():
        driver.in_steps = False  # what copy-to sets on its target
        assert all(apply_one(driver, m) for m in load(where))
    assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)
    assert "_orchestra_schema_progress" not in pgdb.tables()


def test_a_rollback_file_may_say_it_for_itself(pgdb, tmp_path):
    """As lint reads it: the forward file runs in one transaction, its rollback, whose own
    header has the directive, statement by statement (DROP INDEX CONCURRENTLY)."""
    forward = FORWARD.replace("-- transactional: false\n", "").replace(" CONCURRENTLY", "")
    where = sql_dir(tmp_path, forward, "-- transactional: false\n" + ROLLBACK)
    assert pg(pgdb, where, "apply").exit_code == 0
    assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)
    result = pg(pgdb, where, "rollback", "--only", INDEX_ID, "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    assert index_state(pgdb) is None and INDEX_ID not in history(pgdb)


def test_marking_a_partly_applied_migration_leaves_nothing_to_resume(pgdb, tmp_path):
    """Its last statement run by hand, then `mark`: applied, no progress row left behind."""
    forward = FORWARD + 'CREATE INDEX CONCURRENTLY "IX_Bad" ON "ChatMessages" ("Nope");\n'
    where = sql_dir(tmp_path, forward, ROLLBACK)
    assert pg(pgdb, where, "apply", "--to", CHAT).exit_code == 0
    assert pg(pgdb, where, "apply", "--no-lint").exit_code == 4
    pgdb.run_sql('CREATE INDEX CONCURRENTLY "IX_Bad" ON "ChatMessages" ("Nope")'.replace(
        "Nope", "CreatedAt"))
    (where / f"{INDEX_ID}.sql").write_text(forward.replace('"Nope"', '"CreatedAt"'))
    result = pg(pgdb, where, "mark", INDEX_ID, "--no-backup")
    assert result.exit_code == 0, result.output
    assert INDEX_ID in history(pgdb) and "_orchestra_schema_progress" not in pgdb.tables()
    status = json.loads(pg(pgdb, where, "--json", "status").stdout)
    assert all(m["partly"] is None for m in status["migrations"])
