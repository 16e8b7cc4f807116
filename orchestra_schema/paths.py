"""What --database names: the regular file the application opens, or where one will be made.

A symlink is followed to the file itself, so that every replacement (restore,
recover) happens beside the real file, with its -wal/-shm, and the symlink
stays a symlink. Anything but a regular file is refused from os.stat alone,
before any open: opening a FIFO blocks until a writer comes, and a device or a
socket is nobody's database.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import DatabaseUnavailable
from .sqlitefile import SQLITE_HEADER

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
    for is_kind, kind in _KINDS:
        if mode is not None and is_kind(mode):
            raise DatabaseUnavailable(
                f"{given}: is {kind}, not a database file; nothing was opened or changed; "
                "give --database the path of the SQLite file")
    # No symlink on the way: keep the user's spelling (relative paths stay relative).
    return given if os.path.abspath(given) == str(real) else real


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
