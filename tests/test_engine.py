"""Atomic migrations: statements, history and checksums commit together or not at all."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CHAT, CORE, cli, connect, count, file_state, history, run, tables
from orchestra_schema.commands import migrate as commands  # rollback imports rollback_one from engine when it runs
from orchestra_schema.engines import runner as engine
from orchestra_schema.context import Context
from orchestra_schema.engines.runner import apply_one, rollback_one
from orchestra_schema.errors import Busy, Refused
from orchestra_schema.migrations import default_sql_dir


def sql_dir(tmp_path, files: dict[str, str]):
    d = tmp_path / "sql"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def copy_of_shipped_sql(tmp_path):
    d = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), d)
    return d


def test_failing_statement_rolls_back_the_whole_migration(tmp_path):
    d = sql_dir(tmp_path, {
        "0001_ok.sql": "CREATE TABLE a(x);\n",
        "0002_bad.sql": "CREATE TABLE b(x);\nINSERT INTO b VALUES (1);\nINSERT INTO nosuch VALUES (1);\n",
    })
    path = tmp_path / "o.db"
    result = cli("--sql-dir", d, "-d", path, "apply")
    assert result.exit_code == 4
    line = result.stderr.strip().splitlines()[-1]
    assert "0002_bad: statement 3 in" in line and "0002_bad.sql" in line and "no such table: nosuch" in line
    assert "rolled back" in line
    assert "a" in tables(path) and "b" not in tables(path)
    assert history(path) == {"0001_ok"}


def test_foreign_key_violation_fails_the_migration(tmp_path):
    d = sql_dir(tmp_path, {
        "0001_p.sql": "CREATE TABLE p(id INTEGER PRIMARY KEY);\n"
                      "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id));\n",
        "0002_orphan.sql": "-- depends: 0001_p\nINSERT INTO c VALUES (1, 42);\n",
    })
    path = tmp_path / "o.db"
    result = cli("--sql-dir", d, "-d", path, "apply")
    assert result.exit_code == 4
    assert "0002_orphan: would leave 1 foreign key violation(s), first in c rowid 1 -> p" in result.stderr
    assert count(path, "c") == 0 and history(path) == {"0001_p"}


def test_pre_existing_foreign_key_violations_are_named_as_such(tmp_path):
    d = sql_dir(tmp_path, {
        "0001_p.sql": "CREATE TABLE p(id INTEGER PRIMARY KEY);\n"
                      "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id));\n",
        "0002_unrelated.sql": "-- depends: 0001_p\nCREATE TABLE d(x);\n",
        "0003_touches_c.sql": "-- depends: 0002_unrelated\nINSERT INTO p VALUES (7);\nINSERT INTO c VALUES (2, 7);\n",
    })
    path = tmp_path / "o.db"
    assert cli("--sql-dir", d, "-d", path, "apply", "--to", "0001_p").exit_code == 0
    with connect(path) as c:
        c.execute("INSERT INTO c VALUES (1, 42)")  # foreign keys are off on this connection
    # A migration that does not touch c (or its parents) is not blocked by c's old violation...
    assert cli("--sql-dir", d, "-d", path, "apply", "--to", "0002_unrelated").exit_code == 0
    # ...one that writes to c is, and the message says the violation was there before.
    before = file_state(path)
    result = cli("--sql-dir", d, "-d", path, "apply")
    assert result.exit_code == 4
    assert "0003_touches_c: not run: the database already has 1 foreign key violation(s)" in result.stderr
    assert file_state(path) == before


def test_dropping_a_parent_that_rows_still_reference_is_a_violation(tmp_path):
    d = sql_dir(tmp_path, {
        "0001_p.sql": "CREATE TABLE p(id INTEGER PRIMARY KEY);\n",
        "0001_p.rollback.sql": "DROP TABLE p;\n",
        "0002_c.sql": "CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id));\n",
    })
    path = tmp_path / "o.db"
    assert cli("--sql-dir", d, "-d", path, "apply").exit_code == 0
    with connect(path) as c:
        c.execute("PRAGMA foreign_keys=ON; INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1)")
    result = cli("--sql-dir", d, "-d", path, "rollback", "--to", "0002_c", "--yes")
    assert result.exit_code == 4 and "foreign key violation(s), first in c rowid 1 -> p" in result.stderr
    assert "p" in tables(path) and history(path) == {"0001_p", "0002_c"}


def test_rollback_file_changed_since_apply_is_refused(db, tmp_path):
    d = copy_of_shipped_sql(tmp_path)
    assert cli("--sql-dir", d, "-d", db, "status").exit_code == 0
    rb = d / f"{CHAT}.rollback.sql"
    rb.write_text(rb.read_text() + "\n-- reviewed again\n")
    before = file_state(db)
    result = cli("--sql-dir", d, "-d", db, "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 5
    assert f"{CHAT}.rollback.sql: changed since {CHAT} was applied" in result.stderr
    assert file_state(db) == before
    assert "ROLLBACK FILE CHANGED" in cli("--sql-dir", d, "-d", db, "status").stdout


def test_missing_rollback_file_is_refused(db, tmp_path):
    d = copy_of_shipped_sql(tmp_path)
    (d / f"{CHAT}.rollback.sql").unlink()
    before = file_state(db)
    result = cli("--sql-dir", d, "-d", db, "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 5 and "no rollback file" in result.stderr
    assert file_state(db) == before
    assert "NO ROLLBACK FILE" in cli("--sql-dir", d, "-d", db, "status").stdout


def test_history_entry_without_a_file_blocks_rollback(db, tmp_path):
    d = copy_of_shipped_sql(tmp_path)
    for f in d.glob(f"{CHAT}*"):
        f.unlink()
    before = file_state(db)
    result = cli("--sql-dir", d, "-d", db, "rollback", "--to", "0", "--yes")
    assert result.exit_code == 5 and CHAT in result.stderr
    assert file_state(db) == before
    assert "FILE MISSING" in cli("--sql-dir", d, "-d", db, "status").stdout


def test_migration_applied_by_stock_yoyo_rolls_back_with_a_warning(tmp_path):
    import os
    yoyo = os.path.join(os.path.dirname(sys.executable), "yoyo")
    path = tmp_path / "o.db"
    subprocess.run([yoyo, "apply", "--batch", "--database", f"sqlite:///{path}", str(default_sql_dir())],
                   check=True, capture_output=True, timeout=60)
    assert history(path) == {CORE, CHAT}
    assert "no checksum recorded" in cli("-d", path, "status").stdout
    result = cli("-d", path, "rollback", "--to", CORE)
    assert result.exit_code == 0 and "no checksum recorded" in result.stderr
    assert history(path) == {CORE}


HOLD_WRITE_LOCK = """
import apsw, sys, time
c = apsw.Connection(sys.argv[1])
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_busy_database_exits_3_after_timeout_and_changes_nothing(db):
    cli("-d", db, "rollback", "--to", CORE, "--yes")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(db), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run("--timeout", "0.5", "-d", db, "apply")
        assert result.returncode == 3
        assert "locked by another process" in result.stderr and "--timeout" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    assert history(db) == {CORE}


def test_a_killed_lock_holder_leaves_no_stale_lock(db):
    cli("-d", db, "rollback", "--to", CORE, "--yes")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(db), "30"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL: the kernel drops its POSIX locks
    holder.wait()
    result = run("--timeout", "0", "-d", db, "apply")  # no waiting allowed at all
    assert result.returncode == 0, result.stderr
    assert history(db) == {CORE, CHAT}


def test_second_run_waits_for_the_first_within_timeout(db):
    cli("-d", db, "rollback", "--to", CORE, "--yes")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(db), "1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run("--timeout", "30", "-d", db, "apply")
        assert result.returncode == 0, result.stderr
    finally:
        holder.wait()
    assert history(db) == {CORE, CHAT}


def test_schema_and_history_commit_together_in_wal_mode_too(tmp_path):
    path = tmp_path / "wal.db"
    with connect(path) as c:
        c.execute("PRAGMA journal_mode=WAL")
    assert cli("-d", path, "apply").exit_code == 0
    with connect(path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # left as the app set it
    assert history(path) == {CORE, CHAT}


def test_rollback_that_deletes_rows_needs_yes(tmp_path):
    d = sql_dir(tmp_path, {
        "0001_t.sql": "CREATE TABLE t(x);\n",
        "0002_seed.sql": "-- depends: 0001_t\nINSERT INTO t VALUES (1), (2);\n",
        "0002_seed.rollback.sql": "DELETE FROM t WHERE x > 0;\n",
    })
    path = tmp_path / "o.db"
    assert cli("--sql-dir", d, "-d", path, "apply").exit_code == 0
    with connect(path) as c:
        c.execute("INSERT INTO t VALUES (3)")
    result = cli("--sql-dir", d, "-d", path, "rollback", "--to", "0001_t")
    assert result.exit_code == 5 and "(t 3)" in result.stderr
    assert cli("--sql-dir", d, "-d", path, "rollback", "--to", "0001_t", "--yes").exit_code == 0
    assert count(path, "t") == 0


# A run plans from the history it reads, then waits for the write lock; by its turn
# another run may have changed the history. Found by tests/test_faults.py's
# concurrent runs: a migration applied on top of a dependency rolled back meanwhile.

def test_apply_refuses_a_migration_whose_dependency_was_rolled_back_meanwhile(tmp_path):
    db = tmp_path / "o.db"
    assert cli("--database", db, "apply", "--to", CORE).exit_code == 0
    ctx = Context(db)
    by_id = {m.id: m for m in ctx.migrations()}
    with ctx.open() as planned, ctx.open() as other:
        rollback_one(other, by_id[CORE])  # the other run, between the plan and our turn
        with pytest.raises(Busy, match="rolled back meanwhile by another run"):
            apply_one(planned, by_id[CHAT])
    assert history(db) == set() and tables(db) & {"ChatSessions", "Agents"} == set()


def test_rollback_stops_before_a_migration_another_run_applied_on_top_of(tmp_path):
    db = tmp_path / "o.db"
    assert cli("--database", db, "apply", "--to", CORE).exit_code == 0

    backup = tmp_path / "the-backup"

    def meanwhile():  # rollback calls this after its plan, before its first change
        assert cli("--database", db, "apply").exit_code == 0
        backup.write_bytes(b"made by backup()")
        return backup

    with pytest.raises(Busy, match=f"{CHAT}.*depends on it"):
        commands.rollback(Context(db), to="0", yes=True, backup=meanwhile)
    assert history(db) == {CORE, CHAT} and {"ChatSessions", "Agents"} <= tables(db)
    assert not backup.exists()  # nothing was rolled back: its backup is not needed


# A rollback that stops busy or refused after its own backup: the backup goes
# when nothing was rolled back (as restore's does), and is named when kept.

def backups_beside(db):
    return sorted(p.name for p in db.parent.iterdir() if ".backup_" in p.name)


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_rollback_that_ends_busy_removes_its_own_backup(db, journal):
    with connect(db) as app:
        app.execute(f"PRAGMA journal_mode = {journal}").fetchall()
        app.execute("BEGIN IMMEDIATE")  # the app holds the write lock past --timeout
        result = run("-d", db, "--timeout", "0.5", "--json", "rollback", "--to", CORE, "--yes")
        app.execute("ROLLBACK")
    assert result.returncode == 3, result.stderr
    assert "backup" not in result.stderr.split("error:")[1]
    assert backups_beside(db) == []
    assert json.loads(result.stdout)["backup"] is None
    assert history(db) == {CORE, CHAT}


def test_a_rollback_busy_after_rolling_back_some_keeps_its_backup_and_says_so(db, monkeypatch):
    calls = []

    def then_the_app_takes_the_lock(database, m, dependents=()):
        if calls:
            app.execute("BEGIN IMMEDIATE")
        calls.append(m.id)
        return rollback_one(database, m, dependents)

    monkeypatch.setattr(engine, "rollback_one", then_the_app_takes_the_lock)
    backup = cli_backup(db)
    with connect(db) as app:
        with pytest.raises(Busy) as raised:
            commands.rollback(Context(db, timeout=0.2), to="0", yes=True, backup=lambda: backup)
        app.execute("ROLLBACK")
    assert calls == [CHAT, CORE] and history(db) == {CORE}
    assert f"kept the backup taken first: {backup}" in str(raised.value)
    assert raised.value.result.backup == backup and raised.value.result.rolled_back == [CHAT]
    assert backup.exists()


def test_a_rollback_refused_after_its_backup_removes_it(db, monkeypatch):
    def refuse(*args, **kw):
        raise Refused("refused for this test; nothing changed")

    monkeypatch.setattr(engine, "rollback_one", refuse)
    backup = cli_backup(db)
    with pytest.raises(Refused) as raised:
        commands.rollback(Context(db), to=CORE, yes=True, backup=lambda: backup)
    assert not backup.exists() and not Path(f"{backup}.json").exists()
    assert raised.value.result.backup is None


def cli_backup(db):
    result = run("-d", db, "--json", "backup")
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["path"])
