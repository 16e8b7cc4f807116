"""Runs kept apart by the advisory lock; the app never queues long behind the tool's DDL.

Real processes against the real server: the tool as `python -m orchestra_schema`, the
app as other psycopg sessions."""

from __future__ import annotations

import threading
import time

from helpers import run
from faults import start
from orchestra_schema.engines.postgresql.driver import LOCK_TIMEOUT_MS, advisory_key
from test_pg_commands import CHAT, CHAT_TABLES, add_rows, history

# The app's worst query while the tool waits behind it: a fraction of a second, whatever
# LOCK_TIMEOUT_MS says (a bound derived from the constant would grow with it). It must
# never wait out the tool's whole --timeout.
APP_WAIT_BOUND = 1.0


def test_a_second_run_waits_for_the_lock_then_exit_3(pgdb):
    with pgdb.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (advisory_key("public"),))
        result = run("--timeout", "1", "--database", pgdb.url, "apply")
        assert result.returncode == 3, result.stderr
        assert "another orchestra-schema run holds its lock" in result.stderr
        assert pgdb.tables() == set()
    assert run("--database", pgdb.url, "apply").returncode == 0  # released with the session


def test_two_runs_at_once_one_applies_the_other_finds_it_done(pgdb):
    procs = [start("--timeout", "30", "--database", pgdb.url, "--json", "apply") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert history(pgdb) == {"20250927103131_OrchestraCore", CHAT,
                             "20251109091141_AddAgentSessionsTable"}
    assert pgdb.rows("SELECT count(*) FROM _yoyo_log WHERE operation = 'apply'") == [(3,)]


class AppReader(threading.Thread):
    """The app: SELECTs on ChatMessages in a loop, each one's latency kept."""

    def __init__(self, database):
        super().__init__(daemon=True)
        self.database, self.latencies, self.errors = database, [], []
        self.stop = threading.Event()

    def run(self):
        with self.database.connect() as conn:
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    conn.execute('SELECT count(*) FROM "ChatMessages"').fetchone()
                except Exception as err:  # dropped under it: the rollback went through
                    self.errors.append(type(err).__name__)
                    return
                self.latencies.append(time.perf_counter() - began)
                time.sleep(0.02)


def test_rollback_behind_an_app_transaction_never_stalls_the_app(pgdb):
    assert run("--database", pgdb.url, "apply").returncode == 0
    add_rows(pgdb)
    with pgdb.connect() as app:
        app.execute("BEGIN")
        app.execute('SELECT * FROM "ChatMessages"').fetchall()  # holds ACCESS SHARE until COMMIT
        reader = AppReader(pgdb)
        reader.start()
        time.sleep(0.3)
        blocked = run("--timeout", "3", "--database", pgdb.url, "rollback", "--only", CHAT,
                      "--yes", "--no-backup")
        reader.stop.set()
        reader.join()
        app.execute("COMMIT")
    assert blocked.returncode == 3, blocked.stderr
    assert "nothing changed" in blocked.stderr
    assert CHAT_TABLES <= pgdb.tables() and CHAT in history(pgdb)
    during = reader.latencies
    print(f"\napp SELECTs while the rollback waited 3 s: {len(during)}, "
          f"max {max(during) * 1000:.0f} ms, lock_timeout {LOCK_TIMEOUT_MS} ms")
    assert len(during) > 20 and max(during) < APP_WAIT_BOUND


def test_rollback_goes_through_once_the_app_commits(pgdb):
    assert run("--database", pgdb.url, "apply").returncode == 0
    add_rows(pgdb)
    with pgdb.connect() as app:
        app.execute("BEGIN")
        app.execute('SELECT * FROM "ChatMessages"').fetchall()
        proc = start("--timeout", "30", "--database", pgdb.url, "rollback", "--only", CHAT,
                     "--yes", "--no-backup")
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting, retrying
        app.execute("COMMIT")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not CHAT_TABLES & pgdb.tables() and CHAT not in history(pgdb)
