"""`-- transactional: false` on SQLite, on the real orchestra.db EF Core made: every
statement is SQLite-transactional anyway, so the directive changes only the transaction
boundaries; each statement commits with its progress row, and a failed one leaves those
before it done, recorded, resumed by the next run."""

from __future__ import annotations

import json
import shutil

from helpers import CHAT, REAL_DB, cli, connect, history, tables
from orchestra_schema.migrations import default_sql_dir

PINS = "20261208000000_ChatPins"
FORWARD = f"""-- Pinned messages.
-- transactional: false
-- depends: {CHAT}
CREATE TABLE ChatPins (MessageId TEXT NOT NULL PRIMARY KEY REFERENCES ChatMessages (Id));
CREATE INDEX IX_ChatPins_MessageId ON ChatPins (MessageId);
INSERT INTO ChatPins SELECT Id FROM ChatMessages WHERE Nope;
"""
ROLLBACK = "DROP INDEX IX_ChatPins_MessageId;\nDROP TABLE ChatPins;\n"


def setup(tmp_path):
    db = tmp_path / "orchestra.db"
    shutil.copy(REAL_DB, db)
    where = tmp_path / "sql"
    shutil.copytree(default_sql_dir("sqlite"), where)
    assert cli("-d", db, "--sql-dir", where, "-q", "adopt", "--no-backup").exit_code == 0
    (where / f"{PINS}.sql").write_text(FORWARD)
    (where / f"{PINS}.rollback.sql").write_text(ROLLBACK)
    return db, where


def test_a_failed_statement_leaves_the_ones_before_it_done_and_the_rerun_resumes(tmp_path):
    db, where = setup(tmp_path)
    result = cli("-d", db, "--sql-dir", where, "apply", "--no-lint")
    assert result.exit_code == 4 and "statement 3 in" in result.stderr
    assert "statements 1-2 of 3 stay done and recorded" in result.stderr
    assert "ChatPins" in tables(db) and PINS not in history(db)
    status = json.loads(cli("-d", db, "--sql-dir", where, "--json", "status").stdout)
    assert {m["id"]: m["partly"] for m in status["migrations"]}[PINS] == (
        "partly applied: statement 2 of 3 done; run `orchestra-schema apply` again to resume")
    verify = cli("-d", db, "--sql-dir", where, "verify")
    assert verify.exit_code == 1 and f"{PINS}: partly applied" in verify.stdout
    (where / f"{PINS}.sql").write_text(FORWARD.replace("WHERE Nope", "WHERE 0"))
    result = cli("-d", db, "--sql-dir", where, "apply", "--no-lint")
    assert result.exit_code == 0, result.output
    assert PINS in history(db) and "_orchestra_schema_progress" not in tables(db)
    assert cli("-d", db, "--sql-dir", where, "-q", "verify").exit_code == 0
    result = cli("-d", db, "--sql-dir", where, "rollback", "--only", PINS, "--no-backup")
    assert result.exit_code == 0, result.output
    assert "ChatPins" not in tables(db) and PINS not in history(db)
    with connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_each_statement_commits_with_its_progress_row(tmp_path):
    """The directive's one effect on SQLite: statement 1 stays although statement 3
    failed (in one transaction it would have been rolled back with it)."""
    db, where = setup(tmp_path)
    (where / f"{PINS}.sql").write_text(FORWARD.replace("-- transactional: false\n", ""))
    result = cli("-d", db, "--sql-dir", where, "apply", "--no-lint")
    assert result.exit_code == 4 and "the migration was rolled back" in result.stderr
    assert "ChatPins" not in tables(db)


def test_two_runs_at_once_never_run_a_statement_twice(tmp_path):
    """SQLite holds no lock between a migration's statements: each statement's transaction
    checks that the progress row is where this run left it, so a second run that went on
    meanwhile stops it (exit 3) instead of running a statement again."""
    from faults import start
    db, where = setup(tmp_path)
    counted = (f"-- transactional: false\n-- depends: {CHAT}\n"
               "CREATE TABLE Runs (n INTEGER);\n" +
               "INSERT INTO Runs WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 1500000) SELECT count(*) FROM c;\n" * 6)
    (where / f"{PINS}.sql").write_text(counted)
    (where / f"{PINS}.rollback.sql").write_text("DROP TABLE Runs;\n")
    for _ in range(4):
        procs = [start("-d", db, "--sql-dir", where, "--timeout", "30", "apply", "--no-lint")
                 for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert sorted(p.returncode for p in procs) in ([0, 0], [0, 3]), outputs
        if any(p.returncode == 3 for p in procs):
            assert cli("-d", db, "--sql-dir", where, "-q", "apply", "--no-lint").exit_code == 0
        with connect(db) as c:
            assert c.execute("SELECT count(*) FROM Runs").fetchall() == [(6,)]
        assert PINS in history(db)
        assert cli("-d", db, "--sql-dir", where, "-q", "rollback", "--only", PINS, "--yes",
                   "--no-backup").exit_code == 0


def test_rehearse_runs_each_statement_on_the_snapshot_and_shows_the_plan(tmp_path):
    db, where = setup(tmp_path)
    (where / f"{PINS}.sql").write_text(FORWARD.replace("WHERE Nope", "WHERE 0"))
    assert cli("-d", db, "--sql-dir", where, "-q", "apply", "--no-lint").exit_code == 0
    result = cli("-d", db, "--sql-dir", where, "--json", "rehearse", "--only", PINS)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["rolled_back"] == [PINS]
    note = "in a transaction of its own (SQLite's write lock on the whole file meanwhile)"
    assert report["plan"] == [f"rollback {PINS}, statement {k} of 2: {note}" for k in (1, 2)] + [
        f"apply again {PINS}, statement {k} of 3: {note}" for k in (1, 2, 3)]
    assert PINS in history(db) and "_orchestra_schema_progress" not in tables(db)
