"""Bad input: one clear line, the documented exit code, and no change to any file."""

import apsw
import pytest

from helpers import CHAT, CORE, cli, file_state, history, run, tables

ONE_LINE = "orchestra-schema: error: "
LINT = "orchestra-schema: warning: lint: "  # apply's advisory findings on the files it runs


def assert_error(result, code, *words):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith(LINT)]
    assert len(lines) == 1 and lines[0].startswith(ONE_LINE), result.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["status"], ["apply"], ["rollback", "--to", "0", "--yes"],
                                     ["apply", "--dry-run"]])
def test_non_sqlite_file_is_refused_unchanged(tmp_path, command):
    path = tmp_path / "orchestra.db"
    path.write_bytes(b"this is a CSV export, not a database\n" * 200)
    before = file_state(path)
    assert_error(cli("-d", path, *command), 6, str(path), "not an SQLite database")
    assert file_state(path) == before


@pytest.mark.parametrize("command", [["status"], ["apply"], ["rollback", "--to", "0"]])
def test_directory_is_refused(tmp_path, command):
    assert_error(cli("-d", tmp_path, *command), 6, "is a directory")


@pytest.mark.parametrize("command", [["status"], ["rollback", "--to", "0"], ["rollback", "--to", "0", "--dry-run"]])
def test_missing_file_for_commands_that_do_not_create_creates_nothing(tmp_path, command):
    path = tmp_path / "missing.db"
    assert_error(cli("-d", path, *command), 6, "not found")
    assert list(tmp_path.iterdir()) == []


def test_apply_into_a_missing_directory_is_refused(tmp_path):
    assert_error(cli("-d", tmp_path / "nowhere" / "o.db", "apply"), 6, "does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["apply", "--to", "nope"], ["rollback", "--to", "nope", "--yes"],
                                     ["apply", "--to", "nope", "--dry-run"]])
def test_unknown_target_is_a_usage_error_and_touches_nothing(db, command):
    before = file_state(db)
    assert_error(cli("-d", db, *command), 2, "unknown migration 'nope'", CORE)
    assert file_state(db) == before


def test_unknown_target_on_a_missing_database_creates_nothing(tmp_path):
    path = tmp_path / "o.db"
    assert_error(cli("-d", path, "apply", "--to", "nope"), 2)
    assert not path.exists()


def test_missing_or_empty_sql_dir(tmp_path):
    path = tmp_path / "o.db"
    assert_error(cli("--sql-dir", tmp_path / "nosql", "-d", path, "apply"), 2, "sql directory not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(cli("--sql-dir", empty, "-d", path, "apply"), 2, "no migrations")
    assert not path.exists()


def test_rollback_file_without_forward_file(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_a.sql").write_text("CREATE TABLE a(x);\n")
    (sql / "0002_b.rollback.sql").write_text("DROP TABLE b;\n")
    assert_error(cli("--sql-dir", sql, "-d", tmp_path / "o.db", "apply"), 2, "0002_b.rollback.sql")


def test_unknown_dependency_and_cycles(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_a.sql").write_text("-- depends: 0009_missing\nCREATE TABLE a(x);\n")
    assert_error(cli("--sql-dir", sql, "-d", tmp_path / "o.db", "apply"), 2, "0009_missing")
    (sql / "0001_a.sql").write_text("-- depends: 0002_b\nCREATE TABLE a(x);\n")
    (sql / "0002_b.sql").write_text("-- depends: 0001_a\nCREATE TABLE b(x);\n")
    assert_error(cli("--sql-dir", sql, "-d", tmp_path / "o.db", "apply"), 2, "circular")
    assert not (tmp_path / "o.db").exists()


@pytest.mark.parametrize("name", ["with space.db", "hash#tag.db", "what?.db", "per%20cent.db",
                                  "ümlaut-数据.db", "file:looks-like-uri.db"])
def test_awkward_paths_work_literally(tmp_path, name):
    path = tmp_path / name
    result = run("-d", path, "apply")
    assert result.returncode == 0, result.stderr
    assert path.exists() and history(path) == {CORE, CHAT}
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no stray file under a mangled name
    assert run("-d", path, "status").returncode == 0
    assert run("-d", path, "rollback", "--to", CORE).returncode == 0
    assert "ChatSessions" not in tables(path)


def test_awkward_sql_dir_path(tmp_path):
    from orchestra_schema.migrations import default_sql_dir
    sql = tmp_path / "my [sql] dir?#"
    sql.mkdir()
    for f in default_sql_dir().glob("*.sql"):
        (sql / f.name).write_bytes(f.read_bytes())
    assert cli("--sql-dir", sql, "-d", tmp_path / "o.db", "apply").exit_code == 0


def test_click_usage_errors_exit_2():
    assert cli("rollback").exit_code == 2  # --to is required
    assert cli("--timeout", "-1", "status").exit_code == 2


def test_verbose_shows_the_traceback(tmp_path):
    path = tmp_path / "x.db"
    path.write_bytes(b"garbage" * 1000)
    result = run("-v", "-d", path, "status")
    assert result.returncode == 6 and "Traceback" in result.stderr


def test_a_failed_first_apply_leaves_no_empty_file(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_bad.sql").write_text("CREATE TABLE a(x);\nINSERT INTO nosuch VALUES (1);\n")
    path = tmp_path / "new.db"
    assert_error(cli("--sql-dir", sql, "-d", path, "apply"), 4, "nothing changed")
    assert not path.exists()


def test_new_in_an_unwritable_sql_dir_is_one_line_and_creates_nothing(unwritable_dir):
    sql = unwritable_dir({"0001_a.sql": "CREATE TABLE a(x);\n"})
    assert_error(cli("--sql-dir", sql, "new", "more"), 6, "cannot write")
    assert sorted(p.name for p in sql.iterdir()) == ["0001_a.sql"]


def test_huge_timeout_is_a_usage_error_not_a_crash(tmp_path):
    assert cli("--timeout", "1e12", "-d", tmp_path / "o.db", "status").exit_code == 2


def test_new_that_cannot_write_its_rollback_file_leaves_neither(tmp_path):
    from datetime import datetime, timezone
    from orchestra_schema import migrations
    from orchestra_schema.errors import DatabaseUnavailable
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_a.sql").write_text("CREATE TABLE a(x);\n")
    # In the way of the rollback file (open "x" refuses a symlink); not a directory, which
    # loading the sql dir refuses before anything is written (test_odd_files)
    (sql / "20300101000000_more.rollback.sql").symlink_to("nowhere")
    with pytest.raises(DatabaseUnavailable, match="nothing was created"):
        migrations.new_pair(sql, "more", now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert sorted(p.name for p in sql.iterdir()) == ["0001_a.sql", "20300101000000_more.rollback.sql"]


def test_new_refuses_to_edit_the_installed_sql():
    from orchestra_schema.migrations import default_sql_dir, installed_sql_dir
    if not installed_sql_dir():
        pytest.skip("running from a checkout: the default sql dir is the checkout's own")
    before = sorted(p.name for p in default_sql_dir().iterdir())
    assert_error(cli("new", "more"), 2, "--sql-dir")
    assert sorted(p.name for p in default_sql_dir().iterdir()) == before


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-1", "1e12", "ten"])
def test_timeout_must_be_a_finite_number_of_seconds(db, value):
    before = file_state(db)
    result = cli("-d", db, "--timeout", value, "status")
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.stderr and "Traceback" not in result.output
    assert file_state(db) == before


def test_migration_ids_differing_only_in_case_are_one_id(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_a.sql").write_text("CREATE TABLE a(x);\n")
    (sql / "0002_Dup.sql").write_text("-- depends: 0001_a\nCREATE TABLE b(x);\n")
    (sql / "0002_DUP.sql").write_text("-- depends: 0001_a\nCREATE TABLE c(x);\n")
    path = tmp_path / "o.db"
    for command in (["apply"], ["status"], ["apply", "--dry-run"]):
        assert_error(cli("--sql-dir", sql, "-d", path, *command), 2, "0002_Dup.sql", "0002_DUP.sql",
                     "differ only in case")
    assert not path.exists()


@pytest.mark.parametrize("failure", [KeyboardInterrupt, lambda: apsw.ConstraintError("unmapped")])
def test_an_interrupted_first_apply_leaves_no_empty_file(tmp_path, monkeypatch, failure):
    from orchestra_schema.commands import migrate as commands  # apply imports apply_one from engine when it runs
    from orchestra_schema.engines import runner as engine
    from orchestra_schema.context import Context

    def fail(db, m):
        raise failure()
    monkeypatch.setattr(engine, "apply_one", fail)
    path = tmp_path / "new.db"
    with pytest.raises((KeyboardInterrupt, apsw.Error)):
        commands.apply(Context(path))
    assert not path.exists()


def _a_bug(conn):
    raise RuntimeError("a bug in a place nobody expects")


@pytest.mark.parametrize("verbose", [False, True])
def test_an_internal_error_is_one_line_and_exit_70_with_the_traceback_only_under_v(
        db, monkeypatch, verbose):
    import apsw
    before = file_state(db)
    monkeypatch.setattr(apsw, "connection_hooks", [_a_bug])  # every open raises
    result = cli("-d", db, *(["-v"] if verbose else []), "status")
    assert result.exit_code == 70, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("orchestra-schema: error: internal error: RuntimeError: a bug in a place "
                    "nobody expects (rerun with -v for the traceback)")
    assert ("Traceback (most recent call last)" in result.stderr) == verbose
    if not verbose:
        assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == "" and file_state(db) == before


READ_ONLY = [  # each command that writes the database, with its backup going somewhere writable
    ["rollback", "--to", CORE, "--yes", "--no-backup"],
    ["rollback", "--to", "0", "--yes", "--backup-dir", "{vault}"],
    ["apply"],
    ["adopt", "--backup-dir", "{vault}"],
    ["restore", "{backup}", "--yes", "--no-backup"],
    ["history", "forget", CHAT, "--from", "yoyo", "--yes", "--no-backup"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:3]))
def test_a_read_only_file_system_is_exit_6_saying_so_not_fix_the_sql(tmp_path, unwritable_dir,
                                                                       command):
    from helpers import build_ef_database
    path = tmp_path / "orchestra.db"
    if command[0] == "adopt":
        build_ef_database(path)
    else:
        assert cli("-d", path, "apply").exit_code == 0
    backup = tmp_path / "orchestra.backup"
    assert cli("-q", "-d", path, "backup", "--output", backup).exit_code == 0
    if command == ["apply"]:  # something pending to apply
        assert cli("-q", "-d", path, "rollback", "--to", CORE, "--yes", "--no-backup").exit_code == 0
    vault = tmp_path / "vault"
    vault.mkdir()
    ro = unwritable_dir({"orchestra.db": path.read_bytes()}) / "orchestra.db"
    before = file_state(ro)
    args = [a.format(vault=vault, backup=backup) for a in command]
    assert_error(cli("-q", "-d", ro, *args), 6, str(ro), "read-only", "make it writable")
    assert file_state(ro) == before
