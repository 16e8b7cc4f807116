"""-q means quiet: the README's cron and Makefile lines, run verbatim as real processes, print
nothing when all is well, and every command under -q prints nothing on success."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CHAT, CORE, build_ef_database, cli, connect, unavailable

README = Path(__file__).resolve().parent.parent / "README.md"
README_DB = "/var/lib/orchestra/orchestra.db"
README_BACKUPS = "/var/backups/orchestra"


def _block(language: str) -> str:
    """The ```LANGUAGE block of the README's section "In a Makefile and in cron"."""
    section = README.read_text().split("\n## In a Makefile and in cron\n")[1].split("\n## ")[0]
    found = re.findall(rf"^```{language}\n(.*?)^```", section, re.M | re.S)
    assert len(found) == 1, f"that section has {len(found)} ```{language} blocks"
    return found[0]


def _cron() -> tuple[dict, list[str]]:
    """The cron block's variables and commands (each line without its five time fields)."""
    variables, commands = {}, []
    for line in _block("cron").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            name, value = line.split("=", 1)
            variables[name] = value
        else:
            commands.append(line.split(None, 5)[5])
    return variables, commands


def _environment(backups: Path) -> dict:
    """The tool as installed on PATH, as cron finds it; no database from the test's own env."""
    tool = shutil.which("orchestra-schema", path=str(Path(sys.executable).parent))
    assert tool, "orchestra-schema is not installed beside this python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORCHESTRA_DB", "EFCORE_CONNECTION", "HANGFIRE_CONNECTION")}
    env["PATH"] = f"{Path(tool).parent}{os.pathsep}{env['PATH']}"
    env["ORCHESTRA_BACKUP_DIR"] = str(backups)
    return env


def _run_cron(db: Path, backups: Path) -> list[subprocess.CompletedProcess]:
    variables, commands = _cron()
    assert variables == {"ORCHESTRA_BACKUP_DIR": README_BACKUPS}
    assert len(commands) == 2 and all(README_DB in c for c in commands)
    env = _environment(backups)
    return [subprocess.run(["sh", "-c", c.replace(README_DB, str(db))], env=env, text=True,
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
            for c in commands]


def test_the_readme_cron_lines_print_nothing_when_all_is_well(ef_db, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    for _ in range(2):  # the second night too: --keep has a backup to keep
        for done in _run_cron(ef_db, backups):
            assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done.args
    assert len([n for n in os.listdir(backups) if not n.endswith(".json")]) == 2


def test_the_readme_cron_verify_mails_the_report_and_one_error_line_on_a_problem(ef_db, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    with connect(ef_db) as c:
        c.execute('DROP INDEX "IX_ChatMessages_SessionId"')
    backup, verify = _run_cron(ef_db, backups)
    assert (backup.returncode, backup.stdout, backup.stderr) == (0, "", "")
    assert verify.returncode == 1
    assert "IX_ChatMessages_SessionId" in verify.stdout  # the report: what cron mails
    assert verify.stderr.startswith("orchestra-schema: error: ")
    assert len(verify.stderr.splitlines()) == 1


def _make(target: str, db: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        unavailable("no make to run the README's Makefile")  # a failure under CI=true
    makefile = tmp_path / "Makefile"
    makefile.write_text(_block("make"))
    backups = tmp_path / "backups"
    backups.mkdir(exist_ok=True)
    return subprocess.run(["make", "-s", "-f", str(makefile), target, f"DB={db}"],
                          env=_environment(backups), text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_the_readme_makefile_targets_run_as_written(tmp_path):
    db = tmp_path / "orchestra.db"
    schema = _make("schema", db, tmp_path)  # the only quiet target: creates the database
    assert (schema.returncode, schema.stdout, schema.stderr) == (0, "", "")
    assert _make("schema", db, tmp_path).stdout == ""  # again: nothing to apply, nothing said
    check = _make("schema-check", db, tmp_path)
    assert check.returncode == 0 and "verify passed" in check.stderr
    rollback = _make("chat-rollback", db, tmp_path)
    assert rollback.returncode == 0, rollback.stderr
    assert f"rolled back {CHAT}" in rollback.stderr and "[fail]" not in rollback.stdout


def test_the_readme_makefile_schema_target_fails_the_build_with_one_line(tmp_path):
    db = tmp_path / "orchestra.db"
    db.write_bytes(b"not a database" * 512)
    schema = _make("schema", db, tmp_path)
    assert schema.returncode != 0 and schema.stdout == ""
    ours = [line for line in schema.stderr.splitlines() if line.startswith("orchestra-schema")]
    assert len(ours) == 1 and ours[0].startswith("orchestra-schema: error: ")
    assert "Error 6" in schema.stderr  # make names the tool's exit code


# ---- every command under -q: nothing on success; data asked for is still printed

def _quiet_ok(*args, env=None):
    result = cli("-q", *args, env=env)
    shown = [a for a in map(str, args) if "://" not in a]  # no test password in a failure
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), shown
    return result


def test_every_change_and_check_is_silent_under_quiet(db, tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    env = {"ORCHESTRA_BACKUP_DIR": str(vault)}
    _quiet_ok("-d", db, "verify", env=env)
    _quiet_ok("-d", db, "verify", "--full", env=env)
    _quiet_ok("-d", db, "rehearse", env=env)
    _quiet_ok("-d", db, "backup", "--keep", "3", env=env)
    _quiet_ok("-d", db, "rollback", "--to", CORE, "--yes", env=env)
    _quiet_ok("-d", db, "checklist", env=env)
    _quiet_ok("-d", db, "apply", env=env)
    backup = next(p for p in vault.iterdir() if ".backup_" in p.name and p.suffix != ".json")
    _quiet_ok("-d", db, "restore", backup, "--yes", env=env)
    _quiet_ok("-d", db, "history", "forget", CHAT, "--from", "yoyo", "--yes", env=env)
    _quiet_ok("-d", db, "recover", "--yes", "--from", backup, env=env)
    _quiet_ok("-d", db, "schema", "--check", _schema_file(tmp_path))
    _quiet_ok("lint", "--dialect", "sqlite")
    ef = build_ef_database(tmp_path / "ef.db")
    _quiet_ok("-d", ef, "adopt", env=env)


def _schema_file(tmp_path) -> Path:
    path = tmp_path / "schema.sql"
    path.write_text(cli("schema").stdout)
    return path


def test_under_quiet_what_was_asked_for_is_still_printed(db, tmp_path):
    assert CORE in cli("-q", "-d", db, "status").stdout
    assert "CREATE TABLE" in cli("-q", "schema").stdout
    assert "DROP TABLE" in cli("-q", "-d", db, "rollback", "--to", CORE, "--dry-run").stdout
    made = cli("-q", "--sql-dir", _sql_copy(tmp_path), "new", "add_notes")
    assert made.exit_code == 0 and made.stderr == ""  # the TODO-header reminders: not under -q
    assert [Path(p).name for p in made.stdout.split()][1].endswith("_add_notes.rollback.sql")
    report = cli("-q", "--json", "-d", db, "verify")
    assert report.exit_code == 0 and '"ok": true' in report.stdout and report.stderr == ""


def _sql_copy(tmp_path) -> Path:
    from orchestra_schema import migrations
    copy = tmp_path / "sql"
    shutil.copytree(migrations.default_sql_dir("sqlite"), copy)
    return copy


def test_quiet_failures_print_their_report_and_one_error_line(db, tmp_path):
    with connect(db) as c:
        c.execute('DROP INDEX "IX_ChatMessages_SessionId"')
    result = cli("-q", "-d", db, "verify")
    assert result.exit_code == 1 and "IX_ChatMessages_SessionId" in result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("orchestra-schema: error:")
    missing = cli("-q", "-d", tmp_path / "absent.db", "verify")
    assert missing.exit_code == 6 and missing.stdout == "" and missing.stderr.count("\n") == 1


def test_every_command_is_silent_under_quiet_on_postgresql(pgdb, pg_cluster, tmp_path,
                                                             monkeypatch):
    from test_copy_to import orchestra_db
    monkeypatch.chdir(tmp_path)  # backups land here
    for command in (["apply"], ["verify"], ["verify", "--full"], ["rehearse"], ["backup"],
                    ["rollback", "--to", "0", "--yes"], ["checklist"], ["apply"]):
        _quiet_ok("-d", pgdb.url, *command)
    target = pg_cluster.new_database("q")
    try:
        _quiet_ok("-d", orchestra_db(tmp_path / "orchestra.db"), "copy-to", target.url)
    finally:
        pg_cluster.drop_database(target)
