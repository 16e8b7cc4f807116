"""Online backups through SQLite's backup API, their manifests, retention and checks.

A backup is written under a temporary name in its final directory, checked,
fsynced, and only then linked under its final name, so a killed or failed run
never leaves a partial file where a DBA would trust it; the next run removes
such leftovers. Files are 0600 from the moment they exist: backups hold every
chat message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import apsw

from . import files
from .commands import Context
from .database import Database, translated
from .engine import applied_migrations
from .errors import DatabaseUnavailable, Refused, UsageError

Progress = Callable[[int, int], None]  # (pages copied, pages in all)

STEP_PAGES = 1024  # 4 MiB at 4 KiB pages: a rollback-journal writer waits at most one step
MAX_RESTARTS = 3  # then copy under one read transaction so steady writers cannot starve us
MANIFEST_VERSION = 1


@dataclass
class BackupResult:
    database: Path
    path: Path
    manifest: Path
    created_at: str  # UTC, ISO 8601
    size: int
    sha256: str
    page_count: int
    integrity: str  # "ok", or what the check found
    integrity_check: str  # "quick_check" or "integrity_check"
    applied_migrations: list[str]
    journal_mode: str
    copy_mode: str  # "incremental" (writers ran between steps) or "snapshot" (one read transaction)
    restarts: int  # incremental copies restarted by a writer's commit
    deleted: list[Path] = field(default_factory=list)  # older backups removed by --keep
    cleaned: list[Path] = field(default_factory=list)  # temporary files of killed runs removed


@dataclass
class BackupCheck:
    path: Path
    ok: bool
    has_manifest: bool
    problems: list[str] = field(default_factory=list)
    integrity: str = "not checked"
    manifest: dict | None = None


def backup(ctx: Context, output: Path | None = None, directory: Path | None = None,
           keep: int | None = None, progress: Progress | None = None,
           full_check: bool = False) -> BackupResult:
    """Back ctx.database up online; returns where, and what the manifest records."""
    if output is not None and directory is not None:
        raise UsageError("give --output or --dir, not both")
    if keep is not None and keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 backup")
    target = Path(output).parent if output is not None else Path(directory or ctx.database.parent)
    files.check_writable_dir(target, "backup")
    if output is not None and Path(output).is_dir():
        raise UsageError(f"{output}: is a directory; give --output a file name, or use --dir")
    if output is not None and Path(output).exists():
        raise Refused(f"{output}: already exists; nothing changed; choose another --output")
    now = datetime.now(timezone.utc)
    names = ([Path(output)] if output is not None
             else files.unique_names(target / f"{ctx.database.name}.backup_{stamp(now)}"))
    result = _take(ctx, names, now, progress, full_check, "backing up")
    if keep is not None:
        result.deleted = _prune(ctx.database, target, keep, result.path)
    return result


def safety_copy(ctx: Context, kind: str, progress: Progress | None = None) -> BackupResult:
    """A backup named <db>.KIND_TIMESTAMP beside the database, before a destructive change."""
    files.check_writable_dir(ctx.database.parent, f"{kind} copy")
    now = datetime.now(timezone.utc)
    names = files.unique_names(ctx.database.parent / f"{ctx.database.name}.{kind}_{stamp(now)}")
    return _take(ctx, names, now, progress, False, f"making the {kind} copy")


def _take(ctx: Context, names, now: datetime, progress, full_check: bool, doing: str) -> BackupResult:
    """Copy, check and publish the backup under the first free name, then its manifest."""
    names = iter(names)
    first = next(names)
    with ctx.open(readonly=True) as db:
        files.check_free_space(first.parent, files.database_size(ctx.database))
        copy = copy_to_file(db.connection, ctx.database, _chain(first, names), progress=progress,
                            timeout=ctx.timeout, full_check=full_check, doing=doing)
    result = BackupResult(
        database=ctx.database, path=copy.path, manifest=manifest_path(copy.path),
        created_at=now.isoformat(timespec="seconds"), size=copy.size, sha256=copy.sha256,
        page_count=copy.page_count, integrity=copy.integrity, integrity_check=copy.integrity_check,
        applied_migrations=copy.applied_migrations, journal_mode=copy.journal_mode,
        copy_mode=copy.copy_mode, restarts=copy.restarts, cleaned=copy.cleaned)
    _write_manifest(result)
    return result


def discard(backup_path: Path) -> None:
    """Remove a backup this run made and no longer needs, with its manifest."""
    manifest_path(backup_path).unlink(missing_ok=True)
    Path(backup_path).unlink(missing_ok=True)


def stamp(now: datetime) -> str:
    return now.strftime("%Y%m%d_%H%M%S")


@dataclass
class Copy:
    path: Path
    size: int
    sha256: str
    page_count: int
    journal_mode: str
    integrity: str
    integrity_check: str
    applied_migrations: list[str]
    copy_mode: str
    restarts: int
    cleaned: list[Path]


def copy_to_file(src: apsw.Connection, source: Path, names, *, progress: Progress | None,
                 timeout: float, full_check: bool = False, doing: str,
                 mode_from: Path | None = None,
                 before_publish: Callable[[], None] | None = None) -> Copy:
    """Copy src's main database to a new file named by the first free name in `names`.

    The copy is checked before it gets its name; a bad one is discarded.
    mode_from: give the new file that file's owner and mode (a live database
    replaced by restore must stay usable by the application's user).
    before_publish: called once the copy is good, just before it gets its name.
    """
    names = iter(names)
    first = next(names)
    writing = files.writing(first.parent, doing)
    with translated(source, doing), writing, files.Staged(first) as staged:
        dest = apsw.Connection(str(staged.path))
        try:
            # The copy is discarded unless complete, so no journal and no syncs
            # until the one fsync before it is published.
            dest.execute("PRAGMA journal_mode = OFF").fetchall()
            dest.execute("PRAGMA synchronous = OFF")
            copy_mode, restarts = copy_pages(src, dest, progress, timeout, incremental=True)
        finally:
            dest.close()
        found = inspect(staged.path, full_check)
        if found.integrity != "ok":
            raise DatabaseUnavailable(
                f"{source}: the copy failed its {found.check} ({found.integrity}); no backup was "
                "written; the database itself is probably damaged: run `orchestra-schema recover`")
        if mode_from is not None:
            files.copy_owner_and_mode(mode_from, staged.path)
        if before_publish is not None:
            before_publish()
        path = staged.publish(_chain(first, names))
        return Copy(path, path.stat().st_size, files.sha256(path), found.page_count,
                    found.journal_mode, found.integrity, found.check, found.applied_migrations,
                    copy_mode, restarts, staged.cleaned)


def _chain(first: Path, rest: Iterator[Path]) -> Iterator[Path]:
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

    backup_step returns BUSY without calling the busy handler, so the wait is here.
    """
    waited, restarts, before = 0.0, 0, None
    while True:
        try:
            done = job.step(STEP_PAGES)
        except (apsw.BusyError, apsw.LockedError):
            if waited >= timeout:
                raise
            waited += files.pause()
            continue
        waited = 0.0
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


def inspect(path: Path, full: bool) -> Inspection:
    """Check a database file nobody writes to (a backup, a staged copy)."""
    check = "integrity_check" if full else "quick_check"
    conn = files.open_immutable(path)
    try:
        integrity = integrity_of(conn, check)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        try:
            applied = list(applied_migrations(Database(path, conn, readonly=True)))
        except apsw.Error:
            applied = []
    finally:
        conn.close()
    return Inspection(integrity, check, pages, files.journal_mode(path), applied)


def integrity_of(conn: apsw.Connection, check: str = "integrity_check") -> str:
    """'ok', or the first problems the check found, in one line."""
    try:
        lines = [row[0] for row in conn.execute(f"PRAGMA {check}(10)")]
    except apsw.Error as err:
        return f"unreadable: {err}"
    return "ok" if lines == ["ok"] else "; ".join(lines)


def manifest_path(backup_path: Path) -> Path:
    return Path(f"{backup_path}.json")


def _write_manifest(result: BackupResult) -> None:
    data = {
        "manifest_version": MANIFEST_VERSION,
        "source": str(result.database.resolve()),
        "backup": result.path.name,
        "created_at": result.created_at,
        "size": result.size,
        "sha256": result.sha256,
        "page_count": result.page_count,
        "journal_mode": result.journal_mode,
        "applied_migrations": result.applied_migrations,
        "integrity_check": result.integrity_check,
        "integrity": result.integrity,
        "sqlite_version": apsw.sqlite_lib_version(),
    }
    try:
        files.write_atomically(result.manifest, json.dumps(data, indent=2) + "\n")
    except OSError as err:
        result.path.unlink(missing_ok=True)  # a backup is promised with its manifest
        raise DatabaseUnavailable(
            f"{result.manifest}: cannot write the manifest ({err.strerror}); the backup was "
            "removed and the database is unchanged; free space or choose --dir") from err


def read_manifest(backup_path: Path) -> dict | None:
    """The manifest beside a backup; None if there is none. Raises ValueError if unreadable."""
    path = manifest_path(backup_path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"manifest {path.name} is unreadable ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"manifest {path.name} is not a JSON object")
    return data


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
    if path.is_symlink() or not path.is_file() or not files.is_sqlite(path):
        return False
    try:
        manifest = read_manifest(path)
    except ValueError:
        return False
    return manifest is None or Path(str(manifest.get("source"))) == database.resolve()


def _prune(database: Path, directory: Path, keep: int, newest: Path) -> list[Path]:
    """Delete this database's backups beyond the newest `keep` (never `newest`)."""
    older = [p for p in backups_of(database, directory) if p != newest]
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
    if not files.is_sqlite(path):
        check.problems.append("not an SQLite database (bad header)")
        return check
    check.problems += _manifest_problems(path, check)
    truncated = files.truncation(path)
    if truncated:
        check.problems.append(truncated)
    try:
        conn = files.open_immutable(path)
    except apsw.Error as err:
        check.problems.append(f"cannot be opened: {err}")
        return check
    try:
        check.integrity = integrity_of(conn, "integrity_check" if full else "quick_check")
    finally:
        conn.close()
    if check.integrity != "ok":
        check.problems.append(f"fails its integrity check: {check.integrity}")
    check.ok = not check.problems
    return check


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
    if check.manifest.get("sha256") != files.sha256(path):
        return ["SHA-256 differs from its manifest (changed or damaged since the backup)"]
    return []


def health(ctx: Context) -> str:
    """'missing', 'ok', or what is wrong with the live database (its quick_check)."""
    if not ctx.database.exists():
        return "missing"
    try:
        with ctx.open(readonly=True) as db:
            return integrity_of(db.connection, "quick_check")
    except DatabaseUnavailable as err:
        if isinstance(err.__cause__, (apsw.NotADBError, apsw.CorruptError)):
            return f"unreadable: {err.__cause__}"
        raise  # missing permissions and the like are not damage

