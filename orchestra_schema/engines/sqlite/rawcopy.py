"""A byte-for-byte copy of a live database file, read while nobody can change it.

SQLite's backup API copies page by page through the pager. When the file itself
cannot change, reading it raw gives the same bytes several times faster. It
cannot change while we hold a read transaction that began:

- in rollback-journal mode, at any time: a writer needs an EXCLUSIVE lock to
  write the file, and our SHARED lock keeps it out;
- in WAL mode, when every frame of the WAL had been checkpointed into the file:
  a checkpoint never copies frames past the end mark of a live reader
  (sqlite.org/wal.html, "Concurrency"), and there is nothing before ours.

Other connections keep working: WAL writers append to the WAL (it grows until
we finish), rollback-journal writers wait for our read transaction to end.

The copy reads through a descriptor of ours (held_open), which is closed only
after SQLite's connections: closing any descriptor of a file drops every POSIX
lock this process holds on it, SQLite's included. (Not through mmap: Python's
mmap objects keep a duplicate descriptor and close it when they go.)
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import apsw

from ... import background
from ...files import digest as digests
from .database import begin_snapshot, connect
from ...errors import DatabaseUnavailable

CHUNK = 1 << 20  # bytes per read and write: small enough to stay in cache from read to hash to write, and with direct I/O a WAL commit waits at most one chunk
ATTEMPTS = 3  # WAL: tries at a snapshot with nothing left to checkpoint, then the backup API
GATE_WAIT = 2.0  # rollback journal: seconds to wait for the write lock, then the backup API


class Unstable(Exception):
    """No read transaction under which the file stays still; the caller falls back.

    warning: what the user should hear about although the fallback works (or None).
    """

    def __init__(self, reason: str, warning: str | None = None):
        super().__init__(reason)
        self.warning = warning


@contextlib.contextmanager
def still_file(path: Path, readers: int, timeout: float,
               void: str = "no backup was written") -> Iterator[list[apsw.Connection]]:
    """`readers` connections sharing one read transaction during which `path` is not written.

    A read waits up to `timeout` for a lock, as the backup API would; only the
    write lock is given up on sooner (GATE_WAIT), for the backup API's copy.
    `void` says what a change of the file after all voids.
    """
    control = _connect(path, readonly=False, wait=timeout)
    opened: list[apsw.Connection] = []
    try:
        opened.extend(_connect(path, readonly=True, wait=timeout) for _ in range(readers))
        if _mode(control) == "wal":
            _begin_wal(control, opened)
        else:
            _begin_rollback_journal(control, opened, min(timeout, GATE_WAIT))
        before = _stamp(path)
        try:
            yield opened
        except BaseException:
            _check_still(path, before, void)  # a file changed under us explains the failure
            raise
        _check_still(path, before, void)
    finally:
        for conn in (*opened, control):
            with contextlib.suppress(apsw.Error):  # one failure must not keep the others open
                if not conn.getautocommit():
                    conn.execute("ROLLBACK")
                conn.close()


def _check_still(path: Path, before: tuple[int, int], void: str) -> None:
    """Cannot fail by the reasoning above; never trust what was read if it does."""
    try:
        changed = _stamp(path) != before
    except OSError:
        changed = True  # gone, or replaced by something we cannot stat
    if changed:
        raise DatabaseUnavailable(
            f"{path}: the file changed while it was read (a process writing it without "
            f"SQLite's locks?); {void}; stop that process and rerun")


def _begin_wal(control: apsw.Connection, readers: list[apsw.Connection]) -> None:
    """Checkpoint, begin, and keep the snapshot only if the WAL holds nothing it needs.

    After the readers began, a checkpoint that finds every frame already in the
    file (log == checkpointed) proves that their snapshot is the file as it is:
    a commit in between would leave a frame it cannot copy past their end mark.
    """
    for _ in range(ATTEMPTS):
        _checkpoint(control)
        for conn in readers:
            begin_snapshot(conn)
        if _checkpoint(control):
            return
        for conn in readers:
            conn.execute("COMMIT")
        time.sleep(0.01)
    raise Unstable("the WAL could not be checkpointed whole (a long reader or a steady writer)")


def _checkpoint(control: apsw.Connection) -> bool:
    try:
        busy, log, done = control.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except (apsw.BusyError, apsw.LockedError, apsw.ReadOnlyError, apsw.IOError):
        return False  # IOError: a read-only file cannot be checkpointed; the backup API can read it
    except apsw.FullError as err:  # the live disk, not the copy's: the backup API needs no room there
        where = Path(control.filename)
        raise Unstable(f"{where}: cannot checkpoint ({err})", warning=(
            f"{where.parent}: the live database's file system is full, so its WAL cannot be "
            "checkpointed (the application's writes will fail too); copied through SQLite's "
            "backup API instead; free space there")) from err
    return not busy and log == done


def _begin_rollback_journal(control: apsw.Connection, readers: list[apsw.Connection],
                            wait: float) -> None:
    """Begin the readers under the write lock, so no commit lands between them."""
    control.setbusytimeout(int(wait * 1000))
    try:
        control.execute("BEGIN IMMEDIATE")
    except (apsw.BusyError, apsw.ReadOnlyError, apsw.CantOpenError) as err:
        raise Unstable(f"no write lock to begin under ({err})") from err
    try:
        # The mode was read before this lock: switched to WAL meanwhile, the newest
        # commits are in the -wal, not in the file, and this lock does not keep them out.
        if _mode(control) == "wal":
            raise Unstable("the database switched to WAL mode")
        for conn in readers:
            begin_snapshot(conn)
    finally:
        control.execute("ROLLBACK")


def _connect(path: Path, readonly: bool, wait: float) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    return connect(path, flags=flags, timeout=wait)


def _mode(conn: apsw.Connection) -> str:
    return conn.execute("PRAGMA journal_mode").fetchone()[0]


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@contextlib.contextmanager
def held_open(path: Path) -> Iterator[int]:
    """A read-only descriptor of `path`, for copy_file: enter it before still_file.

    Closing a descriptor drops every POSIX lock this process holds on the file,
    SQLite's included; entered first, it is closed last, after still_file's
    connections have let go of theirs.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:  # the backup API's own open will say what is wrong
        raise Unstable(f"cannot open the file ({err})") from err
    try:
        yield fd
    finally:
        os.close(fd)


def copy_file(reader: apsw.Connection, source_fd: int, dest: Path, fd: int,
              progress: Callable[[int, int], None] | None) -> digests.Digest:
    """Write the file held still by reader (open as source_fd) into `dest` (open as fd), fsync it.

    A chunk is read into one of three page-aligned buffers, then hashed and
    written from there in two threads while the next one is read: each step
    lets go of the GIL, and the chunk stays in the CPU's cache from read to
    write. Direct I/O where the file system has it: the copy does not fill the
    page cache the application lives on, and reaches the disk a chunk at a time
    instead of in one burst at the fsync that a WAL commit would queue behind.
    Returns the digest.
    """
    total, page_size = extent(reader)
    _require_same_file(reader, source_fd)
    pages, done = total // page_size, 0
    digest = digests.hasher()
    # Three: a Lane holds at most two chunks (one running, one queued), so while
    # chunk n is read the lanes hold at most n-1 and n-2, and n-3's buffer is free.
    buffers = [memoryview(mmap.mmap(-1, CHUNK)) for _ in range(3)]
    with _Writer(dest, fd) as writer, background.Lane() as hashing, \
            background.Lane() as writing:
        while done < total:
            chunk = buffers[done // CHUNK % 3][:min(CHUNK, total - done)]
            _read_into(source_fd, chunk, done, reader.filename)
            hashing.put(digest.update, chunk)
            writing.put(writer.write, chunk, done)
            done += len(chunk)
            if progress:
                progress(done // page_size, pages)
    os.fsync(fd)
    return digests.Digest(digests.ALGORITHM, digest.hexdigest())


def _require_same_file(reader: apsw.Connection, source_fd: int) -> None:
    """source_fd is the file reader holds still, not one put in its place since it was opened."""
    ours, now = os.fstat(source_fd), os.stat(reader.filename)
    if (ours.st_dev, ours.st_ino) != (now.st_dev, now.st_ino):
        raise Unstable("the database file was replaced while the copy began")


def _read_into(source_fd: int, chunk: memoryview, offset: int, name: str) -> None:
    done = 0
    while done < len(chunk):
        got = os.preadv(source_fd, [chunk[done:]], offset + done)
        if not got:
            raise DatabaseUnavailable(f"{name}: the file is shorter than its page count says; "
                                      "nothing was copied; run `orchestra-schema verify`")
        done += got


def extent(reader: apsw.Connection) -> tuple[int, int]:
    """(bytes, page size) of the database as the reader's snapshot counts its pages."""
    page_size = reader.execute("PRAGMA page_size").fetchone()[0]
    return page_size * reader.execute("PRAGMA page_count").fetchone()[0], page_size


class _Writer:
    """pwrite through O_DIRECT (from page-aligned buffers), or buffered with an fdatasync per chunk."""

    def __init__(self, dest: Path, fd: int):
        self.fd = fd
        self.direct = None
        with contextlib.suppress(OSError, AttributeError):  # no O_DIRECT here: buffered
            self.direct = os.open(dest, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)

    def write(self, data, offset: int) -> None:
        if self.direct is not None:
            try:
                return _write_all(self.direct, data, offset)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                os.close(self.direct)  # a size or alignment the device refuses: go on buffered
                self.direct = None
        _write_all(self.fd, data, offset)
        os.fdatasync(self.fd)  # to disk as it goes, not in one burst at the end

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc) -> None:
        if self.direct is not None:
            os.close(self.direct)


def _write_all(fd: int, data, offset: int) -> None:
    with memoryview(data) as whole:
        done = 0
        while done < len(whole):
            with whole[done:] as rest:
                done += os.pwrite(fd, rest, offset + done)
