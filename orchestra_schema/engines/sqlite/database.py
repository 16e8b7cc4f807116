"""The one way this tool opens SQLite: apsw, with a busy timeout, errors mapped.

`Database` is a connection for commands (foreign keys off, the file proved to be
SQLite); `connect` and `open_immutable` are bare connections for the copies and
snapshots that want nothing but SQLite's own view of a file.

Python's sqlite3 module is never imported: it links another copy of SQLite,
and two copies in one process can silently drop each other's POSIX locks
(sqlite.org, How To Corrupt An SQLite Database File, 2.2.1).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import apsw

from ..base import DEFAULT_TIMEOUT
from ...errors import Busy, DatabaseCorrupt, DatabaseUnavailable
from ...files.paths import refuse_odd_sidecars

_READONLY_ROLLBACK = 776  # SQLITE_READONLY_ROLLBACK: hot journal, read-only connection

_UNREADABLE = (
    apsw.NotADBError,
    apsw.CorruptError,
    apsw.CantOpenError,
    apsw.IOError,
    apsw.PermissionsError,
    apsw.AuthError,
    apsw.ReadOnlyError,
    apsw.FullError,
)


def database_error(err: apsw.Error, path: Path, doing: str) -> Exception:
    """Map an apsw error to the project exception with the right exit code."""
    if isinstance(err, (apsw.BusyError, apsw.LockedError)):
        return Busy(
            f"{path}: database is locked by another process while {doing}; "
            "retry later or raise --timeout"
        )
    if isinstance(err, apsw.NotADBError):
        return DatabaseCorrupt(f"{path}: not an SQLite database; check --database", str(err))
    if isinstance(err, apsw.CorruptError):
        return DatabaseCorrupt(
            f"{path}: database is corrupt ({err}); restore or recover it from a backup", str(err)
        )
    if isinstance(err, apsw.ReadOnlyError):  # its text is sometimes only "not an error"
        return DatabaseUnavailable(
            f"{path}: cannot write the database while {doing}: it is read-only (a read-only "
            "file system or file); make it writable and run again")
    if isinstance(err, _UNREADABLE):
        return DatabaseUnavailable(f"{path}: cannot use database while {doing}: {err}")
    return err


@contextlib.contextmanager
def translated(path: Path, doing: str):
    """Re-raise apsw errors as project errors naming the path and the action."""
    try:
        yield
    except apsw.Error as err:
        mapped = database_error(err, path, doing)
        if mapped is err:
            raise
        raise mapped from err


def connect(path: Path, *, flags: int = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE,
            timeout: float = DEFAULT_TIMEOUT, vfs: str | None = None) -> apsw.Connection:
    """A bare connection; the path is taken literally, never as a URI."""
    if str(path) != ":memory:":  # SQLite would block opening a FIFO -journal, -wal or -shm
        refuse_odd_sidecars(Path(path))
    conn = apsw.Connection(str(path), flags=flags, vfs=vfs)
    conn.setbusytimeout(int(timeout * 1000))
    return conn


def begin_snapshot(conn: apsw.Connection) -> None:
    """Begin a read transaction and take its snapshot now: SQLite takes it at the first
    read, not at BEGIN, and the callers need it taken at a known moment."""
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()


def open_immutable(path: Path) -> apsw.Connection:
    """Read a file nobody writes to: no locks, no -wal or -shm created beside it."""
    uri = "file:" + uri_path(Path(path).absolute()) + "?immutable=1"
    return apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def uri_path(path: Path) -> str:
    """path as a file: URI's path: SQLite decodes %HH there and ends it at ? or #.

    (Not urllib.parse.quote: it costs every short command 3 ms of imports.)
    """
    text = str(path)
    for char in "%?#":  # % first, or its own escapes would be escaped again
        text = text.replace(char, f"%{ord(char):02X}")
    return text


class Database:
    """An apsw connection to one database file, foreign keys off, busy timeout set."""

    def __init__(self, path: Path, connection: apsw.Connection, readonly: bool):
        self.path = path
        self.connection = connection
        self.readonly = readonly

    @classmethod
    def open(cls, path: Path, *, timeout: float = DEFAULT_TIMEOUT, create: bool = False,
             readonly: bool = False, vfs: str | None = None) -> "Database":
        path = Path(path)
        _check_path(path, create=create)
        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
        if create and not readonly:
            flags |= apsw.SQLITE_OPEN_CREATE
        with translated(path, "opening"):
            try:
                return cls._connect(path, flags, timeout, readonly, vfs)
            except apsw.ReadOnlyError as err:
                if err.extendedresult != _READONLY_ROLLBACK or not os.access(path, os.W_OK):
                    raise
            # A crashed writer left a hot journal that a read-only connection
            # cannot roll back. Opening read-write (never create) lets SQLite
            # restore the last committed state, as any reader of the file would.
            return cls._connect(path, apsw.SQLITE_OPEN_READWRITE, timeout, readonly, vfs)

    @classmethod
    def in_memory(cls) -> "Database":
        """A private scratch database (replays, rehearsals), set up like open()'s."""
        conn = apsw.Connection(":memory:")
        conn.execute("PRAGMA foreign_keys = OFF")
        return cls(Path(":memory:"), conn, readonly=False)

    @classmethod
    def _connect(cls, path: Path, flags: int, timeout: float, readonly: bool,
                 vfs: str | None = None) -> "Database":
        conn = connect(path, flags=flags, timeout=timeout, vfs=vfs)
        db = cls(path, conn, readonly)
        # Reading the schema proves it is SQLite; schema changes want FKs off.
        conn.execute("PRAGMA foreign_keys = OFF")
        db.table_names()
        return db

    def execute(self, sql: str, bindings=None) -> apsw.Cursor:
        return self.connection.execute(sql, bindings)

    def rows(self, sql: str, bindings=None) -> list[tuple]:
        return list(self.connection.execute(sql, bindings))

    def scalar(self, sql: str, bindings=None):
        row = self.connection.execute(sql, bindings).fetchone()
        return None if row is None else row[0]

    @contextlib.contextmanager
    def read_transaction(self):
        """Every read inside sees one state of the file, even while others write."""
        self.execute("BEGIN")
        try:
            yield self
        finally:
            if not self.connection.get_autocommit():
                self.execute("ROLLBACK")  # nothing to keep, and COMMIT fails on a corrupt file

    def table_names(self) -> set[str]:
        return {
            name
            for (name,) in self.rows(
                "SELECT name FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        }

    def row_count(self, table: str) -> int:
        return self.scalar(f"SELECT count(*) FROM {quote(table)}")

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quote(identifier: str) -> str:
    """Quote an SQL identifier (table and index names come from the database)."""
    return '"' + identifier.replace('"', '""') + '"'


def _check_path(path: Path, *, create: bool) -> None:
    if path.is_dir():
        raise DatabaseUnavailable(f"{path}: is a directory, not a database file; check --database")
    if path.exists():
        if not os.access(path, os.R_OK):
            raise DatabaseUnavailable(f"{path}: permission denied; check the file's owner and mode")
        return
    if not create:
        raise DatabaseUnavailable(
            f"{path}: database not found; check --database ($ORCHESTRA_DB, $EFCORE_CONNECTION, "
            "$HANGFIRE_CONNECTION)")
    if not path.parent.is_dir():
        raise DatabaseUnavailable(
            f"{path}: directory {path.parent} does not exist; create it or fix --database"
        )
