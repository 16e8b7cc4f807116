"""rehearse: roll back and re-apply on an online snapshot; the live file is never written."""

import json
import os
import shutil

import apsw
import pytest

from backup_helpers import LOCK_HOLDER, READ_HOLDER, spawn
from helpers import (CHAT, CORE, cli, connect, count, ef_history, file_state, history,
                      mounted_tmpfs, run)
from orchestra_schema.commands import rehearse as rehearsal
from orchestra_schema.context import Context
from orchestra_schema.errors import DatabaseUnavailable
from orchestra_schema.migrations import default_sql_dir

STEPS = ["snapshot", "count rows", "rollback", "check after rollback", "apply again", "check after apply"]
REPORT_KEYS = ["database", "snapshot", "target", "snapshot_mode", "rolled_back", "rows_lost",
               "warnings", "steps", "problems", "ok", "only", "plan"]


def rehearse(path, *args, sql_dir=None):
    extra = ["--sql-dir", sql_dir] if sql_dir else []
    result = cli("--database", path, *extra, "--json", "rehearse", *args)
    return result, json.loads(result.stdout) if result.stdout else None


@pytest.mark.parametrize("where", [[], ["--memory"]])
def test_rehearses_the_chat_rollback_without_writing_the_live_file(db, where):
    before = file_state(db)

    result, report = rehearse(db, *where)

    assert result.exit_code == 0, result.output
    assert list(report) == REPORT_KEYS
    assert report["target"] == CORE and report["rolled_back"] == [CHAT]
    assert report["rows_lost"] == {"ChatMessages": 15, "ChatSessions": 3}
    assert [s["name"] for s in report["steps"]] == STEPS
    assert all(s["ok"] and s["seconds"] >= 0 for s in report["steps"])
    assert report["ok"] and report["problems"] == []
    assert (report["snapshot"] == "memory") == bool(where)
    assert report["snapshot_mode"] == ("memory" if where else "overlay")
    assert file_state(db) == before
    assert history(db) == {CORE, CHAT}


def wal(path):
    with connect(path) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return path


def meanwhile(monkeypatch, action, step="_record_start"):
    """Run action(snapshot) when the rehearsal reaches `step`: by default once the
    snapshot is taken, before the rehearsal reads it; "_after_apply": at its last step."""
    original = getattr(rehearsal, step)

    def first_the_action(snap, *args):
        action(snap)
        return original(snap, *args)

    monkeypatch.setattr(rehearsal, step, first_the_action)


def add_message(path, mid="late"):
    with connect(path) as c:
        c.execute("INSERT INTO ChatMessages VALUES (?, 's0', 'user', 'hi', 0, '2025-01-01', NULL)",
                  (mid,))
        c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # as far as readers let it


def test_a_wal_database_is_rehearsed_on_a_view_of_its_file(db):
    with connect(wal(db)) as app:  # the app keeps its -wal; the rehearsal runs as a process
        app.execute("SELECT count(*) FROM ChatMessages").fetchall()
        before = file_state(db)
        result = run("--database", db, "--json", "rehearse")
        assert file_state(db) == before
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["snapshot_mode"] == "overlay" and report["rows_lost"]["ChatMessages"] == 15


def test_a_commit_during_a_wal_rehearsal_is_not_in_it_and_not_lost(db, monkeypatch):
    wal(db)
    meanwhile(monkeypatch, lambda snap: add_message(db))
    report = rehearsal.rehearse(Context(db))
    assert report.ok and report.snapshot_mode == "overlay", report.problems
    assert report.rows_lost["ChatMessages"] == 15
    assert count(db, "ChatMessages") == 16


def test_an_old_wal_reader_sends_the_rehearsal_to_a_whole_copy(db):
    holder = spawn(READ_HOLDER, wal(db))
    try:
        add_message(db)  # stays in the WAL: the reader's snapshot predates it
        result, report = rehearse(db)
    finally:
        holder.communicate("\n", timeout=30)
    assert result.exit_code == 0, result.output
    assert report["snapshot_mode"] == "copy" and report["rows_lost"]["ChatMessages"] == 16


def test_a_live_file_changed_behind_sqlites_back_voids_the_rehearsal(db, monkeypatch):
    meanwhile(monkeypatch, lambda snap: os.utime(db, ns=(1, 1)))
    with pytest.raises(DatabaseUnavailable, match="the rehearsal's results are void"):
        rehearsal.rehearse(Context(db))


def test_a_live_file_cut_short_mid_rehearsal_is_named_as_changed(db, monkeypatch):
    """Reads of the live file fail; the failure is explained by the change, not blamed
    on the snapshot's directory."""
    meanwhile(monkeypatch, lambda snap: os.truncate(db, 4096))
    result, _ = rehearse(db)
    assert result.exit_code == 6
    assert "the file changed while it was read" in result.stderr and "results are void" in result.stderr


def test_rollback_journal_writers_wait_until_the_rehearsal_ends(db, monkeypatch):
    """The view reads the live file up to the last step: until then nobody may write it."""
    outcomes = []

    def app_writes(snap):
        try:
            add_message(db, "during")  # apsw's default busy timeout: 0
            outcomes.append("committed")
        except apsw.BusyError:
            outcomes.append("busy")

    meanwhile(monkeypatch, app_writes, step="_after_apply")
    report = rehearsal.rehearse(Context(db))
    assert report.ok and report.snapshot_mode == "overlay" and outcomes == ["busy"]
    add_message(db, "after")
    assert count(db, "ChatMessages") == 16


def test_a_memory_rehearsal_holds_no_lock_while_it_rehearses(db, monkeypatch):
    """--memory copies first, then rehearses on its own copy: the app commits meanwhile."""
    outcomes = []

    def app_writes(snap):
        try:
            add_message(db, f"during{len(outcomes)}")  # apsw's busy timeout is 0: any lock shows
            outcomes.append("committed")
        except apsw.BusyError:
            outcomes.append("busy")

    for step in ("_record_start", "_after_apply"):
        meanwhile(monkeypatch, app_writes, step=step)
    report = rehearsal.rehearse(Context(db), memory=True)
    assert report.ok and report.snapshot_mode == "memory", report.problems
    assert outcomes == ["committed", "committed"]  # at its first step and at its last
    assert report.rows_lost["ChatMessages"] == 15  # the copy predates both commits
    assert count(db, "ChatMessages") == 17


def test_a_rollback_journal_writer_holding_the_lock_past_2_s_sends_it_to_a_whole_copy(db):
    """The view needs the write lock a moment to begin; held by the app past GATE_WAIT,
    the rehearsal copies the committed state through the backup API instead of waiting."""
    holder = spawn(LOCK_HOLDER, db, "IMMEDIATE")  # readers may read, nobody else may write
    try:
        assert holder.first_line == "locked"
        result, report = rehearse(db)  # --timeout: the CLI's 10 s, longer than the 2 s gate
    finally:
        holder.communicate("\n", timeout=30)
    assert result.exit_code == 0, result.output
    assert report["snapshot_mode"] == "copy" and report["ok"]
    assert report["rows_lost"] == {"ChatMessages": 15, "ChatSessions": 3}
    assert count(db, "HangFire.Job") == 2  # the holder's uncommitted row never was


@pytest.mark.parametrize("in_the_way", [
    os.mkdir,  # the journal's write fails: disk I/O error
    lambda path: os.symlink("/nonexistent/dir/journal", path),  # its open fails: cannot open
])
def test_a_journal_the_snapshot_cannot_write_is_exit_6_not_a_failed_rollback(db, monkeypatch,
                                                                              in_the_way):
    before = file_state(db)
    meanwhile(monkeypatch, lambda snap: in_the_way(f"{snap.path}-journal"))
    result, _ = rehearse(db)
    assert result.exit_code == 6, result.output
    assert "cannot write the rehearsal's snapshot" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and file_state(db) == before


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB file system: the rehearsal's snapshot runs out of space in it."""
    with mounted_tmpfs(tmp_path / "tiny", "64k") as mount:
        yield mount


def test_a_full_disk_under_the_snapshot_is_exit_6_and_changes_nothing(db, tiny_disk):
    before = file_state(db)
    result = run("--database", db, "rehearse", "--workdir", tiny_disk)
    assert result.returncode == 6, result.stderr
    assert f"{tiny_disk}: cannot write the rehearsal's snapshot (database or disk is full)" \
        in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and list(tiny_disk.iterdir()) == []


def test_a_workdir_where_nothing_can_be_created_is_exit_6(db):
    result, _ = rehearse(db, "--workdir", "/proc")
    assert result.exit_code == 6, result.output
    assert "/proc: cannot create the snapshot's directory" in result.stderr


def test_temporary_snapshot_goes_to_workdir_and_is_removed(db, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    result, report = rehearse(db, "--workdir", workdir)
    assert result.exit_code == 0
    assert report["snapshot"].startswith(str(workdir))
    assert list(workdir.iterdir()) == []


def test_rehearsing_everything_counts_every_table_it_would_empty(ef_db):
    before = file_state(ef_db)
    result, report = rehearse(ef_db, "--to", "0")
    assert result.exit_code == 0, result.output
    assert report["rolled_back"] == [CHAT, CORE]
    assert report["rows_lost"]["Tasks"] == 1 and report["rows_lost"]["ChatMessages"] == 15
    assert "HangFire.Job" not in report["rows_lost"]
    assert file_state(ef_db) == before and ef_history(ef_db) == {CHAT: "9.0.6"}


def test_text_report_and_a_real_process(ef_db):
    before = file_state(ef_db)
    result = run("--database", ef_db, "rehearse")
    assert result.returncode == 0, result.stderr
    assert "real rollback would delete 15 row(s) of ChatMessages" in result.stdout
    assert "on a view of the live file (its changes in /" in result.stdout.splitlines()[0]
    assert [line.split()[0] for line in result.stdout.splitlines()[-6:]] == \
        ["snapshot", "count", "rollback", "check", "apply", "check"]
    assert file_state(ef_db) == before


def test_nothing_to_roll_back(db):
    assert cli("--database", db, "rollback", "--to", CORE, "--yes").exit_code == 0
    result, report = rehearse(db)
    assert result.exit_code == 0
    assert report["rolled_back"] == [] and [s["name"] for s in report["steps"]] == ["snapshot"]


def test_unknown_target_fails_before_copying(db):
    result = cli("--database", db, "rehearse", "--to", "nope")
    assert result.exit_code == 2 and "unknown migration 'nope'" in result.stderr


def applied_with(tmp_path, rollback_sql: str):
    """A database applied from a copy of the SQL whose chat rollback file is rollback_sql."""
    sql_dir = shutil.copytree(default_sql_dir(), tmp_path / "sql")
    (sql_dir / f"{CHAT}.rollback.sql").write_text(rollback_sql)
    path = tmp_path / "live.db"
    assert cli("--database", path, "--sql-dir", sql_dir, "apply").exit_code == 0
    with connect(path) as c:
        c.execute("INSERT INTO Repositories VALUES ('r1','repo','/src',NULL,0,1,'x','x',NULL,NULL,"
                  "'main','[]',0,0,0,0,'[]')")
        c.execute('CREATE TABLE "HangFire.Job" (Id INTEGER PRIMARY KEY, State TEXT)')
    return path, sql_dir


def test_a_rollback_that_fails_on_the_snapshot(tmp_path):
    path, sql_dir = applied_with(tmp_path, 'DROP TABLE "ChatMessages";\nDROP TABLE "NoSuchTable";\n')
    before = file_state(path)
    result, report = rehearse(path, sql_dir=sql_dir)
    assert result.exit_code == 1
    assert [(s["name"], s["ok"]) for s in report["steps"]] == [("snapshot", True), ("count rows", True),
                                                                   ("rollback", False)]
    assert "NoSuchTable" in report["problems"][0]
    assert "rehearsal failed: rollback:" in result.stderr
    assert file_state(path) == before


def test_rows_a_rollback_deletes_are_measured_on_the_snapshot(tmp_path):
    path, sql_dir = applied_with(tmp_path, 'DROP TABLE "ChatMessages";\nDROP TABLE "ChatSessions";\n'
                                           "DELETE FROM \"Repositories\" WHERE \"Id\" = 'r2';\n")
    with connect(path) as c:
        c.execute("INSERT INTO Repositories SELECT 'r2', Name, '/src2', Description, Type, IsActive, "
                  "CreatedAt, UpdatedAt, LastAccessedAt, SettingsJson, DefaultBranch, "
                  "AllowedOperationsJson, 0, 0, 0, 0, '[]' FROM Repositories")
    result, report = rehearse(path, sql_dir=sql_dir)
    assert result.exit_code == 0, report
    assert report["rows_lost"] == {"ChatMessages": 0, "ChatSessions": 0, "Repositories": 1}


def test_a_rollback_that_harms_a_table_it_does_not_name(tmp_path):
    path, sql_dir = applied_with(tmp_path, 'DROP TABLE "ChatMessages";\nDROP TABLE "ChatSessions";\n'
                                           'ALTER TABLE "Repositories" RENAME TO "Gone";\n'
                                           'INSERT INTO "HangFire.Job" (State) VALUES (\'x\');\n')
    result, report = rehearse(path, "--memory", sql_dir=sql_dir)
    assert result.exit_code == 1
    assert report["problems"] == ["check after rollback: HangFire.Job has 1 row(s), had 0; "
                                  "Repositories is gone (not dropped by the rollback file)"]
    # Stops at the first failing step: re-applying would only repeat it.
    assert [s["name"] for s in report["steps"]] == STEPS[:4]


def test_schema_not_restored_by_reapplying_is_named(tmp_path):
    path, sql_dir = applied_with(tmp_path, 'DROP TABLE "ChatMessages";\nDROP TABLE "ChatSessions";\n'
                                           'DROP INDEX "IX_Tasks_Status";\n')
    result, report = rehearse(path, sql_dir=sql_dir)
    assert result.exit_code == 1
    assert report["problems"] == [
        "check after apply: schema differs from the start: index IX_Tasks_Status on Tasks: missing"]


def test_ef_history_out_of_step_is_named_before_anything_is_rolled_back(db):
    """The real rollback and apply would also write EF's missing table: not what is being
    rehearsed, so the rehearsal stops there, saying what to do."""
    with connect(db) as c:
        c.execute('DROP TABLE "__EFMigrationsHistory"')  # as an older version's apply left it
    before = file_state(db)

    result, report = rehearse(db)

    assert result.exit_code == 1
    assert [(s["name"], s["ok"]) for s in report["steps"]] == [
        ("snapshot", True), ("count rows", True), ("EF history", False)]
    assert report["problems"] == [
        f"EF history: no __EFMigrationsHistory table although {CORE}, {CHAT} are applied: EF Core "
        "believes nothing is applied; run `orchestra-schema apply` to create it with EF's rows"]
    assert file_state(db) == before
    assert cli("--database", db, "apply").exit_code == 0
    assert rehearse(db)[0].exit_code == 0
