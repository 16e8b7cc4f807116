"""--database is what it claims to be: the real file behind a symlink, never a FIFO or a device,
and never a file that holds no database passed off as checked or backed up."""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_refused, cli, connect, count, device, file_state, run

@pytest.fixture
def linked(db, tmp_path):
    """The deployment layout conf/orchestra.db -> ../data/orchestra.db, in WAL mode."""
    data, conf = tmp_path / "data", tmp_path / "conf"
    data.mkdir()
    conf.mkdir()
    real = data / "orchestra.db"
    shutil.move(db, real)
    with connect(real) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()
    (conf / "orchestra.db").symlink_to("../data/orchestra.db")
    return conf / "orchestra.db", real


def take_backup(database, tmp_path):
    out = tmp_path / "saved.db"
    assert cli("-d", database, "backup", "-o", out).exit_code == 0
    return out


def add_message(path, mid):
    with connect(path) as c:
        c.execute("INSERT INTO ChatMessages VALUES (?, 's0', 'user', 'late', 0, '2025-01-01', NULL)",
                  (mid,))


def assert_one_database(link, real, messages):
    """The symlink is still a symlink to the real file, which holds the expected rows."""
    assert link.is_symlink() and os.readlink(link) == "../data/orchestra.db"
    assert [p.name for p in link.parent.iterdir()] == [link.name]  # nothing else beside the link
    assert count(link, "ChatMessages") == count(real, "ChatMessages") == messages


def safety_copies(directory, kind):
    found = [p for p in directory.iterdir() if f".{kind}_" in p.name and not p.name.endswith(
        ("-wal", "-shm", "-journal", ".json"))]
    for p in found:
        assert not p.is_symlink() and stat.S_ISREG(p.lstat().st_mode)
    return found


def test_restore_through_a_symlink_writes_the_real_file(linked, tmp_path):
    link, real = linked
    saved = take_backup(link, tmp_path)
    add_message(real, "after-backup")
    result = run("-d", link, "--json", "restore", saved, "--yes")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == str(real)
    assert_one_database(link, real, 15)
    assert len(safety_copies(real.parent, "pre-restore")) == 1


def test_restore_of_a_damaged_file_through_a_symlink_replaces_the_real_file(linked, tmp_path):
    link, real = linked
    saved = take_backup(link, tmp_path)
    with connect(real) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    damaged = b"\x00" * 100 + real.read_bytes()[100:]
    real.write_bytes(damaged)  # SQLite cannot open it: restore must replace the file
    result = run("-d", link, "--json", "restore", saved)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["method"] == "replaced" and report["database"] == str(real)
    assert_one_database(link, real, 15)
    [aside] = safety_copies(real.parent, "corrupted")
    assert aside.read_bytes() == damaged


def crash_leaving_a_wal_frame(path, mid):
    """An app that committed into the WAL and died before any checkpoint."""
    code = ("import apsw, os, sys; c = apsw.Connection(sys.argv[1]); "
            "c.execute('PRAGMA wal_autocheckpoint = 0'); "
            "c.execute(\"INSERT INTO ChatMessages VALUES (?, 's0', 'user', 'x', 0, '2025', NULL)\", "
            "(sys.argv[2],)); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path), mid], check=True)
    assert Path(f"{path}-wal").stat().st_size > 0


def test_recover_from_a_backup_through_a_symlink_keeps_the_link(linked, tmp_path):
    link, real = linked
    saved = take_backup(link, tmp_path)
    add_message(real, "after-backup")
    crash_leaving_a_wal_frame(real, "in-the-wal")
    before, wal = real.read_bytes(), Path(f"{real}-wal").read_bytes()
    result = run("-d", link, "--json", "recover", "--from", saved, "--yes")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"] == str(real)
    assert_one_database(link, real, 15)
    [aside] = safety_copies(real.parent, "pre-recover")
    assert aside.read_bytes() == before and Path(f"{aside}-wal").read_bytes() == wal
    assert count(aside, "ChatMessages") == 17  # the old file with its own WAL, whole


def test_status_names_the_real_file(linked):
    link, real = linked
    result = run("-d", link, "--json", "status")
    assert result.returncode == 0
    assert json.loads(result.stdout)["database"] == str(real)


def test_apply_through_a_dangling_symlink_creates_the_real_file(tmp_path):
    (tmp_path / "data").mkdir()
    link = tmp_path / "orchestra.db"
    link.symlink_to("data/orchestra.db")
    assert cli("-d", link, "apply").exit_code == 0
    assert link.is_symlink() and (tmp_path / "data" / "orchestra.db").is_file()


COMMANDS = [["status"], ["verify"], ["checklist"], ["backup"], ["recover", "--yes"],
            ["apply"], ["rollback", "--to", "0", "--yes"], ["rehearse"]]


@pytest.mark.parametrize("command", COMMANDS + [["restore", "BACKUP"], ["recover", "--from", "BACKUP"]])
def test_a_fifo_is_refused_at_once(tmp_path, db, command):
    fifo = tmp_path / "orchestra.fifo"
    os.mkfifo(fifo)
    saved = take_backup(db, tmp_path)
    command = [str(saved) if c == "BACKUP" else c for c in command]
    # A hang fails the test: subprocess.run raises TimeoutExpired.
    assert_refused(run("-d", fifo, "--timeout", "1", *command, timeout=30), 6, str(fifo), "FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["orchestra.db", "orchestra.fifo", "saved.db", "saved.db.json"])


@pytest.mark.parametrize("command", COMMANDS)
def test_a_device_like_dev_null_is_refused_and_untouched(tmp_path, command):
    null = device(tmp_path, "null", 3)
    before = os.stat(null)
    assert_refused(run("-d", null, *command), 6, str(null), "character device")
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert list(tmp_path.iterdir()) == [null]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_directory_is_refused(tmp_path, command):
    where = tmp_path / "orchestra.db"
    where.mkdir()
    assert_refused(run("-d", where, *command), 6, "is a directory")
    assert list(tmp_path.iterdir()) == [where] and list(where.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_socket_is_refused(tmp_path, command):
    path = tmp_path / "s.db"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert_refused(run("-d", path, *command), 6, "socket")
        assert stat.S_ISSOCK(path.lstat().st_mode)


# ---- no false all-clear: a file without a database is not checked "ok" nor backed up

@pytest.mark.parametrize("command", [["verify"], ["checklist"], ["backup"]])
def test_an_empty_file_is_not_verified_or_backed_up(tmp_path, command):
    path = tmp_path / "orchestra.db"
    path.touch()
    assert_refused(run("-d", path, *command), 6, str(path), "empty file (0 bytes)")
    assert list(tmp_path.iterdir()) == [path] and path.stat().st_size == 0


@pytest.mark.parametrize("command", [["verify"], ["checklist"], ["backup", "--dir", "OUT"]])
def test_a_file_that_is_not_sqlite_is_not_verified_or_backed_up(tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    command = [str(out) if c == "OUT" else c for c in command]
    assert_refused(run("-d", "/proc/self/status", *command), 6, "not an SQLite database")
    assert_refused(run("-d", device(tmp_path, "zero", 5), *command), 6, "character device")
    assert list(out.iterdir()) == []


def test_a_zeroed_header_is_not_verified_or_backed_up(db):
    data = bytearray(db.read_bytes())
    data[:16] = bytes(16)
    db.write_bytes(bytes(data))
    before = file_state(db)
    for command in (["verify"], ["checklist"], ["backup"]):
        assert_refused(run("-d", db, *command), 6, "not an SQLite database")
    assert file_state(db) == before and len(list(db.parent.iterdir())) == 1


def test_status_of_an_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "orchestra.db"
    path.touch()
    result = run("-d", path, "--json", "status")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [m["applied"] for m in report["migrations"]] == [False, False]
    assert any("0 bytes" in n for n in report["notes"])
    text = run("-d", path, "status")
    assert "note: empty file (0 bytes)" in text.stdout and path.stat().st_size == 0


def test_restore_over_an_empty_file_keeps_no_empty_backup(db, tmp_path):
    saved = take_backup(db, tmp_path)
    db.write_bytes(b"")  # a bad copy or a full disk cut it to nothing
    result = run("-d", db, "--json", "restore", saved)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["live_integrity"] == "empty" and report["backup"] is None
    assert "empty file (0 bytes)" in result.stderr and "damaged" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orchestra.db", "saved.db", "saved.db.json"]
    assert count(db, "ChatMessages") == 15


def test_help_shows_even_when_the_database_is_refused(tmp_path):
    # The context (and its check of --database) is built when a command runs, after --help.
    for args in (["status", "--help"], ["new", "--help"], ["--help"]):
        result = cli("-d", tmp_path, *args)
        assert result.exit_code == 0 and "Usage:" in result.stdout, result.output
    assert cli("-d", tmp_path, "status").exit_code == 6


@pytest.mark.parametrize("name", ["a b.db", "x%41y.db", "q?x.db", "h#1.db", "ünï.db", "p%25.db"])
def test_backup_of_a_file_whose_name_a_uri_would_misread(tmp_path, name):
    """The copy is checked through a file: URI (immutable): %, ? and # in its name must not
    make the check open another file, or none."""
    database = tmp_path / name
    assert run("-d", database, "apply").returncode == 0
    out = tmp_path / "backups"
    out.mkdir()
    (out / "xAy.db").write_bytes(b"not a database" * 512)  # x%41y.db with %41 decoded
    result = run("--json", "-d", database, "backup", "--output", out / name)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["integrity"] == "ok" and report["applied_migrations"], report
