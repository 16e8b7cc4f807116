"""CREATE INDEX CONCURRENTLY through the tool, on a busy ChatMessages: the app's writer
never stalls (a plain CREATE INDEX blocks it for the whole build), two runs and an app
transaction do not deadlock, and kill -9 at random instants of the build is undone by a
plain rerun. Real processes: the tool as `python -m orchestra_schema`, the app as psycopg
sessions."""

from __future__ import annotations

import random
import time

import pytest

from busy_chat import SESSION, Writer, fill
from faults import kill_at, start
from helpers import run
from test_pg_steps import CHAT, FORWARD, INDEX, INDEX_ID, history, index_state, sql_dir

PLAIN_ID = "20261208000001_ChatMessagesAuthorIndexPlain"


@pytest.fixture(scope="module")
def busy(pg_cluster, tmp_path_factory):
    """2 million messages, the index migration and its plain twin in one sql dir."""
    database = pg_cluster.new_database()
    where = sql_dir(tmp_path_factory.mktemp("busy"))
    plain = FORWARD.replace("-- transactional: false\n", "").replace(" CONCURRENTLY", "")
    (where / f"{PLAIN_ID}.sql").write_text(plain.replace(f'"{INDEX}"', '"IX_Plain"').replace(
        f"-- depends: {CHAT}", f"-- depends: {INDEX_ID}"))
    (where / f"{PLAIN_ID}.rollback.sql").write_text('DROP INDEX "IX_Plain";\n')
    assert run("--database", database.url, "--sql-dir", where, "apply", "--to", CHAT).returncode == 0
    fill(database, 2_000_000)
    yield database, where
    pg_cluster.drop_database(database)


def timed_apply(database, where, *args):
    began = time.perf_counter()
    done = run("--database", database.url, "--sql-dir", where, "--timeout", "120", "apply",
               "--no-lint", *args, timeout=300)
    return done, began, time.perf_counter()


def test_the_app_writes_on_while_the_index_is_built_concurrently(busy):
    database, where = busy
    writer = Writer(database)
    writer.start()
    try:
        time.sleep(0.5)
        concurrent, c0, c1 = timed_apply(database, where, "--to", INDEX_ID)
        time.sleep(0.5)
        plain, p0, p1 = timed_apply(database, where)
        time.sleep(0.3)
    finally:
        writer.stop.set()
        writer.join()
    assert concurrent.returncode == 0 and plain.returncode == 0, concurrent.stderr + plain.stderr
    assert index_state(database) == "valid" and index_state(database, "IX_Plain") == "valid"
    worst_concurrent, worst_plain = max(writer.during(c0, c1)), max(writer.during(p0, p1))
    print(f"\nwriter's worst insert: {worst_concurrent * 1000:.0f} ms while the tool built the "
          f"index concurrently ({c1 - c0:.2f} s), {worst_plain * 1000:.0f} ms while it built "
          f"it plainly ({p1 - p0:.2f} s); {len(writer.samples)} inserts")
    assert worst_concurrent < 0.5
    # the plain build holds SHARE for its whole build: the writer waits for most of it
    assert worst_plain > 2 * worst_concurrent and worst_plain > 0.3


def test_two_runs_and_an_app_transaction_do_not_deadlock(pgdb, tmp_path):
    """CONCURRENTLY waits for every transaction that writes the table: the second run waits
    for the run lock in short statements with no transaction open, so the build never waits
    on it; the app's open write transaction is waited for (at most lock_timeout at a time,
    the INVALID index each timed-out try leaves dropped and built again) until it commits."""
    where = sql_dir(tmp_path)
    assert run("--database", pgdb.url, "--sql-dir", where, "apply", "--to", CHAT).returncode == 0
    fill(pgdb, 200_000)
    with pgdb.connect() as app:
        app.execute("BEGIN")
        app.execute('INSERT INTO "ChatMessages" VALUES (gen_random_uuid(), %s, \'app\', '
                    "'not committed yet', 0, now(), NULL)", (SESSION,))
        procs = [start("--database", pgdb.url, "--sql-dir", where, "--timeout", "60", "apply",
                       "--no-lint") for _ in range(2)]
        time.sleep(1.5)
        ended = [p.communicate() for p in procs if p.poll() is not None]
        assert not ended, ended  # the build waits for the app's transaction
        app.execute("COMMIT")
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)
    assert pgdb.rows("SELECT count(*) FROM _yoyo_log WHERE migration_id = %s", (INDEX_ID,)) == [(1,)]


def building(database) -> bool:
    return database.rows("SELECT count(*) FROM pg_stat_progress_create_index")[0][0] > 0


def test_kill_9_at_random_instants_of_the_build_then_a_plain_rerun(pgdb, tmp_path):
    """At least 10 kills land while the index is being built; after each, the next apply
    completes, no INVALID index remains and the history matches the schema; rollback is
    killed the same way."""
    where = sql_dir(tmp_path)
    args = ("--database", pgdb.url, "--sql-dir", where, "--timeout", "60")
    assert run(*args, "apply", "--to", CHAT).returncode == 0
    fill(pgdb, 300_000)
    rng, mid_build, trials, left_invalid = random.Random(20261208), 0, 0, 0
    while (mid_build < 10 or trials < 16) and trials < 40:
        trials += 1
        proc = start(*args, "apply", "--no-lint")
        # half the kills at any instant of the run, half once the build has begun
        deadline = time.monotonic() + (rng.uniform(0.2, 1.5) if trials % 2 else 10)
        while time.monotonic() < deadline and proc.poll() is None and not (
                trials % 2 == 0 and building(pgdb)):
            time.sleep(0.005)
        if trials % 2 == 0:
            time.sleep(rng.uniform(0, 0.25))
        seen = building(pgdb)
        mid_build += kill_at(proc, 0) and seen
        time.sleep(0.3)  # the server ends the killed run's session (client_connection_check)
        left_invalid += index_state(pgdb) == "invalid"
        if index_state(pgdb) == "invalid":  # status says so, not merely "pending"
            status = run(*args, "status").stdout
            assert f"{INDEX_ID}  (partly applied: none of its 1 statement(s) done" in status, status
        after = run(*args, "apply", "--no-lint")
        assert after.returncode == 0, after.stderr
        assert index_state(pgdb) == "valid" and INDEX_ID in history(pgdb)
        assert pgdb.rows("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]
        assert "_orchestra_schema_progress" not in pgdb.tables()
        rollback = start(*args, "rollback", "--only", INDEX_ID, "--yes", "--no-backup")
        kill_at(rollback, rng.uniform(0.3, 1.2))
        again = run(*args, "rollback", "--only", INDEX_ID, "--yes", "--no-backup")
        assert again.returncode == 0, again.stderr
        assert index_state(pgdb) is None and INDEX_ID not in history(pgdb)
    print(f"\n{mid_build} kills landed mid-build in {trials} trials; {left_invalid} left an "
          "INVALID index that the rerun dropped and built again")
    assert mid_build >= 10 and left_invalid >= 5
