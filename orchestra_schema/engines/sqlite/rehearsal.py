"""SQLite's rehearsal snapshot: the live database as of one instant, that rehearse may change.

On disk, a view (overlay.py) of the live file held still, the rehearsal's writes kept in a
temporary file; where the file cannot be held still, or in memory, a whole copy.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import apsw

from ...errors import DatabaseUnavailable, MigrationFailed, UsageError
from ...files import staging
from . import files as sqlitefile, overlay, rawcopy
from .copying import copy_pages
from .database import Database, translated


@contextlib.contextmanager
def snapshot_of(ctx, report, memory: bool, workdir: Path | None):
    """Engine.rehearsal for SQLite: yields (the snapshot, its seconds, "ok")."""
    with ctx.open(readonly=True) as live, _place(live, memory, workdir) as where, \
            contextlib.ExitStack() as stack:
        report.snapshot = where
        start = time.perf_counter()
        with translated(ctx.database, "taking the snapshot"):
            snap = stack.enter_context(_snapshot(live, where, ctx.timeout, report))
        seconds = round(time.perf_counter() - start, 3)
        with translated(Path(where), "rehearsing on the snapshot"), _scratch_errors(where):
            yield snap, seconds, "ok"


# What the snapshot's own files (the view's, its journal) raise when their
# directory is full or out of inodes; not a fault of the SQL.
SCRATCH_FAILURES = (apsw.IOError, apsw.FullError, apsw.CantOpenError)


@contextlib.contextmanager
def _scratch_errors(where: str):
    """A failure of the snapshot's files: no result to report, one line, exit 6."""
    try:
        yield
    except (apsw.Error, MigrationFailed, DatabaseUnavailable) as err:
        cause = err if isinstance(err, apsw.Error) else err.__cause__
        if not isinstance(cause, SCRATCH_FAILURES):
            raise
        directory = "memory" if where == "memory" else Path(where).parent.parent
        raise DatabaseUnavailable(
            f"{directory}: cannot write the rehearsal's snapshot ({cause}); the live database is "
            "unchanged; free space there or choose --workdir") from err


@contextlib.contextmanager
def _place(live: Database, memory: bool, workdir: Path | None):
    """Where the snapshot goes: "memory", or a file in a temporary directory removed after."""
    if memory:
        yield "memory"
        return
    if workdir is not None and not Path(workdir).is_dir():
        raise UsageError(f"{workdir}: --workdir is not a directory")
    try:
        directory = Path(tempfile.mkdtemp(prefix="orchestra-rehearse-", dir=workdir))
    except OSError as err:
        raise DatabaseUnavailable(
            f"{workdir or tempfile.gettempdir()}: cannot create the snapshot's directory "
            f"({err.strerror}); the live database is unchanged; choose --workdir") from err
    try:
        yield str(directory / live.path.name)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _snapshot(live: Database, where: str, timeout: float, report):
    """The database the rehearsal may change, the live one as of one instant.

    On disk, a view (overlay): the live file, held still for the whole
    rehearsal, with the pages the rehearsal writes kept in the temporary file.
    Where the file cannot be held still, or in memory: a whole copy through
    the backup API (WAL writers carry on, rollback-journal writers commit
    between its steps).
    """
    if where == "memory":
        report.snapshot_mode = "memory"
        with Database.in_memory() as db:
            copy_pages(live.connection, db.connection, None, timeout, incremental=True)
            yield db
        return
    with contextlib.ExitStack() as stack:
        try:
            reader, = stack.enter_context(rawcopy.still_file(
                live.path, readers=1, timeout=timeout, void="the rehearsal's results are void"))
        except rawcopy.Unstable:
            report.snapshot_mode = "copy"
            staging.check_free_space(Path(where).parent, sqlitefile.database_size(live.path))
            db = stack.enter_context(Database.open(Path(where), create=True, timeout=timeout))
            db.execute("PRAGMA synchronous = OFF")  # a throwaway copy: no fsync (3x faster)
            copy_pages(live.connection, db.connection, None, timeout, incremental=True)
            yield db
            return
        report.snapshot_mode = "overlay"
        vfs = stack.enter_context(overlay.view(reader, Path(where)))
        db = stack.enter_context(Database.open(Path(where), create=True, vfs=vfs, timeout=timeout))
        db.execute("PRAGMA synchronous = OFF")  # a throwaway file: no fsync
        yield db
