"""EF Core interop on real files: adopt, EF history kept in step, history forget."""

import json
import random
import shutil
from pathlib import Path

import pytest

from helpers import (CHAT, CHAT_TABLES, CORE, CORE_TABLES, build_ef_database, cli, connect, count,
                      ef_history, file_state, history, run, tables)
from faults import kill_during, run_to_end, work_span
from orchestra_schema.migrations import default_sql_dir

EF_ROW = {CHAT: "9.0.6"}


def _log_operations(path, migration_id):
    with connect(path) as c:
        return [r[0] for r in c.execute(
            "SELECT operation FROM _yoyo_log WHERE migration_id = ? ORDER BY created_at_utc",
            (migration_id,))]


def _counts(path):
    return {t: count(path, t) for t in tables(path) if not t.startswith("_yoyo")}


def test_adopt_records_both_migrations_without_running_them(tmp_path):
    path = build_ef_database(tmp_path / "orchestra.db")
    rows_before = _counts(path)

    result = cli("--database", path, "--json", "adopt")

    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["recorded"] == [CORE, CHAT] and data["already_adopted"] is False
    assert data["ef_history"] == [{"migration_id": CHAT, "product_version": "9.0.6"}]
    assert history(path) == {CORE, CHAT}
    assert ef_history(path) == EF_ROW
    assert _log_operations(path, CORE) == ["mark"] and _log_operations(path, CHAT) == ["mark"]
    after = _counts(path)
    assert {t: n for t, n in after.items() if t in rows_before} == rows_before
    status = json.loads(cli("--database", path, "--json", "status").stdout)
    assert [(m["forward_matches"], m["rollback_matches"]) for m in status["migrations"]] == \
        [(True, True), (True, True)]
    assert cli("--database", path, "verify").exit_code == 0


def test_adopt_twice_changes_nothing(ef_db):
    before = file_state(ef_db)
    result = cli("--database", ef_db, "adopt")
    assert result.exit_code == 0
    assert "already adopted" in result.stderr
    assert file_state(ef_db) == before


@pytest.mark.parametrize("by_hand, words", [
    # every difference, in one line
    (['DROP INDEX "IX_Tasks_Status"', 'ALTER TABLE "ChatSessions" ADD COLUMN "Pinned" INTEGER'],
     ["2 way(s)", "index IX_Tasks_Status on Tasks: missing", "column ChatSessions.Pinned"]),
    (['DELETE FROM "__EFMigrationsHistory"'], ["does not list", "EF Core did not make"]),
    (["INSERT INTO __EFMigrationsHistory VALUES ('20990101000000_Later', '9.0.6')"],
     ["also lists 20990101000000_Later"]),
])
def test_adopt_refuses_and_changes_nothing(tmp_path, by_hand, words):
    path = build_ef_database(tmp_path / "orchestra.db")
    with connect(path) as c:
        for sql in by_hand:
            c.execute(sql)
    before = file_state(path)

    result = cli("--database", path, "adopt")

    assert result.exit_code == 5
    assert all(w in result.stderr for w in words), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_state(path) == before
    assert history(path) == set()


def test_apply_on_an_unadopted_ef_database_says_adopt(tmp_path):
    path = build_ef_database(tmp_path / "orchestra.db")
    before = file_state(path)
    for args in (["apply"], ["apply", "--dry-run"]):
        result = cli("--database", path, *args)
        assert result.exit_code == 5
        assert "orchestra-schema adopt" in result.stderr
    assert file_state(path) == before


def test_rollback_and_apply_keep_the_ef_row_in_step(ef_db):
    result = cli("--database", ef_db, "--json", "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["ef_history"] == [f"removed {CHAT}"]
    assert "__EFMigrationsHistory: removed" in result.stderr
    assert ef_history(ef_db) == {}
    assert not tables(ef_db) & CHAT_TABLES and CORE_TABLES <= tables(ef_db)
    assert count(ef_db, "HangFire.Job") == 2 and count(ef_db, "Tasks") == 1

    result = cli("--database", ef_db, "--json", "apply")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["ef_history"] == [f"added {CHAT} (ProductVersion 9.0.6)"]
    assert ef_history(ef_db) == EF_ROW

    assert cli("--database", ef_db, "rollback", "--to", "0", "--yes").exit_code == 0
    assert ef_history(ef_db) == {} and history(ef_db) == set()
    assert cli("--database", ef_db, "apply", "--to", CORE).exit_code == 0
    assert ef_history(ef_db) == {}  # the core alone is not what EF's row stands for
    assert cli("--database", ef_db, "apply").exit_code == 0
    assert ef_history(ef_db) == EF_ROW
    assert cli("--database", ef_db, "verify").exit_code == 0


def test_ef_row_is_in_the_migrations_transaction(ef_db, tmp_path):
    """A migration that fails after the EF row was written leaves no EF row behind."""
    assert cli("--database", ef_db, "rollback", "--to", CORE, "--yes").exit_code == 0
    sql_dir = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), sql_dir)
    with open(sql_dir / f"{CHAT}.sql", "a") as f:  # fails the final foreign_key_check
        f.write("\nINSERT INTO ChatMessages VALUES ('x', 'no-such-session', 'a', 'c', 0, 'now', NULL);\n")
    before = file_state(ef_db)

    result = cli("--database", ef_db, "--sql-dir", sql_dir, "apply")

    assert result.exit_code == 4, result.stderr
    assert ef_history(ef_db) == {} and history(ef_db) == {CORE}
    assert file_state(ef_db)[0][1] == before[0][1]  # same bytes


def test_ef_table_made_by_a_failing_migration_is_rolled_back_with_it(db, tmp_path):
    """On a database an older version left without EF's table, the table apply creates
    commits with the migration or not at all."""
    assert cli("--database", db, "rollback", "--to", CORE, "--yes", "--no-backup").exit_code == 0
    with connect(db) as c:
        c.execute('DROP TABLE "__EFMigrationsHistory"')
    sql_dir = shutil.copytree(default_sql_dir(), tmp_path / "sql")
    with open(sql_dir / f"{CHAT}.sql", "a") as f:  # fails the final foreign_key_check
        f.write("\nINSERT INTO ChatMessages VALUES ('x', 'no-such-session', 'a', 'c', 0, 'now', NULL);\n")

    result = cli("--database", db, "--sql-dir", sql_dir, "apply")

    assert result.exit_code == 4, result.stderr
    assert ef_history(db) is None and history(db) == {CORE} and not tables(db) & CHAT_TABLES


def _ef_table_definition(path):
    with connect(path) as c:
        return c.execute("SELECT type, name, sql FROM sqlite_schema "
                         "WHERE tbl_name = '__EFMigrationsHistory' ORDER BY name").fetchall()


def test_apply_leaves_ef_cores_history_as_ef_core_9_writes_it(tmp_path):
    """What `dotnet ef database update` would find: EF Core 9's own table (as its script
    defines it, byte for byte) with its row, so it has nothing to do."""
    ef_made = build_ef_database(tmp_path / "ef.db", with_rows=False)
    path = tmp_path / "orchestra.db"
    assert cli("--database", path, "apply", "--to", CORE).exit_code == 0
    assert _ef_table_definition(path) == _ef_table_definition(ef_made)
    assert ef_history(path) == {}  # the core alone is not what EF's migration made

    result = cli("--database", path, "--json", "apply")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["ef_history"] == [f"added {CHAT} (ProductVersion 9.0.6)"]
    assert ef_history(path) == ef_history(ef_made) == EF_ROW
    assert _ef_table_definition(path) == _ef_table_definition(ef_made)


def test_apply_writes_ef_history_an_older_version_left_out(db):
    """Up to date, but EF's table missing (an older version's apply): apply makes it, with
    the row, in a transaction of its own; verify fails until then, in one line."""
    with connect(db) as c:
        c.execute('DROP TABLE "__EFMigrationsHistory"')
    verify = cli("--database", db, "--json", "verify")
    assert verify.exit_code == 1
    assert json.loads(verify.stdout)["problems"] == [
        f"ef_history: no __EFMigrationsHistory table although {CORE}, {CHAT} are applied: EF Core "
        "believes nothing is applied; run `orchestra-schema apply` to create it with EF's rows"]

    result = cli("--database", db, "apply")

    assert result.exit_code == 0, result.stderr
    assert f"__EFMigrationsHistory: added {CHAT} (ProductVersion 9.0.6)" in result.stderr
    assert ef_history(db) == EF_ROW
    assert cli("--database", db, "verify").exit_code == 0
    before = file_state(db)
    assert "up to date" in cli("--database", db, "apply").stderr
    assert file_state(db) == before  # in step: no write at all


def test_verify_fails_when_ef_lacks_a_row_or_lists_one_not_applied(db):
    with connect(db) as c:
        c.execute('DELETE FROM "__EFMigrationsHistory"')
    assert json.loads(cli("--database", db, "--json", "verify").stdout)["problems"] == [
        f"ef_history: __EFMigrationsHistory lacks {CHAT} although {CORE}, {CHAT} are applied: "
        "EF Core believes those tables do not exist; run `orchestra-schema apply` to write it"]
    assert cli("--database", db, "apply").exit_code == 0 and ef_history(db) == EF_ROW
    assert cli("--database", db, "history", "forget", CHAT, "--from", "yoyo", "--yes",
               "--no-backup").exit_code == 0
    assert json.loads(cli("--database", db, "--json", "verify").stdout)["checks"][4]["problems"] \
        == [f"__EFMigrationsHistory lists {CHAT} but {CHAT} is not applied: "
            "the EF app believes tables exist that do not"]


def test_a_failed_history_write_rolls_the_migration_back(db):
    """yoyo's history row is written in the migration's transaction: a trigger that refuses
    it leaves the migration's tables and EF's row out too."""
    assert cli("--database", db, "rollback", "--to", CORE, "--yes", "--no-backup").exit_code == 0
    with connect(db) as c:
        c.execute("CREATE TRIGGER frozen BEFORE INSERT ON _yoyo_migration "
                  "BEGIN SELECT RAISE(ABORT, 'yoyo history is frozen'); END")

    result = cli("--database", db, "apply")

    assert result.exit_code == 4, result.stderr
    assert "yoyo history is frozen" in result.stderr
    assert history(db) == {CORE} and ef_history(db) == {} and not tables(db) & CHAT_TABLES


@pytest.mark.parametrize("operation, command", [
    ("INSERT", ["apply"]), ("DELETE", ["rollback", "--to", CORE, "--yes"])])
def test_a_failed_ef_change_rolls_the_migration_back(ef_db, operation, command):
    """The EF change and the migration commit together or not at all."""
    if operation == "INSERT":
        assert cli("--database", ef_db, "rollback", "--to", CORE, "--yes").exit_code == 0
    with connect(ef_db) as c:
        c.execute(f"CREATE TRIGGER frozen BEFORE {operation} ON __EFMigrationsHistory "
                  "BEGIN SELECT RAISE(ABORT, 'EF history is frozen'); END")
    before = (history(ef_db), ef_history(ef_db), tables(ef_db), file_state(ef_db)[0][1])

    result = cli("--database", ef_db, *command)

    assert result.exit_code == 4, result.stderr
    assert "EF history is frozen" in result.stderr and "rolled back" in result.stderr
    assert (history(ef_db), ef_history(ef_db), tables(ef_db), file_state(ef_db)[0][1]) == before


def test_status_shows_ef_history_next_to_yoyos(ef_db):
    result = cli("--database", ef_db, "status")
    assert f"EF history (__EFMigrationsHistory): {CHAT} (EF Core 9.0.6)" in result.stdout
    data = json.loads(cli("--database", ef_db, "--json", "status").stdout)
    assert data["ef_history"] == [{"migration_id": CHAT, "product_version": "9.0.6"}]


def test_status_of_a_database_without_ef_history(db):
    """As an older version's apply left it: status names the missing table and the fix."""
    with connect(db) as c:
        c.execute('DROP TABLE "__EFMigrationsHistory"')
    data = json.loads(cli("--database", db, "--json", "status").stdout)
    assert data["ef_history"] is None
    out = cli("--database", db, "status").stdout
    assert "EF history: none (no __EFMigrationsHistory table)" in out
    assert (f"note: no __EFMigrationsHistory table although {CORE}, {CHAT} are applied: EF Core "
            "believes nothing is applied; run `orchestra-schema apply`") in out


def test_forget_ef_row_leaves_schema_and_yoyo_history(ef_db):
    schema_before = tables(ef_db)
    result = cli("--database", ef_db, "--json", "history", "forget", CHAT, "--from", "ef", "--yes")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    backup = out.pop("backup")
    assert out == {"database": str(ef_db), "migration_id": CHAT, "history": "ef"}
    from orchestra_schema.engines.sqlite.backup import backups_of
    assert backup == str(backups_of(ef_db)[-1])  # taken before the history changed
    assert ef_history(ef_db) == {}
    assert history(ef_db) == {CORE, CHAT} and tables(ef_db) == schema_before
    verify = cli("--database", ef_db, "verify")
    assert verify.exit_code == 1 and f"lacks {CHAT}" in verify.stdout


def test_forget_yoyo_entry_removes_its_checksum_and_keeps_the_tables(ef_db):
    result = cli("--database", ef_db, "history", "forget", CHAT, "--from", "yoyo", "--yes")
    assert result.exit_code == 0, result.stderr
    assert history(ef_db) == {CORE} and ef_history(ef_db) == EF_ROW
    assert CHAT_TABLES <= tables(ef_db)
    assert _log_operations(ef_db, CHAT)[-1] == "unmark"
    with connect(ef_db) as c:
        assert [r[0] for r in c.execute("SELECT migration_id FROM _orchestra_schema_checksum")] == [CORE]
    # A migration in one history only needs no --from.
    assert cli("--database", ef_db, "history", "forget", CORE, "--yes").exit_code == 0
    assert history(ef_db) == set()


def test_forget_refuses_unknown_ambiguous_and_unconfirmed(ef_db):
    before = file_state(ef_db)
    for args, code, words in [
        ([CHAT, "--yes"], 2, "--from yoyo or --from ef"),
        (["20990101000000_Nope", "--yes"], 2, "'20990101000000_Nope' is in neither"),
        (["x'); DROP TABLE Tasks; --", "--yes"], 2, "is in neither"),
        ([CORE, "--from", "ef", "--yes"], 2, "is not in __EFMigrationsHistory"),
    ]:
        result = cli("--database", ef_db, "history", "forget", *args)
        assert result.exit_code == code, (args, result.stderr)
        assert words in result.stderr
    # A real process on a pipe: never prompts, never waits.
    result = run("--database", ef_db, "history", "forget", CORE, timeout=30)
    assert result.returncode == 5 and "--yes" in result.stderr
    assert file_state(ef_db) == before
    assert "Tasks" in tables(ef_db)


def test_kill_at_random_instants_keeps_ef_history_in_step(ef_db, tmp_path_factory):
    """Apply/rollback of the chat tables killed at random instants of their work: EF's row
    is there exactly when the chat migration is, after every kill. Each run starts from
    the state it changes, and the kills must land inside its write transaction."""
    sql_dir = shutil.copytree(default_sql_dir(), tmp_path_factory.mktemp("ef-kill") / "sql")
    # Rows, so the FK check after the EF hook takes time; only where the app's Hangfire table is,
    # so lint's replay of the file on an empty scratch database (apply runs it first) stays short.
    with open(sql_dir / f"{CHAT}.sql", "a") as f:
        f.write("\nINSERT INTO ChatSessions VALUES ('bulk', NULL, 'i', 't', 'c', 'l');\n"
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 200000 * "
                "(SELECT count(*) FROM sqlite_schema WHERE name = 'HangFire.Job'))\n"
                "INSERT INTO ChatMessages SELECT 'm' || n, 'bulk', 'a', 'c', 0, 'now', NULL FROM r;\n")
    base = ["-d", ef_db, "--sql-dir", sql_dir, "--timeout", "30"]
    commands = {"apply": ["apply"], "rollback": ["rollback", "--to", CORE, "--yes", "--no-backup", "--secure-delete"]}
    run_to_end([*base, *commands["rollback"]])  # the EF chat rows out; in turn, the bulk rows in
    spans = {name: work_span([*base, *commands[name]], ef_db.parent) for name in ("apply", "rollback")}
    rng, landed, in_transaction = random.Random(3), 0, {"apply": 0, "rollback": 0}
    for trial in range(10):
        name = ("apply", "rollback")[trial % 2]
        if (CHAT in history(ef_db)) != (name == "rollback"):  # from the state it changes
            run_to_end([*base, *commands["rollback" if name == "apply" else "apply"]])
        kill = kill_during([*base, *commands[name]], ef_db.parent, ef_db,
                           rng.uniform(0.1, 0.9) * spans[name])
        landed += kill.landed
        in_transaction[name] += kill.landed and kill.in_transaction
        with connect(ef_db) as c:  # a read-write open rolls back a hot journal, as the app would
            c.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        applied = CHAT in history(ef_db)
        assert (CHAT in ef_history(ef_db)) == applied == ("ChatMessages" in tables(ef_db))
    assert landed >= 5 and min(in_transaction.values()) >= 1, (landed, in_transaction)


def test_status_points_an_unadopted_ef_database_to_adopt(tmp_path):
    from helpers import build_ef_database
    path = build_ef_database(tmp_path / "orchestra.db")
    out = cli("--database", path, "status").stdout
    assert "note: made by EF Core and not adopted yet; run `orchestra-schema adopt`" in out
    assert cli("--database", path, "adopt").exit_code == 0
    assert "not adopted" not in cli("--database", path, "status").stdout


@pytest.mark.parametrize("command, table, operation", [
    (["adopt"], "_yoyo_migration", "INSERT"),
    (["history", "forget", CHAT, "--from", "ef", "--yes"], "__EFMigrationsHistory", "DELETE")])
def test_adopt_and_forget_name_their_backup_when_the_write_fails(tmp_path, command, table,
                                                                 operation):
    """Under -q the backup's path is printed nowhere else: the one error line names it."""
    path = build_ef_database(tmp_path / "orchestra.db")
    assert cli("--database", path, "adopt", "--no-backup").exit_code == 0
    if command == ["adopt"]:  # adopted, then yoyo's history reset by hand: adopt again
        for mid in (CHAT, CORE):
            assert cli("--database", path, "history", "forget", mid, "--from", "yoyo", "--yes",
                       "--no-backup").exit_code == 0
    with connect(path) as c:
        c.execute(f"CREATE TRIGGER frozen BEFORE {operation} ON {table} "
                  "BEGIN SELECT RAISE(ABORT, 'history is frozen'); END")
    before = (history(path), ef_history(path))

    result = cli("-q", "--database", path, *command)

    assert result.exit_code == 4, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1
    kept = result.stderr.split("kept the backup taken first: ")[1].strip()
    assert Path(kept).is_file() and Path(f"{kept}.json").is_file()
    assert (history(path), ef_history(path)) == before


def test_adopt_drops_its_backup_when_it_stops_busy(tmp_path):
    """Busy before the write: nothing changed, the backup is only clutter (as rollback's)."""
    path = build_ef_database(tmp_path / "orchestra.db")
    with connect(path) as holder:
        holder.execute("BEGIN IMMEDIATE")
        result = cli("-q", "--database", path, "--timeout", "0.2", "adopt")
        holder.execute("ROLLBACK")
    assert result.exit_code == 3, result.stderr
    assert not [p for p in path.parent.rglob("*backup*")], list(path.parent.rglob("*"))


def test_dry_runs_say_what_ef_history_becomes(tmp_path, db):
    """--dry-run shows EF's rows as the run would leave them, after the statements."""
    ef_line = ("-- then in EF Core's history, as apply leaves it: created __EFMigrationsHistory "
               f"(EF Core's definition); added {CHAT} (ProductVersion 9.0.6)")
    new = tmp_path / "new.db"
    result = cli("--database", new, "apply", "--dry-run")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == ef_line
    assert not new.exists()
    with connect(db) as c:  # made by a version that wrote no EF table: apply repairs it
        c.execute('DROP TABLE "__EFMigrationsHistory"')
    result = cli("--database", db, "apply", "--dry-run")
    assert (result.exit_code, result.stdout) == (0, ef_line + "\n")
    assert json.loads(cli("--database", db, "--json", "apply", "--dry-run").stdout)[
        "ef_history"] == ["created __EFMigrationsHistory (EF Core's definition)",
                          f"added {CHAT} (ProductVersion 9.0.6)"]
    assert ef_history(db) is None
    assert cli("--database", db, "apply").exit_code == 0
    result = cli("--database", db, "rollback", "--to", CORE, "--dry-run")
    assert result.stdout.splitlines()[-1] == (
        f"-- then in EF Core's history, as rollback leaves it: removed {CHAT}")
    assert ef_history(db) == {CHAT: "9.0.6"}
