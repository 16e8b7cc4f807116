"""SQLite's backups: online copies, their manifests, retention, and the checks restore relies on.

A backup is an online copy (copying.py: SQLite's backup API, checked, fsynced,
0600, published under its final name only when whole) with a JSON manifest
beside it: source, time, size, digest (BLAKE3), page count, applied migrations and the
integrity result. restore trusts a backup only when it matches its manifest.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import apsw

from ...files import digest as digests, staging
from . import files as sqlitefile, wal
from .database import open_immutable
from .copying import Progress, chain, integrity_of, integrity_pragma, new_backup
from ...errors import DatabaseCorrupt, Refused, UsageError
from ...files.backups import (MANIFEST_VERSION, BackupCheck, BackupResult, discard, manifest_path,
                             original_wal_path, read_manifest, write_manifest)
from ...files.paths import require_regular, require_sqlite

if TYPE_CHECKING:
    from ...context import Context


def backup(ctx: Context, output: Path | None = None, directory: Path | None = None,
           keep: int | None = None, progress: Progress | None = None,
           full_check: bool = False) -> BackupResult:
    """Back ctx.database up online; returns where, and what the manifest records
    (commands/backup.py has checked the options)."""
    target = Path(output).parent if output is not None else Path(directory or ctx.backups)
    if output is not None and Path(output).is_dir():
        raise UsageError(f"{output}: is a directory; give --output a file name, or use --dir")
    if output is not None and Path(output).exists():
        raise Refused(f"{output}: already exists; nothing changed; choose another --output")
    require_sqlite(ctx.database)  # a copy of an empty file would be a 0-byte "backup, quick_check ok"
    if keep is not None:  # what --keep will read (a manifest that is a FIFO: exit 6), before any copy
        backups_of(ctx.database, target)
    now = datetime.now(timezone.utc)
    names = ([Path(output)] if output is not None
             else staging.unique_names(target / f"{ctx.database.name}.backup_{staging.stamp(now)}"))
    result = _take(ctx, names, now, progress, full_check=full_check, doing="backing up",
                   what="backup")
    if keep is not None:
        result.deleted = _prune(ctx.database, target, keep, result.path)
    return result


def safety_copy(ctx: Context, kind: str, progress: Progress | None = None,
                damaged: bool = False) -> BackupResult:
    """A backup named <db>.KIND_TIMESTAMP in the backup directory, before a destructive change.

    damaged: the database failed its check, so its copy will too; keep it anyway.
    """
    now = datetime.now(timezone.utc)
    names = staging.unique_names(ctx.backups / staging.aside_name(ctx.database, kind, now).name)
    return _take(ctx, names, now, progress, doing=f"making the {kind} copy", what=f"{kind} copy",
                 require_ok=not damaged)


def _take(ctx: Context, names, now: datetime, progress, *, doing: str, what: str,
          full_check: bool = False, require_ok: bool = True) -> BackupResult:
    """Copy, check and publish the backup under the first free name, then its manifest."""
    names = iter(names)
    first = next(names)
    with ctx.open(readonly=True) as db:
        staging.check_writable_dir(first.parent, what)
        staging.check_free_space(first.parent, sqlitefile.database_size(ctx.database))
        with _original_wal(ctx.database, first) as (kept, found):
            copy = new_backup(db.connection, ctx.database, chain(first, names), progress=progress,
                              timeout=ctx.timeout, doing=doing, full_check=full_check,
                              require_ok=require_ok)
            original_wal = kept.publish([original_wal_path(copy.path)]) if kept else None
    result = BackupResult(
        database=ctx.database, path=copy.path, manifest=manifest_path(copy.path),
        created_at=now.isoformat(timespec="microseconds"), size=copy.size, digest=copy.digest,
        page_count=copy.page_count, integrity=copy.integrity, integrity_check=copy.integrity_check,
        applied_migrations=copy.applied_migrations, journal_mode=copy.journal_mode,
        copy_mode=copy.copy_mode, restarts=copy.restarts, cleaned=copy.cleaned,
        warnings=copy.warnings, original_wal=original_wal,
        wal_ignored=found.summary() if original_wal else "")
    _write_manifest(result)
    return result


@contextlib.contextmanager
def _original_wal(database: Path, first: Path):
    """(staged copy, its walk) of the live -wal when SQLite ignores committed frames in it, else
    (None, nothing): copied before the backup checkpoints, after which a writer may overwrite them."""
    if not wal.ignored(database).transactions:
        yield None, wal.Walk()
        return
    with staging.Staged(first) as staged:
        with open(f"{database}-wal", "rb") as live, open(staged.path, "r+b") as out:
            shutil.copyfileobj(live, out, 1 << 20)
        found = wal.walk(staged.path)
        yield (staged if found.transactions else None), found


def _write_manifest(result: BackupResult) -> None:
    data = {
        "manifest_version": MANIFEST_VERSION,
        "source": str(result.database.resolve()),
        "backup": result.path.name,
        "created_at": result.created_at,
        "size": result.size,
        "digest": {"algorithm": result.digest.algorithm, "value": result.digest.value},
        "page_count": result.page_count,
        "journal_mode": result.journal_mode,
        "applied_migrations": result.applied_migrations,
        "integrity_check": result.integrity_check,
        "integrity": result.integrity,
        "sqlite_version": apsw.sqlite_lib_version(),
    }
    if result.original_wal:
        kept = digests.of_file(result.original_wal)
        data["original_wal"] = {"file": result.original_wal.name, "size": result.original_wal.stat().st_size,
                                "digest": {"algorithm": kept.algorithm, "value": kept.value},
                                "ignored_by_sqlite": result.wal_ignored}
    write_manifest(result.path, data)


def _backup_name(database: Path) -> re.Pattern:
    return re.compile(re.escape(database.name) + r"\.backup_(\d{8}_\d{6})(?:_(\d+))?")


def backups_of(database: Path, directory: Path | None = None) -> list[Path]:
    """This database's own backups in directory (default: beside it), oldest first.

    A file counts only if its name is one this tool gives, it is an SQLite
    file, and its manifest (if any) names this database as its source.
    """
    directory = Path(directory or Path(database).parent)
    pattern, found = _backup_name(Path(database)), []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and _is_own_backup(path, Path(database)):
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]


def _is_own_backup(path: Path, database: Path) -> bool:
    if path.is_symlink() or not path.is_file() or not sqlitefile.is_sqlite(path):
        return False
    try:
        manifest = read_manifest(path)
    except ValueError:
        return False
    return manifest is None or Path(str(manifest.get("source"))) == database.resolve()


def _prune(database: Path, directory: Path, keep: int, newest: Path) -> list[Path]:
    """Delete this tool's backups of database beyond the newest `keep` (never `newest`)."""
    # Only backups this tool made (their manifest names this database): a hand-made
    # `cp orchestra.db orchestra.db.backup_...` has the same name but is not ours to delete.
    older = [p for p in backups_of(database, directory) if p != newest and read_manifest(p)]
    doomed = older[:max(0, len(older) - (keep - 1))]
    for path in doomed:
        discard(path)
    return doomed


def check_backup(path: Path, full: bool = True) -> BackupCheck:
    """Is this a backup restore can trust? SQLite, matches its manifest, passes integrity."""
    path = Path(path)
    check = BackupCheck(path, ok=False, has_manifest=manifest_path(path).exists())
    if not path.is_file():
        check.problems.append("not found (or not a regular file)")
        return check
    if not sqlitefile.is_sqlite(path):
        check.problems.append("not an SQLite database (bad header)")
        return check
    check.problems += _manifest_problems(path, check)
    check.problems += _sidecar_problems(path)
    truncated = sqlitefile.truncation(path)
    if truncated:
        check.problems.append(truncated)
    try:
        conn = open_immutable(path)
    except apsw.Error as err:
        check.problems.append(f"cannot be opened: {err}")
        return check
    try:
        check.integrity = integrity_of(conn, integrity_pragma(full))
    finally:
        conn.close()
    if check.integrity != "ok":
        check.problems.append(f"fails its integrity check: {check.integrity}")
    check.ok = not check.problems
    return check


def trusted_backup(path: Path, database: Path, doing: str) -> BackupCheck:
    """check_backup for restore and recover: refuse (exit 2 or 5) unless it is ok."""
    path = Path(path)
    require_regular(path, "a backup", "give the path of a backup file")
    if not path.exists():
        raise UsageError(f"{path}: no such backup; check the path "
                         f"(backups are named {database.name}.backup_YYYYmmdd_HHMMSS)")
    if database.exists() and os.path.samefile(path, database):
        raise UsageError(f"{path}: is the live database itself, not a backup; nothing changed")
    check = check_backup(path)
    if not check.ok:
        raise Refused(f"{path}: {'; '.join(check.problems)}; refused to {doing} from it, "
                      f"{database} is unchanged; choose another backup")
    return check


def _sidecar_problems(path: Path) -> list[str]:
    """A backup is read as one file: a -wal or hot -journal beside it holds what it lacks."""
    problems = []
    for suffix in ("-wal", "-journal"):
        sidecar = Path(f"{path}{suffix}")
        if sidecar.exists() and sidecar.stat().st_size > 0:
            problems.append(f"{sidecar.name} beside it holds changes the file lacks (a live "
                            "database or a copied pair, not a backup); open it once with sqlite3 "
                            "to fold them in, or take backups with `orchestra-schema backup`")
    return problems


def _manifest_problems(path: Path, check: BackupCheck) -> list[str]:
    try:
        check.manifest = read_manifest(path)
    except ValueError as err:
        return [str(err)]
    if check.manifest is None:
        return []
    size = path.stat().st_size
    if check.manifest.get("size") != size:
        return [f"size {size} differs from its manifest's {check.manifest.get('size')}"]
    recorded = digests.in_manifest(check.manifest)
    if recorded is None:
        return ["its manifest records no digest"]
    try:
        found = digests.of_file(path, recorded.algorithm)
    except ValueError as err:
        return [f"its manifest's {err}"]
    if found.value != recorded.value:
        return [f"{recorded.algorithm} digest differs from its manifest "
                "(changed or damaged since the backup)"]
    return _original_wal_problems(path, check.manifest.get("original_wal"))


def _original_wal_problems(path: Path, kept) -> list[str]:
    """The -wal kept beside it holds commits the backup lacks: it must be there, unchanged."""
    if not isinstance(kept, dict):
        return []
    recorded = digests.in_manifest(kept)
    try:
        found = digests.of_file(original_wal_path(path), recorded.algorithm) if recorded else None
    except (OSError, ValueError) as err:
        return [f"{original_wal_path(path).name}, the -wal kept with it, is unreadable ({err})"]
    if found is None or found.value != recorded.value:
        return [f"{original_wal_path(path).name}, the -wal kept with it, differs from its manifest"]
    return []


def health(ctx: Context) -> str:
    """'missing', 'ok', or what is wrong with the live database (its quick_check)."""
    if not ctx.database.exists():
        return "missing"
    try:
        with ctx.open(readonly=True) as db:
            return integrity_of(db.connection, "quick_check")
    except DatabaseCorrupt as err:  # missing permissions and the like are not damage: raised
        return f"unreadable: {err.reason}"

