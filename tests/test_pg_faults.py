"""kill -9 inside apply and rollback on PostgreSQL: after every kill the database is exactly
before or after each migration (history, checksums and tables agree), and the next run
succeeds. A kill counts as landing inside the work only if the tool had a session on the
server at that instant (pg_stat_activity), not during Python's start-up."""

from __future__ import annotations

import os
import random
import time

import pytest

from helpers import run
from faults import kill_at, many_migrations, start

MIGRATIONS, ROWS = 8, 20000
SHORT_TRIALS = int(os.environ.get("KILL_TRIALS", 4))
LONG_TRIALS = int(os.environ.get("LONG_KILL_TRIALS", 50))


def postgresql_table(i: int, rows: int) -> str:
    return (f"CREATE TABLE t{i} (n integer PRIMARY KEY, payload text NOT NULL);\n"
            f"INSERT INTO t{i} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;\n"
            f"CREATE INDEX t{i}_payload ON t{i} (payload);\n")


def pg_migrations(directory):
    return many_migrations(directory, MIGRATIONS, ROWS, postgresql_table)


def check_history_matches_schema(database) -> set[str]:
    tables = database.tables()
    applied = ({r[0] for r in database.rows("SELECT migration_id FROM _yoyo_migration")}
               if "_yoyo_migration" in tables else set())
    sums = ({r[0] for r in database.rows("SELECT migration_id FROM _orchestra_schema_checksum")}
            if "_orchestra_schema_checksum" in tables else set())
    assert sums == applied, (sums, applied)
    made = {f"m{int(t[1:]):03d}" for t in tables if t.startswith("t") and t[1:].isdigit()}
    assert made == applied, (made, applied)
    for mid in applied:
        assert database.rows(f"SELECT count(*) FROM t{int(mid[1:])}") == [(ROWS,)]
    order = [f"m{i:03d}" for i in range(MIGRATIONS)]
    assert applied == set(order[:len(applied)]), applied  # a prefix of the chain
    return applied


def tool_has_a_session(database) -> bool:
    return database.rows("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                         "AND application_name = 'orchestra-schema'", (database.name,))[0][0] > 0


def kill_trials(pg_cluster, sql_dir, command: str, trials: int, seed: int) -> dict:
    """Trial 0 runs to the end and measures the span (connected to exit); the others are
    killed at a random instant of it."""
    rng, span = random.Random(seed), None
    figures = {"trials": trials, "mid-run": 0, "interrupted": 0, "finished": 0}
    args = ["--sql-dir", sql_dir, "--timeout", "60"]
    rollback = ["rollback", "--to", "0", "--yes", "--no-backup"]
    argv = ["apply"] if command == "apply" else rollback
    for trial in range(trials):
        database = pg_cluster.new_database("k")
        try:
            if command == "rollback":
                assert run("--database", database.url, *args, "apply").returncode == 0
            proc = start("--database", database.url, *args, *argv)
            while not tool_has_a_session(database) and proc.poll() is None:
                time.sleep(0.005)  # Python's start-up: a kill here proves nothing
            connected = time.perf_counter()
            killed = span is not None and kill_at(proc, rng.uniform(0, span))
            if span is None:
                proc.wait(timeout=300)
                span = time.perf_counter() - connected
            if killed:
                figures["mid-run"] += 1
            else:
                assert proc.returncode == 0, proc.stderr.read()
                figures["finished"] += 1
            applied = check_history_matches_schema(database)
            if killed and 0 < len(applied) < MIGRATIONS:
                figures["interrupted"] += 1
            again = run("--database", database.url, *args, *argv)
            assert again.returncode == 0, again.stderr
            after = check_history_matches_schema(database)
            assert len(after) == (MIGRATIONS if command == "apply" else 0)
        finally:
            pg_cluster.drop_database(database)
    print(f"\n{command}: span {span:.2f} s, {figures}")
    return figures


@pytest.mark.parametrize("command", ["apply", "rollback"])
def test_kill_9_leaves_every_migration_whole(pg_cluster, tmp_path, command):
    figures = kill_trials(pg_cluster, pg_migrations(tmp_path / "sql"), command, SHORT_TRIALS,
                          seed=len(command))
    assert figures["mid-run"] + figures["finished"] == SHORT_TRIALS


@pytest.mark.slow
@pytest.mark.parametrize("command", ["apply", "rollback"])
def test_kill_9_long(pg_cluster, tmp_path, command):
    figures = kill_trials(pg_cluster, pg_migrations(tmp_path / "sql"), command, LONG_TRIALS,
                          seed=7)
    assert figures["interrupted"] > 0  # the kills did land between migrations
