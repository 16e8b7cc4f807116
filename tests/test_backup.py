"""backup: online copies under concurrent writers, names, manifests, retention, faults."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import signal
import stat
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import blake3
import pytest

from backup_helpers import (LOCK_HOLDER, WRITER, add_padding, add_pairs, backup_json, files_in,
                            overwrite_pages, pairs_state, quiet, root_page, spawn, wait_for)
from helpers import (CHAT, CHAT_TABLES, CORE, CORE_TABLES, cli, connect, count, file_state, history, run,
                      tables, unavailable)
from orchestra_schema.engines.sqlite import backup as backups
from orchestra_schema.engines.sqlite import rawcopy, files as sqlitefile
from orchestra_schema.files import staging
from orchestra_schema.context import Context

NAME = re.compile(r"orchestra\.db\.backup_\d{8}_\d{6}(_\d+)?")


def test_backup_beside_the_database_with_manifest_and_mode_0600(db):
    out = backup_json(db)
    path = Path(out["path"])
    assert path.parent == db.parent and NAME.fullmatch(path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(out["manifest"]).stat().st_mode) == 0o600
    manifest = json.loads(Path(f"{path}.json").read_text())
    assert manifest["source"] == str(db.resolve())
    assert manifest["digest"] == {"algorithm": "blake3",
                                  "value": blake3.blake3(path.read_bytes()).hexdigest()}
    assert manifest["digest"] == out["digest"] and manifest["manifest_version"] == 2
    assert manifest["size"] == path.stat().st_size
    assert manifest["applied_migrations"] == [CORE, CHAT] == out["applied_migrations"]
    assert (manifest["integrity"], manifest["integrity_check"]) == ("ok", "quick_check")
    assert manifest["page_count"] * 4096 == manifest["size"]
    datetime.fromisoformat(manifest["created_at"])  # ISO 8601
    assert manifest["created_at"].endswith("+00:00")
    for table in CORE_TABLES | CHAT_TABLES | {"HangFire.Job"}:
        assert count(path, table) == count(db, table)
    assert history(path) == {CORE, CHAT}


def test_backup_json_keys(db):
    assert set(backup_json(db)) == {
        "database", "path", "manifest", "created_at", "size", "digest", "page_count", "integrity",
        "integrity_check", "applied_migrations", "journal_mode", "copy_mode", "restarts",
        "deleted", "cleaned", "warnings", "original_wal", "wal_ignored"}


def test_full_check_is_recorded_in_the_manifest(db):
    out = backup_json(db, "--full-check")
    assert json.loads(Path(out["manifest"]).read_text())["integrity_check"] == "integrity_check"


def clock_at(*when):
    """A datetime whose now() is always `when` (UTC): the backup module's clock in tests."""
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(*when, tzinfo=timezone.utc)
    return Frozen


def test_backups_in_the_same_second_get_distinct_names(db, monkeypatch):
    monkeypatch.setattr(backups, "datetime", clock_at(2025, 9, 23, 0, 42, 43))
    paths = [backups.backup(Context(db)).path.name for _ in range(3)]
    base = "orchestra.db.backup_20250923_004243"
    assert paths == [base, f"{base}_2", f"{base}_3"]
    assert [p.name for p in backups.backups_of(db)] == paths


def test_output_and_dir(db, tmp_path):
    out = backup_json(db, "--output", tmp_path / "mine.db")
    assert out["path"] == str(tmp_path / "mine.db") and Path(out["manifest"]).exists()
    (tmp_path / "elsewhere").mkdir()
    out = backup_json(db, "--dir", tmp_path / "elsewhere")
    assert Path(out["path"]).parent == tmp_path / "elsewhere"
    before = file_state(tmp_path / "mine.db")
    result = cli("--database", db, "backup", "--output", tmp_path / "mine.db")
    assert result.exit_code == 5 and "already exists" in result.stderr
    assert file_state(tmp_path / "mine.db") == before


def test_writer_keeps_committing_while_a_wal_backup_runs(tmp_path, monkeypatch):
    """WAL: the writer never waits (busy timeout 0, no busy error) while the raw copy runs,
    and the copy holds whole pairs.

    The raw copy needs one instant with no commit: between the two checkpoints around its
    snapshot (rawcopy._begin_wal). A writer committing back to back can fill that gap on
    each of rawcopy.ATTEMPTS tries, and the backup then rightly goes through the backup
    API ("snapshot"; this test once saw it on a loaded machine). So the writer holds off
    for that instant only, and commits all through the copy that follows.
    """
    db = tmp_path / "orchestra.db"
    add_pairs(db, 20_000, wal=True)
    stop = tmp_path / "stop"
    real_begin = rawcopy._begin_wal

    def begin_at_a_quiet_instant(control, readers):
        with quiet(stop):
            return real_begin(control, readers)

    monkeypatch.setattr(rawcopy, "_begin_wal", begin_at_a_quiet_instant)
    writer = spawn(WRITER, db, stop, 0, 0)
    try:
        outs = []
        for _ in range(3):
            before = live_rows(db)
            outs.append((before, backup_json(db), live_rows(db)))
    finally:
        stop.touch()
        commits, busy = map(int, writer.communicate(timeout=30)[0].split())
    assert busy == 0 and commits > 0
    for before, out, after in outs:
        assert out["integrity"] == "ok" and out["copy_mode"] == "raw", out["copy_mode"]
        rows, first, second = pairs_state(Path(out["path"]))
        assert rows % 2 == 0 and first == second
        assert before <= rows <= after and before < after  # taken while the writer wrote


def live_rows(db) -> int:
    with connect(db) as c:
        c.setbusytimeout(10_000)
        return c.execute("SELECT count(*) FROM pairs").fetchone()[0]


def test_rollback_journal_backup_under_a_writer_holds_whole_pairs(tmp_path):
    db = tmp_path / "orchestra.db"
    add_pairs(db, 20_000, wal=False)
    stop = tmp_path / "stop"
    writer = spawn(WRITER, db, stop, 10_000, 1)  # an app commits often, not back to back
    try:
        before = live_rows(db)
        result = run("--database", db, "--json", "backup")
        after = live_rows(db)
    finally:
        stop.touch()
        commits, busy = map(int, writer.communicate(timeout=30)[0].split())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["integrity"] == "ok" and out["copy_mode"] == "raw"
    rows, first, second = pairs_state(Path(out["path"]))
    assert rows % 2 == 0 and first == second
    assert before <= rows <= after and before < after
    assert busy == 0 and commits > 0


def test_keep_deletes_only_this_databases_older_backups(db, tmp_path, monkeypatch):
    old = []
    for second in range(3):
        monkeypatch.setattr(backups, "datetime", clock_at(2020, 1, 1, 0, 0, second))
        old.append(backups.backup(Context(db)).path)
    monkeypatch.undo()
    not_sqlite = tmp_path / "orchestra.db.backup_20190101_000000"
    not_sqlite.write_text("notes, not a backup")
    other_db = tmp_path / "other.db.backup_20190101_000000"
    other_db.write_bytes(old[0].read_bytes())
    elsewhere = tmp_path / "orchestra.db.backup_20190101_000001"  # another orchestra.db's backup
    elsewhere.write_bytes(old[0].read_bytes())
    Path(f"{elsewhere}.json").write_text(json.dumps({"source": "/srv/other/orchestra.db"}))
    by_hand = tmp_path / "orchestra.db.backup_20190101_000002"  # the procedure's own `cp`
    by_hand.write_bytes(db.read_bytes())
    keep_me = {p: file_state(p) for p in (not_sqlite, other_db, elsewhere, by_hand)}

    out = backup_json(db, "--keep", "2")
    assert out["deleted"] == [str(old[0]), str(old[1])]
    assert not old[0].exists() and not Path(f"{old[0]}.json").exists()
    assert backups.backups_of(db) == [by_hand, old[2], Path(out["path"])]
    assert {p: file_state(p) for p in keep_me} == keep_me


def test_keep_must_be_positive(db):
    assert cli("--database", db, "backup", "--keep", "0").exit_code == 2


def test_backups_of_orders_by_time_then_number(tmp_path):
    db = tmp_path / "orchestra.db"
    names = ["orchestra.db.backup_20250101_000000_10", "orchestra.db.backup_20250101_000000_9",
             "orchestra.db.backup_20250101_000000", "orchestra.db.backup_20241231_235959"]
    for name in names:
        (tmp_path / name).write_bytes(sqlitefile.SQLITE_HEADER + bytes(84))
    assert [p.name for p in backups.backups_of(db)] == [names[3], names[2], names[1], names[0]]


def test_kill_during_backup_leaves_no_file_under_a_final_name(tmp_path):
    db = tmp_path / "orchestra.db"
    add_pairs(db, 10, wal=False)
    add_padding(db, 40)
    before, size = file_state(db), db.stat().st_size

    def partial_copies() -> list[int]:
        """Sizes of temporary copies begun but not whole: the copy is under way."""
        sizes = []
        for name in files_in(tmp_path):
            if staging.TEMP_MARK in name and not name.endswith(sqlitefile.SIDECARS):
                with contextlib.suppress(FileNotFoundError):
                    sizes.append((tmp_path / name).stat().st_size)
        return [s for s in sizes if 0 < s < size]

    proc = subprocess.Popen([sys.executable, "-m", "orchestra_schema", "--database", str(db), "backup"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: partial_copies() or proc.poll() is not None, interval=0.0002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and partial_copies(), "the kill did not land mid-copy"
    assert file_state(db) == before
    assert not any(NAME.fullmatch(name) for name in files_in(tmp_path))  # nothing a DBA would trust
    out = backup_json(db)
    assert not any(staging.TEMP_MARK in n for n in files_in(tmp_path))
    assert out["cleaned"] and all(staging.TEMP_MARK in Path(p).name for p in out["cleaned"])


def test_busy_past_timeout_exits_3_and_leaves_nothing(db):
    holder = spawn(LOCK_HOLDER, db, "EXCLUSIVE")  # not even readers get in
    try:
        before, names = file_state(db), files_in(db.parent)
        result = cli("--database", db, "--timeout", "0.3", "backup")
        assert result.exit_code == 3 and "--timeout" in result.stderr
        assert file_state(db) == before and files_in(db.parent) == names
    finally:
        holder.communicate("done\n", timeout=30)


def test_missing_database_is_named_as_such(tmp_path):
    result = cli("--database", tmp_path / "nowhere" / "orchestra.db", "backup")
    assert result.exit_code == 6 and "database not found" in result.stderr


def test_backup_of_a_damaged_database_is_refused_and_leaves_nothing(db):
    overwrite_pages(db, [root_page(db, "HangFire.Job")])
    before, names = file_state(db), files_in(db.parent)
    result = cli("--database", db, "backup")
    assert result.exit_code == 6 and "recover" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(db.parent) == names


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # writes past 64 KiB fail


def test_full_disk_leaves_the_source_untouched_and_no_partial_file(db):
    before, names = file_state(db), files_in(db.parent)
    result = subprocess.run([sys.executable, "-m", "orchestra_schema", "--database", str(db), "backup"],
                            capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=60)
    assert result.returncode == 6, result.stderr
    assert "no partial file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(db.parent) == names


@pytest.mark.parametrize("make", [
    lambda d: d / "missing",
    lambda d: (d / "a-file").write_text("x") and d / "a-file",
])
def test_bad_backup_directory_is_exit_6_naming_it(db, tmp_path, make):
    target = make(tmp_path)
    before, names = file_state(db), files_in(tmp_path)
    result = cli("--database", db, "backup", "--dir", target)
    assert result.exit_code == 6 and len(result.stderr.strip().splitlines()) == 1
    assert f"{target}: no such directory for the backup; nothing changed" in result.stderr
    assert file_state(db) == before and files_in(tmp_path) == names


def test_unwritable_directory_is_refused(db, unwritable_dir):
    target = unwritable_dir()
    before = file_state(db)
    result = cli("--database", db, "backup", "--dir", target)
    assert result.exit_code == 6 and "not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(target.iterdir()) == [] and file_state(db) == before


def test_quiet_backup_prints_nothing_and_draws_no_progress_off_a_terminal(db):
    result = cli("--database", db, "-q", "backup")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    result = cli("--database", db, "backup")
    assert "\r" not in result.stderr and result.stderr.startswith("backup: ")


def test_check_backup_finds_truncation_bad_header_and_checksum_mismatch(db, tmp_path):
    path = backups.backup(Context(db)).path
    assert backups.check_backup(path).ok
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    assert "blake3 digest differs" in " ".join(backups.check_backup(path).problems)
    path.write_bytes(data[: len(data) // 2])
    assert not backups.check_backup(path).ok
    Path(f"{path}.json").unlink()
    check = backups.check_backup(path)
    assert not check.has_manifest and "truncated" in " ".join(check.problems)
    path.write_bytes(b"not a database at all" * 100)
    assert backups.check_backup(path).problems == ["not an SQLite database (bad header)"]


def test_rollback_backs_up_first_and_reports_it(db):
    result = cli("--database", db, "--json", "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    backup_path = Path(out["backup"])
    assert f"backup: {backup_path}" in result.stderr
    assert CHAT_TABLES <= tables(backup_path) and count(backup_path, "ChatMessages") == 15
    assert not CHAT_TABLES & tables(db)


def test_rollback_without_backup_or_without_change_makes_none(db):
    names = files_in(db.parent)
    refused = cli("--database", db, "rollback", "--to", CORE)  # rows to lose, no --yes
    assert refused.exit_code == 5 and files_in(db.parent) == names
    assert cli("--database", db, "rollback", "--to", CORE, "--dry-run").exit_code == 0
    assert files_in(db.parent) == names
    out = json.loads(cli("--database", db, "--json", "rollback", "--to", CORE, "--yes",
                         "--no-backup").stdout)
    assert out["backup"] is None and files_in(db.parent) == names
    out = json.loads(cli("--database", db, "--json", "rollback", "--to", CORE, "--yes").stdout)
    assert out["backup"] is None and out["rolled_back"] == [] and files_in(db.parent) == names


def test_rollback_is_not_run_when_its_backup_fails(db):
    overwrite_pages(db, [root_page(db, "HangFire.Job")])  # the rollback never reads it; the backup does
    before = file_state(db)
    result = cli("--database", db, "rollback", "--to", CORE, "--yes")
    assert result.exit_code == 6 and file_state(db) == before


def _stderr_on_a_terminal(*args) -> str:
    """Run orchestra-schema with stderr on a pseudo-terminal; return what it drew there."""
    import pty
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orchestra_schema", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    proc.wait()
    os.close(master)
    return drawn.decode()


def test_progress_bar_on_a_terminal_for_a_large_database_and_not_under_q(tmp_path):
    db = tmp_path / "orchestra.db"
    add_padding(db, 40)
    drawn = _stderr_on_a_terminal("--database", db, "backup")
    assert "backing up [" in drawn and "100%" in drawn and "backup: " in drawn
    assert _stderr_on_a_terminal("--database", db, "-q", "backup") == ""


def as_version_1(backup: Path) -> None:
    """Rewrite a backup's manifest as the first version wrote it: a top-level "sha256"."""
    manifest_file = Path(f"{backup}.json")
    manifest = json.loads(manifest_file.read_text())
    del manifest["digest"]
    manifest.update(manifest_version=1, sha256=hashlib.sha256(backup.read_bytes()).hexdigest())
    manifest_file.write_text(json.dumps(manifest))


def test_a_sha256_manifest_still_verifies_and_catches_a_changed_byte(db):
    path = backups.backup(Context(db)).path
    as_version_1(path)
    assert backups.check_backup(path).ok
    assert cli("--database", db, "restore", path).exit_code == 0
    overwrite_pages(path, [root_page(path, "ChatMessages")])
    problems = backups.check_backup(path).problems
    assert problems[0] == "sha256 digest differs from its manifest (changed or damaged since the backup)"


def test_an_unknown_digest_algorithm_is_a_problem_not_a_crash(db):
    path = backups.backup(Context(db)).path
    manifest_file = Path(f"{path}.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["digest"]["algorithm"] = "md5"
    manifest_file.write_text(json.dumps(manifest))
    assert "unknown digest algorithm 'md5'" in backups.check_backup(path).problems[0]


def test_the_readmes_b3sum_check_passes_and_fails_on_a_changed_byte(db):
    """The by-hand check the README gives, run as written (in the backup's directory)."""
    if not shutil.which("b3sum"):
        unavailable("b3sum not installed (apt-get install b3sum)")
    path = backups.backup(Context(db)).path
    check = (f"printf '%s  %s\\n' \"$(python3 -c 'import json,sys; "
             f"print(json.load(open(sys.argv[1]))[\"digest\"][\"value\"])' {path.name}.json)\" "
             f"{path.name} | b3sum --check")
    assert check in (Path(__file__).parent.parent / "README.md").read_text().replace(
        "orchestra.db.backup_20261128_120000", path.name)
    ok = subprocess.run(["sh", "-c", check], cwd=path.parent, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{path.name}: OK"
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"\x01")
    bad = subprocess.run(["sh", "-c", check], cwd=path.parent, capture_output=True, text=True)
    assert bad.returncode == 1 and "FAILED" in bad.stdout
