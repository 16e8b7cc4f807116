"""A FIFO, directory, socket or device where the tool (or SQLite) opens a file: exit 6 at once.

Opening a FIFO blocks until a writer comes, past any --timeout; SQLite opens
DB-journal, -wal and -shm itself. Each case runs the command as a real process
with a deadline (a hang fails with TimeoutExpired) and checks the error line
names the file, and that nothing in the directory changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from helpers import add_rows, assert_refused, cli, connect, run

KINDS = {"fifo": "a FIFO (named pipe)", "directory": "a directory", "socket": "a socket",
         "device": "a character device"}
DEADLINE = 30  # seconds: --timeout is 1, so only a hang comes near it


def make(path: Path, kind: str) -> Path:
    """Put a non-regular file of `kind` at path; a device is a symlink to /dev/null (no root)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":  # bound where its path is short enough (108 bytes), then moved
        short = Path(tempfile.mkdtemp(dir=path.parent.anchor))
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(short / "s"))  # the socket file stays after the socket is closed
            os.rename(short / "s", path)
        finally:
            short.rmdir()
    else:
        path.symlink_to("/dev/null")
    return path


def state(directory: Path) -> list[tuple]:
    """Every entry under directory: name, type, inode, and a regular file's bytes and mtime.

    Never opens anything but regular files (reading a FIFO would block).
    """
    entries = []
    for p in sorted(directory.rglob("*")):
        st = p.lstat()
        content = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns) \
            if stat.S_ISREG(st.st_mode) else None
        entries.append((str(p.relative_to(directory)), stat.S_IFMT(st.st_mode), st.st_ino, content))
    return entries


def refused(tmp_path: Path, odd: Path, kind: str, *args) -> None:
    """The command exits 6 with one line naming odd and its kind, and changes nothing."""
    before = state(tmp_path)
    result = run("--timeout", "1", *args, timeout=DEADLINE)
    assert_refused(result, 6, str(odd), KINDS[kind])
    assert state(tmp_path) == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One database with rows and a good backup of it, made once; each test copies them."""
    where = tmp_path_factory.mktemp("template")
    build = where / "orchestra.db"
    assert cli("-d", build, "apply").exit_code == 0
    with connect(build) as c:
        add_rows(c)
    result = cli("-d", build, "backup", "-o", where / "orchestra.db.backup_20250101_000000")
    assert result.exit_code == 0, result.stderr
    return where


@pytest.fixture
def db(template, tmp_path) -> Path:
    shutil.copy(template / "orchestra.db", tmp_path)
    return tmp_path / "orchestra.db"


@pytest.fixture
def saved(template, tmp_path) -> Path:
    """A good backup (of a copy of db), in its own directory."""
    (tmp_path / "saved").mkdir()
    for name in ("orchestra.db.backup_20250101_000000", "orchestra.db.backup_20250101_000000.json"):
        shutil.copy(template / name, tmp_path / "saved")
    return tmp_path / "saved" / "orchestra.db.backup_20250101_000000"


SIDECAR_COMMANDS = [["status"], ["verify"], ["backup"], ["recover", "--yes"], ["rehearse"],
                    ["restore", "BACKUP", "--yes"]]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", ["-journal", "-wal", "-shm"])
@pytest.mark.parametrize("command", SIDECAR_COMMANDS, ids=lambda c: c[0])
def test_a_sidecar_that_is_not_a_file(tmp_path, db, saved, command, suffix, kind):
    """-journal beside a rollback-journal database, -wal and -shm beside a WAL one."""
    if suffix != "-journal":
        with connect(db) as c:
            c.execute("PRAGMA journal_mode = WAL").fetchall()  # -wal and -shm go at close
    odd = make(Path(f"{db}{suffix}"), kind)
    command = [str(saved) if c == "BACKUP" else c for c in command]
    refused(tmp_path, odd, kind, "-d", db, *command)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", [["restore", "BACKUP", "--yes"], ["recover", "--from", "BACKUP", "--yes"],
                                     ["backup", "--keep", "1", "--dir", "SAVED"]],
                         ids=lambda c: " ".join(c[:2]))
def test_a_manifest_that_is_not_a_file(tmp_path, db, saved, command, kind):
    """restore and recover read the backup's manifest; backup --keep reads every older one's
    (and refuses before it copies anything)."""
    manifest = Path(f"{saved}.json")
    manifest.unlink()
    make(manifest, kind)
    command = [{"BACKUP": str(saved), "SAVED": str(saved.parent)}.get(c, c) for c in command]
    refused(tmp_path, manifest, kind, "-d", db, *command)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", [["restore", "ODD", "--yes"], ["recover", "--from", "ODD", "--yes"]],
                         ids=lambda c: c[0])
def test_a_backup_that_is_not_a_file(tmp_path, db, command, kind):
    odd = make(tmp_path / "orchestra.db.backup_20250101_000000", kind)
    refused(tmp_path, odd, kind, "-d", db, *[str(odd) if c == "ODD" else c for c in command])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["20990101000000_Later.sql", "20250922204129_AddChatTables.rollback.sql"],
                         ids=["forward", "rollback"])
@pytest.mark.parametrize("command", [["status"], ["apply"]], ids=lambda c: c[0])
def test_a_migration_file_that_is_not_a_file(tmp_path, db, command, name, kind):
    """Skipped as "not a file", a forward file would be a migration quietly left out."""
    sql = tmp_path / "sql"
    shutil.copytree(Path(__file__).parent.parent / "sql" / "sqlite", sql)
    (sql / name).unlink(missing_ok=True)
    odd = make(sql / name, kind)
    refused(tmp_path, odd, kind, "-d", db, "--sql-dir", sql, *command)
