"""Backup files, for every engine: their manifests (JSON beside each backup), the results
a backup command returns, and what a command does with the backup it took first when it stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Busy, DatabaseUnavailable, OrchestraError, Refused
from . import digest as digests, staging
from .paths import read_regular

MANIFEST_VERSION = 2  # 2: "digest" {algorithm, value}; 1 had "sha256"
_NOT_OURS = "move it out of the way (this tool writes manifests as regular files)"


@dataclass
class BackupResult:
    database: Path
    path: Path
    manifest: Path
    created_at: str  # UTC, ISO 8601
    size: int
    digest: digests.Digest
    page_count: int
    integrity: str  # "ok", or what the check found
    integrity_check: str  # "quick_check" or "integrity_check"
    applied_migrations: list[str]
    journal_mode: str
    # "raw" (the file's bytes, held still), else SQLite's backup API: "incremental"
    # (writers ran between steps) or "snapshot" (one read transaction)
    copy_mode: str
    restarts: int  # incremental copies restarted by a writer's commit
    deleted: list[Path] = field(default_factory=list)  # older backups removed by --keep
    cleaned: list[Path] = field(default_factory=list)  # temporary files of killed runs removed
    warnings: list[str] = field(default_factory=list)  # e.g. the live disk is full
    original_wal: Path | None = None  # the live -wal as it was, kept when SQLite ignores commits in it
    wal_ignored: str = ""  # what SQLite ignores there (wal.Walk.summary)


@dataclass
class BackupCheck:
    path: Path
    ok: bool
    has_manifest: bool
    problems: list[str] = field(default_factory=list)
    integrity: str = "not checked"
    manifest: dict | None = None


def original_wal_path(backup_path: Path) -> Path:
    """Where the live -wal is kept beside a backup: not NAME-wal, which SQLite would replay."""
    return Path(f"{backup_path}.original-wal")


def settle(backup_path: Path | None, err: OrchestraError, changed: bool) -> Path | None:
    """A command stopped after the backup it took first: drop the backup when the stop
    changed nothing (busy or refused: the database is as the backup has it, the copy is
    only clutter, as restore discards its own); else keep it and name it in the error
    (under -q the error is the only place its path is printed). Returns what is kept."""
    if backup_path is None:
        return None
    if isinstance(err, (Busy, Refused)) and not changed:
        discard(backup_path)
        return None
    err.args = (f"{err}; kept the backup taken first: {backup_path}",)
    return backup_path


def discard(backup_path: Path) -> None:
    """Remove a backup this run made and no longer needs, with its manifest."""
    manifest_path(backup_path).unlink(missing_ok=True)
    original_wal_path(backup_path).unlink(missing_ok=True)
    Path(backup_path).unlink(missing_ok=True)


def manifest_path(backup_path: Path) -> Path:
    return Path(f"{backup_path}.json")


def write_manifest(backup_path: Path, data: dict) -> None:
    """The manifest beside a finished backup; if it cannot be written, no backup either."""
    manifest = manifest_path(backup_path)
    try:
        staging.write_atomically(manifest, json.dumps(data, indent=2) + "\n")
    except OSError as err:
        Path(backup_path).unlink(missing_ok=True)  # a backup is promised with its manifest
        original_wal_path(backup_path).unlink(missing_ok=True)
        raise DatabaseUnavailable(
            f"{manifest}: cannot write the manifest ({err.strerror}); the backup was "
            "removed and the database is unchanged; free space or choose --dir") from err


def read_manifest(backup_path: Path) -> dict | None:
    """The manifest beside a backup; None if there is none. Raises ValueError if unreadable,
    DatabaseUnavailable (exit 6) if not a regular file."""
    path = manifest_path(backup_path)
    try:  # a FIFO in its place is refused (exit 6), never waited on
        data = json.loads(read_regular(path, "a backup manifest", _NOT_OURS))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"manifest {path.name} is unreadable ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"manifest {path.name} is not a JSON object")
    return data


@dataclass
class RestoreResult:
    database: Path
    restored_from: Path
    backup: Path | None  # the safety copy made first (pre-restore_ or corrupted_)
    live_integrity: str  # before the restore: "ok", "missing", or what was wrong
    has_manifest: bool
    schema_differences: list[str]  # the backup compared with the live database
    method: str  # "backup-api" (into the live database) or "replaced" (damaged or missing file)
    integrity: str = "not checked"  # of the live database afterwards (quick_check)
    applied_migrations: list[str] = field(default_factory=list)
    moved_aside: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
