"""What an SQLite database file says about itself, read without SQLite: header, size, locks.

Reading the header needs no connection (a damaged or empty file cannot be
opened), and probing the lock bytes must not take a lock.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
from pathlib import Path

from ...errors import Busy
from ...files.paths import SIDECARS, SQLITE_HEADER  # noqa: F401 (read here too)
_PENDING_BYTE = 0x40000000  # SQLite's lock bytes on the database file start here (512 of them)


def header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(100)


def is_sqlite(path: Path) -> bool:
    try:
        return header(path).startswith(SQLITE_HEADER)
    except OSError:
        return False


def journal_mode(path: Path) -> str:
    """'wal' or 'rollback', from the file header (bytes 18-19 are 2 in WAL mode)."""
    return "wal" if header(path)[18:19] == b"\x02" else "rollback"


def truncation(path: Path) -> str | None:
    """Say so if the file is shorter than its header says (a cut-off copy).

    A missing file is not a truncated one: the command says "not found".
    """
    try:
        head = header(path)
    except FileNotFoundError:
        return None
    if len(head) < 100:
        return f"truncated: {len(head)} bytes, shorter than an SQLite header"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    size = path.stat().st_size
    if page_size < 512 or size % page_size:
        return f"truncated or damaged: {size} bytes is not a whole number of {page_size}-byte pages"
    header_valid = head[24:28] == head[92:96]  # SQLite's rule for trusting the size field
    if header_valid and pages and size < pages * page_size:
        return f"truncated: {size} bytes, its header says {pages} pages of {page_size}"
    return None


def database_size(path: Path) -> int:
    return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())


def refuse_in_use(database: Path, command: str, state: str = "") -> None:
    """Busy (exit 3, nothing changed) while another process has the database open."""
    if in_use(database):
        raise Busy(f"{database}: {state}still open in another process; stop the Orchestra API and "
                   f"Hangfire, then rerun {command}; nothing changed")


def in_use(path: Path) -> bool:
    """Does another process hold SQLite locks on this database?

    Any WAL-mode connection keeps a shared lock on the lock bytes; in rollback
    mode only a transaction in progress does, so an idle connection there is
    invisible. F_GETLK never takes a lock, but closing our descriptor drops
    every POSIX lock this process holds on the file: call this only while
    this process has no connection to it. Linux only (struct flock layout).
    """
    if not sys.platform.startswith("linux") or not Path(path).exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _PENDING_BYTE, 512, 0)
        lock_type = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))[0]
    finally:
        os.close(fd)
    return lock_type != fcntl.F_UNLCK
