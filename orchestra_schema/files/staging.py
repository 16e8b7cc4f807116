"""Files that must never be seen half-written: staged names, fsync, links, and where they go.

A new file is created 0600 under a temporary name in its final directory,
filled, fsynced, and published by a hard link (which, unlike rename, never
replaces an existing file), then the directory is fsynced. Its writer holds an
flock on it for its whole life; the kernel drops that lock when the writer
dies, so a later run removes exactly the leftovers of killed runs (a pid in
the name would not do: pids repeat across containers and hosts).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import apsw

from ..errors import DatabaseUnavailable, Refused
from .paths import SIDECARS

TEMP_MARK = ".orchestra-tmp-"
_TEMP_NAME = re.compile(r"(\..+\.orchestra-tmp-\d+-[0-9a-f]{8})(?:-journal|-wal|-shm)?")


class Staged:
    """A new 0600 file beside `final`, flock-held while alive, removed on exit unless published.

    Leftovers of killed runs are not its business: callers that write big
    files there call clean_stale first, and report what it removed.
    """

    def __init__(self, final: Path):
        self.directory = Path(final).parent
        while True:  # os.urandom, not secrets: that module loads OpenSSL (a few ms per run)
            self.path = self.directory / f".{Path(final).name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # "a writer is alive": see clean_stale
            # Another run's clean_stale may have found the file between its creation
            # and our lock, unlocked, and removed it: then take another name.
            if _still_named(self.path, self._fd):
                break
            os.close(self._fd)
        os.fchmod(self._fd, 0o600)  # a umask cannot widen 0600, but could make it unusable

    @property
    def fd(self) -> int:
        """A descriptor open on the file (to fdatasync it while SQLite writes it)."""
        return self._fd

    def publish(self, names: Iterable[Path], synced: bool = False) -> Path:
        """fsync (unless the caller did, after its last write), then give the file the
        first name in `names` that is free."""
        if not synced:
            fsync(self.path)
        final = None
        for final in names:
            if _link(self.path, Path(final)):
                fsync(self.directory)
                return Path(final)
        if final is None:
            raise ValueError("publish() needs at least one name")
        raise Refused(f"{final}: appeared while this run was writing it (another process "
                      "created it); left as it is, and this run's copy removed")

    def swap_in(self, live: Path, aside: Path) -> list[Path]:
        """Make this file `live`, keeping the old one (and its -wal/-shm) as `aside`.

        At every instant `live` names the old file or the new one: the old one
        gets its second name by a hard link, then the new one replaces it with
        one rename. Its -wal/-shm are moved aside first, because an old WAL
        beside the new file would be replayed into it.
        """
        fsync(self.path)
        target = next(t for t in unique_names(aside)
                      if not any(os.path.lexists(f"{t}{s}") for s in ("",) + SIDECARS))
        if not _link(live, target):
            raise Refused(f"{target}: appeared meanwhile; nothing changed")
        moved = [target]
        for suffix in SIDECARS:
            if os.path.lexists(f"{live}{suffix}"):
                os.rename(f"{live}{suffix}", f"{target}{suffix}")
                moved.append(Path(f"{target}{suffix}"))
        os.replace(self.path, live)
        fsync(self.directory)
        return moved

    def discard(self) -> None:
        for suffix in ("",) + SIDECARS:
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()  # after publish this only drops the temporary second name
        os.close(self._fd)


def _link(source: Path, final: Path) -> bool:
    try:
        os.link(source, final)
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    # No hard links on this file system: rename, which would replace, so look first.
    if os.path.lexists(final):
        return False
    os.rename(source, final)
    return True


def _still_named(path: Path, fd: int) -> bool:
    """Does path still name the file open on fd?"""
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def unique_names(base: Path) -> Iterator[Path]:
    """base, base_2, base_3, ...: two backups in one second get different names."""
    yield base
    for n in range(2, 10_000):
        yield base.with_name(f"{base.name}_{n}")


def clean_stale(directory: Path) -> list[Path]:
    """Remove temporary files no live writer holds (left by killed runs)."""
    cleaned = []
    with contextlib.suppress(OSError):
        for path in sorted(directory.iterdir()):
            match = _TEMP_NAME.fullmatch(path.name)
            if not match:
                continue
            with _abandoned(directory / match.group(1)) as abandoned:
                if abandoned:
                    path.unlink(missing_ok=True)
                    cleaned.append(path)
    return cleaned


@contextlib.contextmanager
def _abandoned(staged: Path):
    """True, holding its flock, if no live writer holds this staged file (or it is gone).

    The caller removes it under that lock: a writer that has created the file
    but not yet locked it waits, then finds its name gone and takes another
    (Staged); removed after the lock was let go, it could be the writer's by then.
    """
    try:
        fd = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # also drops the lock if we got it


@contextlib.contextmanager
def writing(directory: Path, doing: str):
    """Turn a failed write (full disk, permissions) into one line that says nothing was lost."""
    try:
        yield
    except (apsw.FullError, apsw.IOError, apsw.CantOpenError, apsw.PermissionsError,
            apsw.ReadOnlyError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise DatabaseUnavailable(
            f"{directory}: cannot write while {doing} ({reason}); the database is unchanged "
            "and no partial file was left; free space, fix permissions or choose --dir"
        ) from err


def write_atomically(path: Path, text: str) -> None:
    with Staged(path) as staged:
        with open(staged.path, "w") as f:
            f.write(text)
        fsync(staged.path)
        os.replace(staged.path, path)
        fsync(path.parent)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno != errno.EINVAL:  # some file systems cannot fsync a directory
            raise
    finally:
        os.close(fd)


def check_writable_dir(directory: Path, what: str) -> None:
    if not directory.is_dir():  # exit 6, as unwritable: a place to write is missing, not a bad option
        raise DatabaseUnavailable(f"{directory}: no such directory for the {what}; nothing changed; "
                                  "create it or choose another")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(
            f"{directory}: not writable, cannot write the {what}; nothing changed; "
            "fix its permissions or choose another directory")


def check_free_space(directory: Path, needed: int) -> None:
    st = os.statvfs(directory)  # as shutil.disk_usage counts it, without importing shutil
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise DatabaseUnavailable(
            f"{directory}: {free // 2**20} MiB free, about {needed // 2**20 + 1} MiB needed; "
            "nothing was written; free space or choose another directory")


def copy_owner_and_mode(model: Path, path: Path) -> None:
    """Give path model's mode and (when allowed) owner: the application must still open it."""
    st = model.stat()
    with contextlib.suppress(PermissionError):
        os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)


def aside_name(database: Path, kind: str, now) -> Path:
    """Where a replaced database is kept: DB.KIND_YYYYmmdd_HHMMSS (UTC) beside it."""
    return database.with_name(f"{database.name}.{kind}_{stamp(now)}")


def stamp(now) -> str:
    """UTC time in backup and aside names: sorts as it reads."""
    return now.strftime("%Y%m%d_%H%M%S")
