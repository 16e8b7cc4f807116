"""kill -9 inside apply and rollback on PostgreSQL: after every kill the database is exactly
before or after each migration (history, checksums and tables agree), and the next run
succeeds. A kill counts as landing inside the work only if the tool had a session on the
server at that instant (pg_stat_activity), not during Python's start-up."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from helpers import run
from faults import many_migrations, start

MIGRATIONS, ROWS = 8, 20000
SHORT_TRIALS = int(os.environ.get("KILL_TRIALS", 4))
LONG_TRIALS = int(os.environ.get("LONG_KILL_TRIALS", 50))


def postgresql_table(i: int, rows: int) -> str:
    return (f"CREATE TABLE t{i} (n integer PRIMARY KEY, payload text NOT NULL);\n"
            f"INSERT INTO t{i} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;\n"
            f"CREATE INDEX t{i}_payload ON t{i} (payload);\n")


def pg_migrations(directory):
    made = many_migrations(directory, MIGRATIONS, ROWS, postgresql_table)
    for rollback in directory.glob("*.rollback.sql"):  # work inside each transaction to kill
        table = rollback.read_text().split()[2].rstrip(";")
        rollback.write_text(f"DELETE FROM {table};\n{rollback.read_text()}")
    return made


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
    killed at a random instant of it. Until one kill has landed inside a write transaction
    (up to three times as many trials again: a loaded machine moves the kills)."""
    rng, span = random.Random(seed), None
    figures = {"trials": 0, "mid-run": 0, "in transaction": 0, "interrupted": 0, "finished": 0}
    args = ["--sql-dir", sql_dir, "--timeout", "60"]
    rollback = ["rollback", "--to", "0", "--yes", "--no-backup"]
    argv = ["apply"] if command == "apply" else rollback
    for trial in range(4 * trials):
        if trial >= trials and figures["in transaction"]:
            break
        figures["trials"] += 1
        database = pg_cluster.new_database("k")
        try:
            if command == "rollback":
                assert run("--database", database.url, *args, "apply").returncode == 0
            proc = start("--database", database.url, *args, *argv)
            while not tool_has_a_session(database) and proc.poll() is None:
                time.sleep(0.005)  # Python's start-up: a kill here proves nothing
            connected = time.perf_counter()
            killed, xid = (False, None) if span is None else kill_inside(
                database, proc, rng.uniform(0, span))
            if span is None:
                proc.wait(timeout=300)
                span = time.perf_counter() - connected
            if killed:
                figures["mid-run"] += 1
                figures["in transaction"] += xid is not None and aborted(database, xid)
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


def kill_inside(database, proc, seconds: float) -> tuple[bool, str | None]:
    """SIGKILL proc after `seconds`: (still running then, the id of the write transaction
    its session had open at that instant, if any)."""
    with database.connect() as watcher:  # opened first: the kill is not delayed by a login
        try:
            proc.wait(timeout=seconds)
            return False, None
        except subprocess.TimeoutExpired:
            row = watcher.execute(
                "SELECT backend_xid::text FROM pg_stat_activity WHERE datname = %s AND "
                "application_name = 'orchestra-schema' AND backend_xid IS NOT NULL",
                (database.name,)).fetchone()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True, row and row[0]


def aborted(database, xid: str) -> bool:
    """Did the transaction the kill found open end aborted (not committed just before it)?
    The server ends the session once it sees the client gone."""
    deadline = time.monotonic() + 60
    while tool_has_a_session(database):
        assert time.monotonic() < deadline, "the killed run's session never ended"
        time.sleep(0.01)
    # A fresh cluster: epoch 0, so the 32-bit xid is the full transaction id.
    return database.rows("SELECT txid_status(%s::bigint)", (xid,)) == [("aborted",)]


@pytest.mark.parametrize("command", ["apply", "rollback"])
def test_kill_9_leaves_every_migration_whole(pg_cluster, tmp_path, command):
    figures = kill_trials(pg_cluster, pg_migrations(tmp_path / "sql"), command, SHORT_TRIALS,
                          seed=len(command))
    assert figures["mid-run"] + figures["finished"] == figures["trials"] >= SHORT_TRIALS
    assert figures["in transaction"] > 0  # a kill landed inside a migration's transaction


@pytest.mark.slow
@pytest.mark.parametrize("command", ["apply", "rollback"])
def test_kill_9_long(pg_cluster, tmp_path, command):
    figures = kill_trials(pg_cluster, pg_migrations(tmp_path / "sql"), command, LONG_TRIALS,
                          seed=7)
    assert figures["interrupted"] > 0  # the kills did land between migrations
