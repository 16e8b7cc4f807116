"""kill -9 at random instants and concurrent runs, with real processes on real files."""

import os

import pytest

from conftest import connect
from faults import check_history_matches_schema, kill_trials, many_migrations, start

N = 25


@pytest.fixture
def sql(tmp_path):
    return many_migrations(tmp_path / "sql", N)


def make_db(tmp_path, journal_mode):
    db = tmp_path / f"{journal_mode}.db"
    with connect(db) as c:
        c.execute(f"PRAGMA journal_mode={journal_mode}")
    return db


def finish_and_check(db, sql):
    proc = start("-d", db, "--sql-dir", sql, "apply")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # the next run succeeds without manual repair
    assert check_history_matches_schema(db, N) == {f"m{i:03d}" for i in range(N)}


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_kill_at_random_instants_leaves_history_equal_to_schema(tmp_path, sql, journal_mode):
    db = make_db(tmp_path, journal_mode)
    figures = kill_trials(db, sql, N, trials=int(os.environ.get("KILL_TRIALS", 12)), seed=7)
    # Not vacuous: kills hit running processes and interrupted runs part-way.
    assert figures["killed"] >= figures["trials"] // 3 and figures["left_midway"] >= 2, figures
    finish_and_check(db, sql)


@pytest.mark.slow
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_kill_at_random_instants_long(tmp_path, sql, journal_mode):
    db = make_db(tmp_path, journal_mode)
    figures = kill_trials(db, sql, N, trials=100, seed=11)
    print(f"\nkill trials ({journal_mode}): {figures}")
    finish_and_check(db, sql)


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_concurrent_applies_apply_each_migration_once(tmp_path, sql, journal_mode):
    db = make_db(tmp_path, journal_mode)
    procs = [start("-d", db, "--sql-dir", sql, "--timeout", "120", "apply") for _ in range(5)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert all("Traceback" not in err for _, err in results)
    check_history_matches_schema(db, N)
    with connect(db) as c:
        applies = c.execute("SELECT migration_id, count(*) FROM _yoyo_log WHERE operation='apply' "
                            "GROUP BY migration_id").fetchall()
    assert sorted(applies) == [(f"m{i:03d}", 1) for i in range(N)]


def test_concurrent_apply_and_rollback_end_consistent(tmp_path, sql):
    db = make_db(tmp_path, "delete")
    commands = [["apply"], ["rollback", "--to", "0", "--yes"], ["apply"], ["rollback", "--to", "m010", "--yes"]]
    procs = [start("-d", db, "--sql-dir", sql, "--timeout", "1", *c) for c in commands]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code in (0, 3) for code, _ in results), results
    assert all("Traceback" not in err for _, err in results)
    check_history_matches_schema(db, N)
    finish_and_check(db, sql)
