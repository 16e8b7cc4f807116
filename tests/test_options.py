"""Global options before or after the command name, and the one backup directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backup_helpers import files_in
from helpers import (CHAT, CORE, build_ef_database, cli, count, file_state, history,
                      mounted_tmpfs, run)
from orchestra_schema.engines.sqlite import backup as backups


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.endswith(".json")}


@pytest.mark.parametrize("args", [
    ["verify", "-q", "--database", "{db}"],
    ["-q", "verify", "--database", "{db}"],
    ["--database", "{db}", "verify", "-q"],
    ["verify", "-d", "{db}", "-q", "--timeout", "60", "--sql-dir", "{sql}", "-v"],
])
def test_global_options_work_before_or_after_the_command(db, args):
    from orchestra_schema.migrations import default_sql_dir
    argv = [a.format(db=db, sql=default_sql_dir()) for a in args]
    result = cli(*argv)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # -q wherever it was given


def test_json_and_timeout_after_the_command(db):
    result = cli("--database", db, "backup", "--timeout", "60", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["integrity"] == "ok"


def test_history_forget_takes_them_after_its_name(db):
    result = cli("history", "forget", CHAT, "--from", "yoyo", "--yes", "--database", db,
                 "--json", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["migration_id"] == CHAT and history(db) == {CORE}


def test_given_in_both_places_the_later_one_wins(db, tmp_path):
    other = tmp_path / "other" / "orchestra.db"
    result = cli("--database", other, "--json", "status", "--database", db)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["database"] == str(db)
    result = cli("--database", db, "status", "--database", other)
    assert result.exit_code == 6 and str(other) in result.stderr  # the later one, missing


def test_verbose_after_the_command_shows_the_traceback(tmp_path):
    plain = run("--database", tmp_path / "x.db", "status", "--sql-dir", tmp_path / "none")
    verbose = run("--database", tmp_path / "x.db", "status", "-v", "--sql-dir", tmp_path / "none")
    assert plain.returncode == verbose.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in verbose.stderr


# ---- one backup directory

@pytest.fixture
def vault(tmp_path) -> Path:
    place = tmp_path / "vault"
    place.mkdir()
    return place


@pytest.mark.parametrize("how", ["before", "after", "env"])
def test_backup_goes_to_the_backup_dir_however_given(db, vault, how):
    argv = {"before": ["--backup-dir", vault, "backup"], "after": ["backup", "--backup-dir", vault],
            "env": ["backup"]}[how]
    env = {"ORCHESTRA_BACKUP_DIR": str(vault)} if how == "env" else None
    result = cli("--database", db, "--json", *argv, env=env)
    assert result.exit_code == 0, result.stderr
    assert Path(json.loads(result.stdout)["path"]).parent == vault
    assert not [n for n in os.listdir(db.parent) if ".backup_" in n]


def test_output_and_dir_still_override_it(db, vault, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    out = json.loads(cli("--database", db, "--backup-dir", vault, "--json", "backup", "--dir",
                         mine).stdout)
    assert Path(out["path"]).parent == mine and names(vault) == set()


def test_keep_prunes_in_the_backup_dir(db, vault):
    for _ in range(3):
        assert cli("--database", db, "--backup-dir", vault, "-q", "backup", "--keep", "2").exit_code == 0
    assert len(backups.backups_of(db, vault)) == 2


def test_rollback_adopt_forget_and_restore_copies_go_there_and_checklist_finds_them(db, vault):
    env = {"ORCHESTRA_BACKUP_DIR": str(vault)}
    beside = set(os.listdir(db.parent))
    assert cli("--database", db, "rollback", "--to", CORE, "--yes", env=env).exit_code == 0
    assert len(backups.backups_of(db, vault)) == 1
    result = cli("--database", db, "--json", "checklist", env=env)
    item = json.loads(result.stdout)["items"][-1]
    assert item["status"] == "pass" and str(vault) in item["detail"], item
    backup = backups.backups_of(db, vault)[0]
    assert cli("--database", db, "-q", "restore", backup, "--yes", env=env).exit_code == 0
    assert count(db, "ChatMessages") == 15
    assert len([n for n in names(vault) if n.startswith("orchestra.db.pre-restore_")]) == 1
    assert cli("--database", db, "-q", "history", "forget", CHAT, "--from", "yoyo", "--yes",
               env=env).exit_code == 0
    assert len(backups.backups_of(db, vault)) == 2  # forget's backup
    assert set(os.listdir(db.parent)) == beside  # nothing new beside the database


def test_adopt_takes_its_backup_in_the_backup_dir(tmp_path, vault):
    db = build_ef_database(tmp_path / "orchestra.db")
    result = cli("--database", db, "--json", "adopt", "--backup-dir", vault)
    assert result.exit_code == 0, result.stderr
    assert Path(json.loads(result.stdout)["backup"]).parent == vault


def test_checklist_names_where_it_looked_when_no_backup_is_there(db, vault):
    assert cli("--database", db, "rollback", "--to", CORE, "--yes", "--no-backup").exit_code == 0
    result = cli("--database", db, "--backup-dir", vault, "--json", "checklist")
    detail = json.loads(result.stdout)["items"][-1]["detail"]
    assert result.exit_code == 1 and f"no backup with a manifest in {vault.resolve()}" in detail


def test_a_missing_backup_dir_stops_rollback_before_any_change(db, tmp_path):
    missing = tmp_path / "nowhere"
    before, listed = file_state(db), files_in(db.parent)
    result = cli("--database", db, "--backup-dir", missing, "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 6 and len(result.stderr.strip().splitlines()) == 1
    assert f"{missing}: no such directory for the backup" in result.stderr
    assert file_state(db) == before and files_in(db.parent) == listed and history(db) == {CORE, CHAT}


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only tmpfs: unwritable even for root, which ignores permission bits."""
    with mounted_tmpfs(tmp_path / "ro", "64k", read_only=True) as mount:
        yield mount


@pytest.mark.parametrize("command", [["backup"], ["rollback", "--to", CORE, "--yes"]])
def test_an_unwritable_backup_dir_is_exit_6_naming_it_and_changes_nothing(db, read_only_mount,
                                                                           command):
    before, listed = file_state(db), files_in(db.parent)
    result = run("--database", db, *command, "--backup-dir", read_only_mount)
    assert result.returncode == 6, result.stderr
    assert f"{read_only_mount}: not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(db.parent) == listed
    assert list(read_only_mount.iterdir()) == [] and history(db) == {CORE, CHAT}


def test_rollback_refusal_says_what_will_happen(db):
    result = run("--database", db, "rollback", "--to", CORE)
    assert result.returncode == 5
    assert "rerun with --yes to accept the loss; a backup is taken first unless --no-backup" \
        in result.stderr


def test_after_the_command_the_same_checks_apply(db, tmp_path):
    result = cli("--database", db, "status", "--timeout", "nan")
    assert result.exit_code == 2 and "not a number of seconds" in result.stderr
    folder = tmp_path / "a-dir"
    folder.mkdir()
    before = cli("--database", folder, "status")
    after = cli("status", "--database", folder)
    assert before.exit_code == after.exit_code != 0 and before.stderr == after.stderr
