"""Copying a database into a new file: raw while it holds still, else SQLite's backup API.

The copy is written under a temporary name in its final directory (staging.Staged),
checked, fsynced, and only then linked under its final name, so a killed or
failed run never leaves a partial file where a DBA would trust it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import apsw

from ... import background
from ...files import digest as digests, staging
from . import rawcopy, files as sqlitefile
from .applied import applied_migrations
from .database import Database, connect, open_immutable, translated
from ...errors import DatabaseUnavailable, OrchestraError

Progress = Callable[[int, int], None]  # (pages copied, pages in all)

STEP_PAGES = 1024  # 4 MiB at 4 KiB pages: a rollback-journal writer waits at most one step
MAX_RESTARTS = 3  # then copy under one read transaction so steady writers cannot starve us
WRITE_BACK_EVERY = 0.1  # seconds between fdatasyncs of a copy being written


@dataclass
class Copy:
    path: Path
    size: int
    digest: digests.Digest
    page_count: int
    journal_mode: str
    integrity: str
    integrity_check: str
    applied_migrations: list[str]
    copy_mode: str
    restarts: int
    cleaned: list[Path]
    warnings: list[str] = field(default_factory=list)


def new_backup(src: apsw.Connection, source: Path, names, *, progress: Progress | None,
               timeout: float, doing: str, full_check: bool = False,
               require_ok: bool = True) -> Copy:
    """A checked copy of the live database src under the first free name in `names`.

    Its file's bytes (rawcopy) where it can be held still, checked meanwhile;
    else through the backup API. require_ok=False keeps a copy that fails its
    check (a damaged database's safety copy); otherwise a bad copy is discarded.
    """
    names = iter(names)
    first = next(names)
    return _copy(src, source, first, lambda staged: staged.publish(chain(first, names)),
                 progress=progress, timeout=timeout, doing=doing, live=True,
                 full_check=full_check, require_ok=require_ok)


def replace_live(src: apsw.Connection, source: Path, database: Path,
                 swap: Callable[[staging.Staged], Path], *, progress: Progress | None,
                 timeout: float) -> Copy:
    """Copy src (a backup nobody writes) beside `database`; swap(staged) gives it the live name."""
    return _copy(src, source, database, swap, progress=progress, timeout=timeout,
                 doing="restoring", live=False)


def _copy(src, source: Path, first: Path, publish: Callable[[staging.Staged], Path], *,
          progress: Progress | None, timeout: float, doing: str, live: bool,
          full_check: bool = False, require_ok: bool = True) -> Copy:
    """Copy, check, then publish(staged) names the good copy; a killed run leaves only a temporary file.

    (A raw copy's quick_check reads the snapshot it was copied from, whose bytes
    it holds; --full-check reads the copy file itself.)
    """
    warnings: list[str] = []
    with translated(source, doing), staging.writing(first.parent, doing):
        cleaned = staging.clean_stale(first.parent)  # what killed runs left there
        with staging.Staged(first) as staged:
            raw = (_copy_raw(source, staged, progress, full_check, timeout, warnings)
                   if live else None)
            if raw:
                (found, digest), copy_mode, restarts = raw, "raw", 0
            else:
                copy_mode, restarts = _copy_through_sqlite(src, staged, progress, timeout)
                found, digest = _check_hash_and_sync(staged.path, full_check)
            if require_ok and found.integrity != "ok":
                raise DatabaseUnavailable(
                    f"{source}: the copy failed its {found.check} ({found.integrity}); no backup "
                    "was written; the database itself is probably damaged: run `orchestra-schema "
                    "recover`")
            path = publish(staged)
            return Copy(path, path.stat().st_size, digest, found.page_count,
                        found.journal_mode, found.integrity, found.check, found.applied_migrations,
                        copy_mode, restarts, cleaned, warnings)


def _copy_raw(source: Path, staged: staging.Staged, progress: Progress | None,
              full_check: bool, timeout: float,
              warnings: list[str]) -> tuple["Inspection", digests.Digest] | None:
    """The file's bytes, while a second connection quick_checks the same snapshot.

    The check reads the very bytes the copy holds (one snapshot of a file that
    does not change), from the page cache, while the copy is written; the full
    integrity_check reads the copy itself afterwards. None: the file could not
    be held still; the caller copies through SQLite instead.
    """
    try:
        with rawcopy.held_open(source) as source_fd, \
                rawcopy.still_file(source, readers=2, timeout=timeout) as (copier, checker):
            checked = (None if full_check else
                       background.Task(integrity_of, checker, "quick_check", nice=True))
            try:
                digest = rawcopy.copy_file(copier, source_fd, staged.path, staged.fd, progress)
            except BaseException:
                if checked:
                    checker.interrupt()  # do not hold the snapshot (and writers) for a check nobody reads
                    checked.join()
                raise
            integrity = checked.result() if checked else None
    except rawcopy.Unstable as why:
        warnings += [why.warning] if why.warning else []
        return None
    return inspect(staged.path, full_check, integrity), digest


def _copy_through_sqlite(src: apsw.Connection, staged: staging.Staged, progress: Progress | None,
                         timeout: float) -> tuple[str, int]:
    dest = connect(staged.path)
    try:
        # The copy is discarded unless complete, so no journal and no syncs
        # until the one fsync before it is published.
        dest.execute("PRAGMA journal_mode = OFF").fetchall()
        dest.execute("PRAGMA synchronous = OFF")
        with _written_back(staged.fd):
            return copy_pages(src, dest, progress, timeout, incremental=True)
    finally:
        dest.close()


@contextlib.contextmanager
def _written_back(fd: int):
    """fdatasync the file every WRITE_BACK_EVERY seconds from a thread while it is written.

    Left to the end, one fsync of a whole gigabyte saturates the disk and the
    application's commits (each an fsync) wait behind it; written back as it
    grows, the copy goes on meanwhile and the final fsync has little left.
    """
    stop = threading.Event()

    def write_back():
        while not stop.wait(WRITE_BACK_EVERY):
            os.fdatasync(fd)

    thread = threading.Thread(target=write_back, name="write-back", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _check_hash_and_sync(path: Path, full_check: bool) -> tuple["Inspection", digests.Digest]:
    """The copy's integrity check, digest and fsync, side by side.

    The file is complete and nobody writes it any more; each of the three
    reads or flushes it whole, and each releases the GIL (SQLite in apsw,
    the hasher on large blocks, fsync), so on two cores they overlap. They run
    niced: a backup must not starve the application it runs beside.
    """
    digest = background.Task(digests.of_file, path, nice=True)
    synced = background.Task(staging.fsync, path, nice=True)
    found = background.Task(inspect, path, full_check, nice=True)
    synced.result()
    return found.result(), digest.result()


def chain(first: Path, rest: Iterator[Path]) -> Iterator[Path]:
    yield first
    yield from rest


def copy_pages(src: apsw.Connection, dest: apsw.Connection, progress: Progress | None,
               timeout: float, incremental: bool) -> tuple[str, int]:
    """Copy src into dest through the backup API; returns (mode, restarts).

    In WAL mode one read transaction on src fixes the snapshot while other
    processes keep committing to the WAL. In rollback-journal mode a read
    transaction would make writers wait for the whole copy, so the copy goes
    in steps and writers commit in between; each such commit restarts it, and
    after MAX_RESTARTS it finishes under one read transaction anyway.
    """
    wal = src.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with dest.backup("main", src, "main") as job:
        restarts = 0
        if incremental and not wal:
            done, restarts = _steps(job, progress, timeout, max_restarts=MAX_RESTARTS)
            if done:
                return "incremental", restarts
        src.execute("BEGIN")
        try:
            src.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # takes the read lock
            _steps(job, progress, timeout, max_restarts=None)
        finally:
            src.execute("COMMIT")
        return "snapshot", restarts


def _steps(job: apsw.Backup, progress, timeout: float, max_restarts: int | None):
    """Step until done or max_restarts; a busy step is retried until `timeout` passes.

    backup_step can return BUSY without calling the busy handler, so the wait is here.
    """
    busy_since, restarts, before = None, 0, None
    while True:
        try:
            done = job.step(STEP_PAGES)
        except (apsw.BusyError, apsw.LockedError):
            busy_since = busy_since or time.monotonic()
            if time.monotonic() - busy_since >= timeout:
                raise
            time.sleep(0.01)
            continue
        busy_since = None
        if before is not None and not done and job.remaining >= before:
            restarts += 1
        before = job.remaining
        if progress:
            progress(job.page_count - job.remaining, job.page_count)
        if done:
            return True, restarts
        if max_restarts is not None and restarts >= max_restarts:
            return False, restarts


@dataclass
class Inspection:
    integrity: str
    check: str
    page_count: int
    journal_mode: str
    applied_migrations: list[str]


def inspect(path: Path, full: bool, integrity: str | None = None) -> Inspection:
    """Check a database file nobody writes to (a backup, a staged copy).

    integrity: the quick_check result already found for these bytes (not run again).
    """
    check = integrity_pragma(full)
    conn = open_immutable(path)
    try:
        integrity = integrity or integrity_of(conn, check)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        try:
            applied = list(applied_migrations(Database(path, conn, readonly=True)))
        except (apsw.Error, OrchestraError):
            applied = []  # unreadable history: the integrity result says why
    finally:
        conn.close()
    return Inspection(integrity, check, pages, sqlitefile.journal_mode(path), applied)


def integrity_pragma(full: bool) -> str:
    """quick_check by default (about 1 s per GB); integrity_check when asked (about 25 s per GB)."""
    return "integrity_check" if full else "quick_check"


def integrity_of(conn: apsw.Connection, check: str = "integrity_check") -> str:
    """'ok', or the first problems the check found, in one line."""
    try:
        lines = [row[0] for row in conn.execute(f"PRAGMA {check}(10)")]
    except apsw.Error as err:
        return f"unreadable: {err}"
    return "ok" if lines == ["ok"] else "; ".join(lines)
