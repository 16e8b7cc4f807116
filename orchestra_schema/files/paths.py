"""What --database names: the regular file the application opens, or where one will be made.

A symlink is followed to the file itself, so that every replacement (restore,
recover) happens beside the real file, with its -wal/-shm, and the symlink
stays a symlink. Anything but a regular file is refused from os.stat alone,
before any open: opening a FIFO blocks until a writer comes, and a device or a
socket is nobody's database. The same goes for every file the tool or SQLite
opens beside it (-journal, -wal, -shm, a backup and its manifest, the SQL files):
each is stat'ed first, and the tool's own reads open it non-blocking and check
again (read_regular), so no open waits on a FIFO, whatever --timeout says.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import DatabaseUnavailable

SQLITE_HEADER = b"SQLite format 3\x00"
SIDECARS = ("-wal", "-shm", "-journal")  # the files SQLite keeps beside a database

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def database_file(given: Path) -> Path:
    """The path commands work on: `given`, or the real file where a symlink is on the way.

    Raises DatabaseUnavailable (exit 6) if it names anything but a regular file.
    """
    given = Path(given)
    real = Path(os.path.realpath(given))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None  # a file to be created (by apply), or missing: the command says which
    except OSError as err:  # a symlink loop, a parent that cannot be searched
        raise DatabaseUnavailable(f"{given}: cannot be examined ({err.strerror}); nothing was "
                                  "opened; check --database and its directories' permissions")
    if mode is not None and odd_kind(mode):
        raise DatabaseUnavailable(
            f"{given}: is {odd_kind(mode)}, not a database file; nothing was opened or changed; "
            "give --database the path of the SQLite file")
    refuse_odd_sidecars(real)
    # No symlink on the way: keep the user's spelling (relative paths stay relative).
    return given if os.path.abspath(given) == str(real) else real


def odd_kind(mode: int) -> str | None:
    """What a file is if not a regular file ("a FIFO (named pipe)", ...); None for a regular one."""
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), None)


_SIDECAR_ROLES = (("-journal", "rollback journal"), ("-wal", "write-ahead log"),
                  ("-shm", "WAL index"))


def refuse_odd_sidecars(database: Path) -> None:
    """Exit 6 if DB-journal, -wal or -shm exists and is not a regular file.

    SQLite opens them itself, and would block on a FIFO past any busy timeout:
    they are checked before SQLite opens the database.
    """
    for suffix, role in _SIDECAR_ROLES:
        require_regular(Path(f"{database}{suffix}"), f"SQLite's {role} of {Path(database).name}",
                        "SQLite makes this file itself: move this one out of the way")


def require_regular(path: Path, what: str, remedy: str) -> None:
    """Exit 6, naming path, if it exists and is not a regular file (a symlink is followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise DatabaseUnavailable(f"{path}: cannot be examined ({err.strerror}); nothing was "
                                  "opened or changed; check its directories' permissions")
    _refuse_kind(path, mode, what, remedy)


def read_regular(path: Path, what: str, remedy: str) -> bytes:
    """The bytes of a regular file; exit 6 for anything else, without ever blocking.

    Stat'ed first, then opened non-blocking (a FIFO put in its place meanwhile
    opens at once) and checked again on the open descriptor.
    Raises FileNotFoundError if it is missing, OSError if it cannot be read.
    """
    require_regular(path, what, remedy)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _refuse_kind(path, os.fstat(fd).st_mode, what, remedy)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _refuse_kind(path: Path, mode: int, what: str, remedy: str) -> None:
    kind = odd_kind(mode)
    if kind:
        raise DatabaseUnavailable(f"{path}: is {kind}, not {what}; nothing was opened or "
                                  f"changed; {remedy}")


def require_sqlite(path: Path) -> None:
    """Refuse (exit 6) an existing file that holds no SQLite database: empty, or another header.

    SQLite takes an empty file for an empty database and would pass every check
    on it; a check that passes there, or a backup of it, is a false all-clear.
    A missing file is left to the command (it says "not found").
    """
    try:
        with open(path, "rb") as f:  # a regular file (database_file): this cannot block
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as err:
        raise DatabaseUnavailable(f"{path}: cannot be read ({err.strerror}); "
                                  "check the file's owner and mode") from err
    if not head:
        raise DatabaseUnavailable(
            f"{path}: empty file (0 bytes), it holds no SQLite database; nothing was checked "
            "or written; restore it from a backup (`orchestra-schema restore BACKUP`)")
    if head != SQLITE_HEADER:
        raise DatabaseUnavailable(
            f"{path}: not an SQLite database (its header is not 'SQLite format 3'); nothing was "
            "checked or written; check --database, or `orchestra-schema recover` a damaged file")
