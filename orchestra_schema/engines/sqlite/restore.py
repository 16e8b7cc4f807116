"""SQLite's restore: put a verified backup back, through the backup API, keeping a safety copy.

Copying a backup over a live file while its -wal still holds frames corrupts
it; writing through SQLite's backup API into the live database is one write
transaction, so every other connection sees the old or the new content.
A damaged live database is restored the same way, after an unchecked copy
(orchestra.db.corrupted_TIMESTAMP); only one SQLite cannot open at all (or a
missing one) is moved aside with its -wal/-shm while the backup takes its name.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import apsw

from . import files as sqlitefile, wal
from ...files import staging
from ...files.backups import RestoreResult, discard
from .backup import health, safety_copy, trusted_backup
from .copying import Progress, copy_pages, integrity_of, replace_live
from .database import Database, open_immutable, translated
from ..runner import applied_migrations
from ...errors import Busy, DatabaseCorrupt, Refused
from ...schema import Sides, differences, render
from .snapshot import snapshot

if TYPE_CHECKING:
    from ...context import Context


def restore(ctx: Context, backup_path: Path, yes: bool = False, make_backup: bool = True,
            progress: Progress | None = None) -> RestoreResult:
    """Restore ctx.database from backup_path after verifying it; see the module doc.

    make_backup=False skips the pre-restore copy of a healthy database; the
    copy of a damaged one is always kept (recover can salvage from it).
    """
    backup_path = Path(backup_path)
    check = trusted_backup(backup_path, ctx.database, "restore")
    wal.refuse(ctx.database)  # before the pre-restore copy: nothing begins
    live = health(ctx)
    # SQLite reads an empty file as an empty database: nothing to keep, no schema to compare.
    empty = live == "ok" and ctx.database.stat().st_size == 0
    live = "empty" if empty else live
    result = RestoreResult(ctx.database, backup_path, None, live, check.has_manifest, [], "backup-api")
    if empty:
        result.warnings.append(f"{ctx.database} was an empty file (0 bytes): nothing to keep, "
                               "so no pre-restore copy was made")
    if live == "missing":
        result.method = "replaced"
        _replace_file(ctx, result, progress)
    else:
        try:
            _restore_into_live(ctx, result, yes, (make_backup or live != "ok") and not empty,
                               progress)
        except DatabaseCorrupt:
            if live == "ok":
                raise
            result.method = "replaced"  # SQLite cannot open it: it can only be swapped
            _replace_file(ctx, result, progress)
    with ctx.open(readonly=True) as db:
        result.integrity = integrity_of(db.connection, "quick_check")
        result.applied_migrations = list(applied_migrations(db))
    return result


def _restore_into_live(ctx: Context, result: RestoreResult, yes: bool, make_backup: bool,
                       progress) -> None:
    healthy = result.live_integrity == "ok"
    source = open_immutable(result.restored_from)
    try:
        if healthy:
            with ctx.open(readonly=True) as live:
                _refuse_unrestorable(ctx, result, live, source, yes)
        staging.check_free_space(ctx.database.parent, sqlitefile.database_size(ctx.database)
                               + max(sqlitefile.database_size(ctx.database), _size(result.restored_from)))
        if make_backup:
            kind = "pre-restore" if healthy else "corrupted"
            result.backup = safety_copy(ctx, kind, progress, damaged=not healthy).path
        copied = False
        try:
            with ctx.open() as live, translated(ctx.database, "restoring"):
                mode = live.scalar("PRAGMA journal_mode")
                copy_pages(source, live.connection, progress, ctx.timeout, incremental=False)
                copied = True
                _keep_journal_mode(live, mode, result)
        except Busy:
            if result.backup is not None and not copied:  # nothing changed: the copy is not needed
                discard(result.backup)
                result.backup = None
            raise
    finally:
        source.close()


def _keep_journal_mode(live: Database, mode: str, result: RestoreResult) -> None:
    """A backup of a WAL database carries WAL in its header; the live file keeps its own mode."""
    now = live.scalar("PRAGMA journal_mode")
    if now != mode and _switch(live, mode) != mode:
        result.warnings.append(
            f"{result.database} is now in {now} mode, like the backup; it was {mode} and could "
            f"not be switched back while in use: run PRAGMA journal_mode = {mode} when it is idle")


def _switch(live: Database, mode: str) -> str | None:
    """PRAGMA journal_mode = mode; None if another connection's lock stops it (out of WAL,
    SQLite needs the database to itself): the restore is done, only the mode is left."""
    try:
        return live.scalar(f"PRAGMA journal_mode = {mode}")
    except (apsw.BusyError, apsw.LockedError):
        return None


def _size(path: Path) -> int:
    return Path(path).stat().st_size


# schema differences said from the backup's side (expected = the live database, found = the backup)
BACKUP_VS_LIVE = Sides(missing="only in the live database", extra="only in the backup",
                       expected="live", found="in the backup")


def _refuse_unrestorable(ctx: Context, result: RestoreResult, live: Database, source, yes: bool):
    theirs = snapshot(Database(result.restored_from, source, readonly=True))
    result.schema_differences = [render(d, BACKUP_VS_LIVE) for d in differences(snapshot(live), theirs)]
    if result.schema_differences and not yes:
        shown = "; ".join(result.schema_differences[:4])
        more = len(result.schema_differences) - 4
        raise Refused(
            f"{result.restored_from}: its schema differs from {ctx.database}'s ({shown}"
            f"{f'; and {more} more' if more > 0 else ''}); nothing changed; "
            "rerun with --yes to restore it anyway")
    page_size = source.execute("PRAGMA page_size").fetchone()[0]
    live_page_size = live.scalar("PRAGMA page_size")
    if live.scalar("PRAGMA journal_mode") == "wal" and page_size != live_page_size:
        raise Refused(
            f"{result.restored_from}: page size {page_size} differs from {ctx.database}'s "
            f"{live_page_size}, which SQLite cannot restore into a WAL database online; nothing "
            "changed; stop the application and use `recover --from` instead")


def _replace_file(ctx: Context, result: RestoreResult, progress) -> None:
    """The live file is damaged or missing: the backup takes its name, the old one moves aside."""
    database = ctx.database
    staging.check_writable_dir(database.parent, "restored database")
    exists = database.exists()
    if exists:
        sqlitefile.refuse_in_use(database, "restore", "damaged and ")
    aside = staging.aside_name(database, "corrupted", datetime.now(timezone.utc))

    def publish(staged: staging.Staged) -> Path:
        if not exists:
            return staged.publish([database])
        staging.copy_owner_and_mode(database, staged.path)  # the application's user must open it
        result.moved_aside = staged.swap_in(database, aside)
        result.backup = result.backup or result.moved_aside[0]
        return database

    source = open_immutable(result.restored_from)
    try:
        staging.check_free_space(database.parent, result.restored_from.stat().st_size)
        replace_live(source, result.restored_from, database, publish, progress=progress,
                     timeout=ctx.timeout)
    finally:
        source.close()
