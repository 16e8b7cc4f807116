"""The DBA's path through the CLI on real files: status, apply, rollback, dry runs, new."""

import json
import os

import pytest

from helpers import (CHAT, CHAT_TABLES, CORE, CORE_TABLES, cli, connect, count, file_state,
                      history, run, tables)


def test_fresh_apply_creates_the_database_and_status_shows_it(tmp_path):
    path = tmp_path / "orchestra.db"
    result = cli("-d", path, "apply")
    assert result.exit_code == 0
    assert f"applied {CORE}" in result.stderr and f"applied {CHAT}" in result.stderr
    assert tables(path) >= CORE_TABLES | CHAT_TABLES
    report = json.loads(cli("-d", path, "--json", "status").stdout)
    assert report["database"] == str(path)
    assert [(m["id"], m["applied"]) for m in report["migrations"]] == [(CORE, True), (CHAT, True)]
    for m in report["migrations"]:
        assert m["applied_at"] and m["has_rollback"] and m["forward_matches"] and m["rollback_matches"]
    assert cli("-d", path, "apply").stderr.strip().endswith("up to date, nothing to apply")


def test_chat_rollback_keeps_core_rows_and_apply_brings_tables_back(db):
    before_core = {t: count(db, t) for t in CORE_TABLES}
    result = cli("-d", db, "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 0, result.output
    assert not tables(db) & CHAT_TABLES
    assert {t: count(db, t) for t in CORE_TABLES} == before_core
    assert count(db, "HangFire.Job") == 2
    assert history(db) == {CORE}
    assert cli("-d", db, "apply").exit_code == 0
    assert tables(db) >= CHAT_TABLES and history(db) == {CORE, CHAT}


def test_rollback_to_zero_removes_everything_it_manages_and_nothing_else(db):
    assert cli("-d", db, "rollback", "--to", "0", "--yes").exit_code == 0
    remaining = tables(db)
    assert not remaining & (CORE_TABLES | CHAT_TABLES)
    assert "HangFire.Job" in remaining and count(db, "HangFire.Job") == 2
    assert history(db) == set()


def test_rollback_that_loses_rows_needs_yes_and_changes_nothing_without_it(db):
    before = file_state(db)
    result = run("-d", db, "rollback", "--to", CORE)  # stdin is not a terminal: never waits
    assert result.returncode == 5
    assert "ChatSessions 3" in result.stderr and "ChatMessages 15" in result.stderr
    assert "--yes" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before


def test_rollback_of_empty_tables_needs_no_yes(tmp_path):
    path = tmp_path / "o.db"
    cli("-d", path, "apply")
    assert cli("-d", path, "rollback", "--to", CORE).exit_code == 0
    assert history(path) == {CORE}


@pytest.mark.parametrize("args", [["apply", "--dry-run"], ["rollback", "--to", "0", "--dry-run"]])
def test_dry_run_changes_no_byte(db, args):
    if args[0] == "apply":
        cli("-d", db, "rollback", "--to", CORE, "--yes")
    before = file_state(db)
    result = cli("-d", db, *args)
    assert result.exit_code == 0
    assert file_state(db) == before


def test_dry_run_prints_the_exact_sql_in_order_under_headers(db):
    out = cli("-d", db, "rollback", "--to", "0", "--dry-run").stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"-- rollback {CHAT} (") and lines[0].endswith(".rollback.sql)")
    assert lines[1:3] == ['DROP TABLE "ChatMessages";', 'DROP TABLE "ChatSessions";']
    assert f"-- rollback {CORE} (" in out
    assert out.index('DROP TABLE "OrchestrationLogs";') < out.index('DROP TABLE "Repositories";')


def test_apply_dry_run_on_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "new.db"
    result = cli("-d", path, "apply", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"-- apply {CORE}")
    assert 'CREATE TABLE "ChatSessions"' in result.stdout
    assert not path.exists()


def test_apply_to_stops_at_the_target(tmp_path):
    path = tmp_path / "o.db"
    assert cli("-d", path, "apply", "--to", CORE).exit_code == 0
    assert history(path) == {CORE} and not tables(path) & CHAT_TABLES
    status = cli("-d", path, "status").stdout
    assert "pending" in status and CHAT in status


def test_json_results_for_apply_and_rollback(db):
    out = json.loads(cli("-d", db, "--json", "rollback", "--to", CORE, "--yes").stdout)
    assert out["rolled_back"] == [CHAT]
    assert out["rows_lost"] == {"ChatMessages": 15, "ChatSessions": 3}
    out = json.loads(cli("-d", db, "--json", "apply").stdout)
    assert out["applied"] == [CHAT] and out["created"] is False


def test_rollback_with_yes_names_the_tables_losing_rows_and_counts_only_for_json(db):
    from orchestra_schema.commands import migrate as commands
    from orchestra_schema.context import Context
    with connect(db) as c:
        c.execute('DELETE FROM "ChatMessages"')  # empty: not at risk, so never listed
    result = commands.rollback(Context(db), to=CORE, yes=True, exact_counts=False)
    assert result.rolled_back == [CHAT] and result.rows_lost == {"ChatSessions": None}
    assert cli("-d", db, "apply").exit_code == 0
    with connect(db) as c:
        c.execute("""INSERT INTO "ChatSessions" VALUES ('s', 'u', 'i', 't', '2025-01-01',
                     '2025-01-01')""")
    out = json.loads(cli("-d", db, "--json", "rollback", "--to", CORE, "--yes").stdout)
    assert out["rows_lost"] == {"ChatSessions": 1}


def test_quiet_success_prints_nothing(tmp_path):
    result = cli("-q", "-d", tmp_path / "o.db", "apply")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_database_comes_from_the_environment(tmp_path):
    path = tmp_path / "env.db"
    assert cli("apply", env={"ORCHESTRA_DB": str(path), "HANGFIRE_CONNECTION": None}).exit_code == 0
    assert path.exists()
    other = tmp_path / "hangfire.db"
    env = {"ORCHESTRA_DB": None, "HANGFIRE_CONNECTION": f"Data Source={other};Cache=Shared"}
    assert cli("apply", env=env).exit_code == 0
    assert history(other) == {CORE, CHAT}


def test_runs_as_python_module_and_never_loads_the_sqlite3_module(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "o.db"
    code = ("import sys; from orchestra_schema.cli import main\n"
            "try:\n    main(['-d', sys.argv[1], 'apply'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'sqlite3' not in sys.modules and '_sqlite3' not in sys.modules, 'sqlite3 loaded'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert run("-d", path, "status").returncode == 0


def test_stock_yoyo_list_sees_the_history(db):
    import shutil
    import subprocess
    import sys
    from orchestra_schema.migrations import default_sql_dir
    yoyo = shutil.which("yoyo") or os.path.join(os.path.dirname(sys.executable), "yoyo")
    out = subprocess.run([yoyo, "list", "--batch", "--database", f"sqlite:///{db}", str(default_sql_dir())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if CORE in line or CHAT in line]
    assert sorted(r[:2] for r in rows) == [["A", CORE], ["A", CHAT]]


def test_new_creates_a_pair_with_the_next_id_depending_on_the_head(tmp_path):
    from orchestra_schema.migrations import default_sql_dir
    sql = tmp_path / "sql"
    sql.mkdir()
    for f in default_sql_dir().glob("*.sql"):
        (sql / f.name).write_bytes(f.read_bytes())
    result = cli("--sql-dir", sql, "new", "add_notes")
    assert result.exit_code == 0
    forward, rollback = map(lambda p: __import__("pathlib").Path(p), result.stdout.split())
    assert forward.name.endswith("_add_notes.sql") and forward.name > f"{CHAT}.sql"
    assert rollback.name == forward.name[:-4] + ".rollback.sql"
    assert f"-- depends: {CHAT}" in forward.read_text()
    forward.write_text(forward.read_text() + 'CREATE TABLE "Notes" ("Id" TEXT PRIMARY KEY);\n')
    rollback.write_text(rollback.read_text() + 'DROP TABLE "Notes";\n')
    path = tmp_path / "o.db"
    assert cli("--sql-dir", sql, "-d", path, "apply").exit_code == 0
    assert "Notes" in tables(path)
    assert cli("--sql-dir", sql, "-d", path, "rollback", "--to", CHAT).exit_code == 0
    assert "Notes" not in tables(path) and tables(path) >= CHAT_TABLES


def test_help_documents_exit_codes():
    out = cli("--help").stdout
    for code in range(7):
        assert f"  {code}  " in out


def _run_on_terminal(args, answer):
    """Run the CLI with a real pseudo-terminal as stdin/stderr and answer its prompt."""
    import pty
    import subprocess
    import sys
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orchestra_schema", *map(str, args)],
                            stdin=follower, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    while b"lose these rows?" not in seen:
        chunk = os.read(leader, 1024)
        assert chunk, seen
        seen += chunk
    os.write(leader, answer + b"\n")
    proc.wait(timeout=30)
    os.close(leader)
    return proc.returncode, seen.decode()


@pytest.mark.parametrize("answer, code", [(b"y", 0), (b"n", 5)])
def test_on_a_terminal_rollback_asks_and_obeys(db, answer, code):
    before = file_state(db)
    returncode, prompt = _run_on_terminal(["-d", db, "rollback", "--to", CORE], answer)
    assert "ChatMessages: 15 row(s) will be deleted" in prompt
    assert returncode == code
    if code == 0:
        assert history(db) == {CORE}
    else:
        assert file_state(db) == before


@pytest.mark.parametrize("secure, readable", [(False, True), (True, False)])
def test_secure_delete_decides_whether_dropped_chat_text_stays_in_the_file(tmp_path, secure, readable):
    path = tmp_path / "o.db"
    cli("-d", path, "apply")
    secret = "the-password-is-swordfish"
    with connect(path) as c:
        c.execute("INSERT INTO ChatSessions VALUES ('s', NULL, 'i', 't', 'c', 'l')")
        c.execute("INSERT INTO ChatMessages VALUES ('m', 's', 'user', ?, 0, 'c', NULL)", (secret * 50,))
    args = ["--secure-delete"] if secure else []
    assert cli("-d", path, "rollback", "--to", CORE, "--yes", "--no-backup", *args).exit_code == 0
    assert (secret.encode() in path.read_bytes()) is readable


def test_rollback_only_takes_the_migration_and_what_depends_on_it(db):
    result = cli("--database", db, "--json", "rollback", "--only", CORE, "--yes", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back"] == [CHAT, CORE]
    assert not (CORE_TABLES | CHAT_TABLES) & tables(db)


def test_rollback_only_chat_keeps_the_core(db):
    result = cli("--database", db, "rollback", "--only", CHAT, "--yes", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert tables(db) & (CORE_TABLES | CHAT_TABLES) == CORE_TABLES
    assert history(db) == {CORE}


def test_rollback_wants_exactly_one_of_to_and_only(db):
    assert cli("--database", db, "rollback", "--no-backup").exit_code == 2
    assert cli("--database", db, "rollback", "--to", "0", "--only", CHAT).exit_code == 2
    unknown = cli("--database", db, "rollback", "--only", "nope")
    assert unknown.exit_code == 2 and "--only" in unknown.stderr
