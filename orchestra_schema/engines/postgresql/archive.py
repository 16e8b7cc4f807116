"""PostgreSQL backups and restores: pg_dump's custom format, checked both ways.

backup: one psycopg transaction exports a snapshot; the history it reads for the
manifest and the archive pg_dump writes (--snapshot) are the same instant, while
the app keeps writing. The archive goes to a 0600 file under a temporary name in
the target directory (staging.Staged), is read back whole by `pg_restore --list`,
hashed, fsynced, and only then gets its name; the manifest beside it as on SQLite.

restore: the archive must match its manifest (size, digest) and read back; the
live database must not hold tables the archive lacks (they would survive beside
the restored ones). Then `pg_restore --clean --if-exists --single-transaction`:
what the archive creates is dropped and recreated in ONE transaction, so the app
sees the old database or the restored one, never a mix, and a failure (a cut-off
archive, a lock not granted) leaves everything as it was. Chosen over restoring
into a new database and renaming it: a rename needs every app session gone and
loses the database's own grants and settings; this works with the app connected
(its queries wait while the restore holds its locks) and into an empty database.

pg_dump and pg_restore get no secret on their command line, in their environment or
on disk (see client()), and end when this process ends, however it ends
(background.child); pg_restore's lock waits are cut at LOCK_TIMEOUT_MS by this process
and, should it die, by the server (client_connection_check_interval).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ... import background
from ...files import digest as digests, staging
from ...files.backups import (MANIFEST_VERSION, BackupResult, RestoreResult, manifest_path,
                              read_manifest, write_manifest)
from .driver import LOCK_TIMEOUT_MS, RETRY_PAUSE  # restore waits as rollback does
from ...errors import Busy, DatabaseUnavailable, Refused, UsageError

SUFFIX = ".dump"
FORMAT = "pg_dump custom (-Fc)"
CHECKS = {False: "pg_restore --list", True: "pg_restore (every block read)"}


# ---- the client programs and how they are given the address

def program(name: str) -> str:
    """pg_dump or pg_restore: on PATH, else the newest Debian-installed one."""
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
        None)
    if found is None:
        raise DatabaseUnavailable(f"{name}: not found; install the PostgreSQL client programs "
                                  "(Debian: postgresql-client-15) or put them on PATH")
    return found


def _escape_pgpass(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


CHECK_CLIENT_MS = 100  # how soon the server ends the session of a program that died


@contextlib.contextmanager
def client(address, server_version: int = 0, **extra: str):
    """(conninfo, environment, descriptors to pass) for a libpq program.

    No secret on its command line (ps), in its environment (/proc/PID/environ) or on
    any file system: the password (the address's, else $PGPASSWORD) goes in a passfile
    and sslpassword in a service file, both anonymous 0600 files in memory the child
    reads as /dev/fd/N, gone with their last descriptor however this process ends.
    Without a password libpq's own ways apply (~/.pgpass, PGPASSFILE). On a server that
    has it (14+), client_connection_check_interval ends the program's session soon
    after the program dies, even while it waits for a lock, so the app never queues
    behind an orphan.
    """
    from psycopg.conninfo import make_conninfo
    params = {**address.connect_kwargs(), **extra}
    secrets = {k: params.pop(k) for k in address.secrets()}
    password = secrets.pop("password", None) or os.environ.get("PGPASSWORD") or None
    env = background.child_env([v for v in (password, *secrets.values()) if v])
    fds: list[int] = []
    try:
        if password:
            fds.append(background.memory_file(
                "pgpass", f"*:*:*:*:{_escape_pgpass(password)}\n"))
            env["PGPASSFILE"] = background.fd_path(fds[-1])
        if secrets:  # a passfile holds only the password: the rest go in a service file
            service = params.get("service") or "orchestra-schema"
            lines = [f"[{service}]", *service_section(params.get("service")),
                     *(f"{k}={v}" for k, v in secrets.items())]
            fds.append(background.memory_file("pgservice", "\n".join(lines) + "\n"))
            env["PGSERVICEFILE"] = background.fd_path(fds[-1])
            params["service"] = service
        if server_version >= 140000:
            options = params.get("options") or os.environ.get("PGOPTIONS", "")
            params["options"] = (f"{options} -c client_connection_check_interval="
                                 f"{CHECK_CLIENT_MS}").strip()
        yield make_conninfo(**params), env, fds
    finally:
        for fd in fds:
            os.close(fd)


def service_files() -> list[Path]:
    """Where libpq looks a service up: the user's file, then the system's."""
    user = os.environ.get("PGSERVICEFILE") or Path.home() / ".pg_service.conf"
    system = Path(os.environ.get("PGSYSCONFDIR", "/etc/postgresql-common")) / "pg_service.conf"
    return [Path(user), system]


def service_section(name: str | None) -> list[str]:
    """The key=value lines of service NAME, from the first file that has it."""
    for path in service_files() if name else ():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            lines, inside = [], False
            for line in path.read_text().splitlines():
                line = line.strip()
                if line.startswith("["):
                    if inside:
                        break
                    inside = line == f"[{name}]"
                elif inside and "=" in line and not line.startswith("#"):
                    lines.append(line)
            if inside or lines:
                return lines
    return []


def _resolved(address, key: str, variable: str) -> str | None:
    """A parameter as libpq would find it: the address, its service, the environment."""
    found = address.get(key)
    if found is None and address.get("service"):
        found = next((ln.split("=", 1)[1].strip() for ln in service_section(address.get("service"))
                      if ln.split("=", 1)[0].strip() == key), None)
    return found or os.environ.get(variable) or None


def _scrub(text: str, address) -> str:
    """One line of a program's stderr, never with the password."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()] or lines
    line = errors[0] if errors else "no message"
    line = re.sub(r"^(pg_dump|pg_restore): (error: )?", "", line)
    for secret in address.secrets().values():
        line = line.replace(secret, "***")
    return line


def connect(address, timeout: float):
    """The PostgreSQL driver (its connection errors: one line, exit 6, no password)."""
    from .driver import PgDriver
    return PgDriver.connect(address, timeout=timeout)


# ---- what the manifest records

def database_name(address) -> str:
    return (_resolved(address, "dbname", "PGDATABASE") or _resolved(address, "user", "PGUSER")
            or "postgres")


def stamp(now: datetime) -> str:
    return now.strftime("%Y%m%d_%H%M%S")


@dataclass
class Archive:
    """A finished, checked archive and what its manifest says."""

    path: Path
    manifest: Path
    created_at: str
    size: int
    digest: digests.Digest
    applied_migrations: list[str]
    server_version: str
    toc_entries: int
    integrity_check: str
    cleaned: list[Path] = field(default_factory=list)


# ---- backup

def dump(address, names, timeout: float, now: datetime | None = None,
         read_all: bool = False) -> Archive:
    """pg_dump -Fc of one exported snapshot into the first free name of `names`.

    read_all (--full-check): pg_restore reads every data block back, not only the
    table of contents.
    """
    now = now or datetime.now(timezone.utc)
    names = iter(names)
    first = next(names)
    staging.check_writable_dir(first.parent, "backup")
    cleaned = staging.clean_stale(first.parent)  # what killed runs left
    with connect(address, timeout) as driver, \
            staging.Staged(first) as staged, staging.writing(first.parent, "backing up"):
        # The snapshot is needed until pg_dump has it all: the transaction (and the rows
        # it keeps from VACUUM) ends before the archive is read back.
        with driver.read_transaction("backing up"):
            conn = driver.conn
            snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            applied = list(driver.applied())
            server_version = conn.execute("SHOW server_version").fetchone()[0]
            _run_pg_dump(address, snapshot_id, staged, timeout, conn.info.server_version)
        entries, size, digest = _read_back(address, staged, read_all)
        path = staged.publish([first, *names], synced=True)
    archive = Archive(path, manifest_path(path), now.isoformat(timespec="microseconds"), size,
                      digest, applied, server_version, len(entries), CHECKS[read_all],
                      cleaned)
    _write_manifest(archive, address)
    return archive


def _run_pg_dump(address, snapshot_id: str, staged: staging.Staged, timeout: float,
                 server_version: int) -> None:
    # pg_dump writes to our 0600 descriptor (seekable, so the archive carries data
    # offsets and pg_restore -j works); it waits for table locks at most --timeout.
    with client(address, server_version) as (conninfo, env, fds):
        done = background.run_child(
            [program("pg_dump"), "--format=custom", "--no-password", f"--snapshot={snapshot_id}",
             f"--lock-wait-timeout={max(1, int(timeout * 1000))}", f"--dbname={conninfo}"],
            stdout=staged.fd, env=env, pass_fds=fds)
    if done.returncode != 0:
        why = _scrub(done.stderr, address)
        if "could not obtain lock" in done.stderr:
            raise Busy(f"{address.display}: pg_dump waited past --timeout for a table lock "
                       f"({why}); no backup was written; retry later or raise --timeout")
        if "No space left" in done.stderr:
            raise DatabaseUnavailable(f"{staged.directory}: full while writing the backup; no "
                                      "backup was written; free space or choose another --dir")
        raise DatabaseUnavailable(f"{address.display}: pg_dump failed: {why}; no backup was "
                                  "written and the database is unchanged")


def _read_back(address, staged: staging.Staged, read_all: bool):
    """(table of contents, size, digest) of the finished archive, fsynced.

    pg_restore reads it back while a thread hashes it and another fsyncs it: one file
    in the page cache read three ways and written to the disk at once, not in turn.
    """
    synced = background.Task(staging.fsync, staged.path)
    hashed = background.Task(digests.of_file, staged.path)
    try:
        entries = read_toc(address, staged.path)
        if read_all:
            _read_whole(address, staged.path)
    finally:  # neither thread may outlive the file, which an error removes
        synced.join()
        hashed.join()
    synced.result()
    return entries, os.fstat(staged.fd).st_size, hashed.result()


TOC_LINE = re.compile(r"^\d+; \d+ \d+ (.+)$")


def read_toc(address, archive: Path) -> list[str]:
    """The archive's table of contents (pg_restore --list); Refused if it cannot be read."""
    done = background.run_child([program("pg_restore"), "--list", str(archive)],
                                env=background.child_env())
    if done.returncode != 0:
        raise Refused(f"{archive}: pg_restore cannot read it back ({_scrub(done.stderr, address)})"
                      "; not a whole pg_dump custom-format archive")
    return [m.group(1) for m in map(TOC_LINE.match, done.stdout.splitlines()) if m]


def _write_manifest(archive: Archive, address) -> None:
    data = {
        "manifest_version": MANIFEST_VERSION,
        "engine": "postgresql",
        "source": address.display,
        "database": database_name(address),
        "backup": archive.path.name,
        "format": FORMAT,
        "created_at": archive.created_at,
        "size": archive.size,
        "digest": {"algorithm": archive.digest.algorithm, "value": archive.digest.value},
        "applied_migrations": archive.applied_migrations,
        "server_version": archive.server_version,
        "toc_entries": archive.toc_entries,
        "integrity_check": archive.integrity_check,
        "integrity": "ok",
    }
    write_manifest(archive.path, data)


def backup_pattern(address) -> re.Pattern:
    return re.compile(re.escape(database_name(address)) + r"\.backup_(\d{8}_\d{6})(?:_(\d+))?"
                      + re.escape(SUFFIX))


def backups_of(address, directory: Path) -> list[Path]:
    """This database's archives in directory, oldest first: named as this tool names
    them and, for pruning, with a manifest naming this database."""
    pattern, found = backup_pattern(address), []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and path.is_file() and not path.is_symlink():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]


def prune(address, directory: Path, keep: int, newest: Path) -> list[Path]:
    """Delete this tool's archives of this database beyond the newest `keep`."""
    def ours(path: Path) -> bool:
        try:
            manifest = read_manifest(path)
        except ValueError:
            return False
        return bool(manifest) and manifest.get("source") == address.display
    older = [p for p in backups_of(address, directory) if p != newest and ours(p)]
    doomed = older[:max(0, len(older) - (keep - 1))]
    for path in doomed:
        manifest_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return doomed


# ---- checking an archive before trusting it

@dataclass
class ArchiveCheck:
    path: Path
    ok: bool
    has_manifest: bool
    problems: list[str] = field(default_factory=list)
    manifest: dict | None = None
    toc: list[str] = field(default_factory=list)


def check_archive(address, path: Path, read_all: bool = False) -> ArchiveCheck:
    """Size and digest against the manifest, and the table of contents read back.

    read_all (or no manifest to vouch for the bytes): pg_restore reads every data
    block too, so an archive cut off after its table of contents is found.
    """
    path = Path(path)
    check = ArchiveCheck(path, ok=False, has_manifest=manifest_path(path).exists())
    if not path.is_file():
        check.problems.append("not found (or not a regular file)")
        return check
    try:
        check.manifest = read_manifest(path)
    except ValueError as err:
        check.problems.append(str(err))
    if check.manifest is not None:
        size = path.stat().st_size
        if check.manifest.get("size") != size:
            check.problems.append(f"size {size} differs from its manifest's "
                                  f"{check.manifest.get('size')} (cut off or changed)")
        elif (recorded := digests.in_manifest(check.manifest)) is None:
            check.problems.append("its manifest records no digest")
        elif digests.of_file(path, recorded.algorithm).value != recorded.value:
            check.problems.append(f"{recorded.algorithm} digest differs from its manifest "
                                  "(changed or damaged since the backup)")
    if check.problems:
        return check
    try:
        check.toc = read_toc(address, path)
        if read_all or check.manifest is None:
            _read_whole(address, path)
    except Refused as err:
        check.problems.append(str(err).split(": ", 1)[1])
    check.ok = not check.problems
    return check


def _read_whole(address, path: Path) -> None:
    done = background.run_child([program("pg_restore"), "--file=/dev/null", str(path)],
                                env=background.child_env())
    if done.returncode != 0:
        raise Refused(f"{path}: pg_restore cannot read it whole ({_scrub(done.stderr, address)})")


# ---- restore

def archive_tables(toc: list[str]) -> set[tuple[str, str]]:
    """(schema, table) of every TABLE entry of a table of contents."""
    out = set()
    for entry in toc:
        match = re.match(r"TABLE (\S+) (.+) \S+$", entry)
        if match:
            out.add((match.group(1), match.group(2)))
    return out


LIVE_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')"""


def tables_not_in(conn, toc: list[str]) -> list[str]:
    """Live tables the archive does not create: a restore would leave them beside its own."""
    archived = archive_tables(toc)
    return sorted(f"{s}.{t}" for s, t in conn.execute(LIVE_TABLES).fetchall()
                  if (s, t) not in archived)


def restore_list(conn, toc_text: str) -> str:
    """The archive's list without the extensions the database already has: dropping and
    creating them again needs their owner (a superuser) and changes nothing."""
    installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    kept = []
    for line in toc_text.splitlines():
        entry = TOC_LINE.match(line)
        ext = entry and re.match(r"(?:EXTENSION|COMMENT) - (?:EXTENSION )?(\S+) ", entry.group(1))
        if ext and ext.group(1) in installed:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def pg_restore(address, archive: Path, conn, timeout: float) -> None:
    """Drop what the archive creates and create it again, in one transaction.

    The archive's own script sets lock_timeout to 0, so pg_restore would wait for a
    table the app holds for ever, and the app's later queries on it would queue
    behind it. So this session watches pg_restore's: a lock it has waited for longer
    than LOCK_TIMEOUT_MS (rollback's) is cancelled (its transaction rolls back, nothing
    changed) and the restore is tried again after a pause, until --timeout; then exit 3.
    Should this process die, pg_restore dies with it and the server ends its session
    (client()), rolling back: the database is as it was or as restored.
    """
    toc_text = background.run_child([program("pg_restore"), "--list", str(archive)],
                                    env=background.child_env()).stdout
    deadline = time.monotonic() + timeout
    name = f"orchestra-schema restore {os.getpid()} {time.monotonic_ns()}"
    listing = background.memory_file("restore-list", restore_list(conn, toc_text))
    try:
        with client(address, conn.info.server_version, application_name=name) as (
                conninfo, env, fds):
            while True:
                if _restore_once(address, archive, conn, name, conninfo, env, [*fds, listing]):
                    return
                if time.monotonic() + RETRY_PAUSE > deadline:
                    raise Busy(f"{address.display}: a table stayed locked by another session "
                               "(the app?) past --timeout; the restore was rolled back and "
                               "nothing changed; stop the app or raise --timeout")
                time.sleep(RETRY_PAUSE)
    finally:
        os.close(listing)


def _restore_once(address, archive: Path, conn, name: str, conninfo: str, env, fds) -> bool:
    """One pg_restore in one transaction: True if it committed, False if a lock wait
    of its was cancelled (rolled back: try again)."""
    with background.child(
            [program("pg_restore"), "--clean", "--if-exists", "--single-transaction",
             "--exit-on-error", "--no-owner", "--no-password",
             f"--use-list={background.fd_path(fds[-1])}", f"--dbname={conninfo}", str(archive)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, pass_fds=fds, text=True) as proc:
        cancelled = _cancel_lock_waits(conn, proc, name)
        stderr = proc.stderr.read()
        if proc.wait() == 0:
            return True
    if not cancelled:
        raise DatabaseUnavailable(
            f"{address.display}: pg_restore failed ({_scrub(stderr, address)}); its "
            "transaction was rolled back and the database is unchanged")
    return False


_WAITING_TOO_LONG = """
SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.application_name = %s AND NOT l.granted
  AND l.waitstart < clock_timestamp() - make_interval(secs => %s)"""


def _cancel_lock_waits(conn, proc: subprocess.Popen, name: str) -> bool:
    """Until proc ends: cancel its session's statement once it has waited for a lock
    longer than LOCK_TIMEOUT_MS. True if it was cancelled."""
    while proc.poll() is None:
        if any(r[0] for r in conn.execute(_WAITING_TOO_LONG,
                                          (name, LOCK_TIMEOUT_MS / 1000)).fetchall()):
            proc.wait()
            return True
        time.sleep(0.02)
    return False


# ---- the commands' PostgreSQL side (backup.backup, restore.restore dispatch here)

def archive_names(directory: Path, address, kind: str, now: datetime):
    """DBNAME.KIND_YYYYmmdd_HHMMSS.dump, then _2, _3 ... for more in one second."""
    base = f"{database_name(address)}.{kind}_{stamp(now)}"
    yield directory / f"{base}{SUFFIX}"
    for n in range(2, 10_000):
        yield directory / f"{base}_{n}{SUFFIX}"


def backup_database(ctx, output: Path | None = None, directory: Path | None = None,
                    keep: int | None = None, full_check: bool = False, kind: str = "backup"):
    """The backup command on PostgreSQL; returns backup.BackupResult (SQLite's keys)."""
    now = datetime.now(timezone.utc)
    if output is not None:
        if Path(output).is_dir():
            raise UsageError(f"{output}: is a directory; give --output a file name, or use --dir")
        if Path(output).exists():
            raise Refused(f"{output}: already exists; nothing changed; choose another --output")
        target, names = Path(output).parent, iter([Path(output)])
    else:
        target = Path(directory or default_directory(ctx))
        names = archive_names(target, ctx.database, kind, now)
    archive = dump(ctx.database, names, ctx.timeout, now, read_all=full_check)
    result = BackupResult(
        database=ctx.database.display, path=archive.path, manifest=archive.manifest,
        created_at=archive.created_at, size=archive.size, digest=archive.digest, page_count=None,
        integrity="ok", integrity_check=CHECKS[full_check],
        applied_migrations=archive.applied_migrations, journal_mode=None, copy_mode="pg_dump",
        restarts=0, cleaned=archive.cleaned)
    if keep is not None:
        result.deleted = prune(ctx.database, target, keep, archive.path)
    return result


def default_directory(ctx) -> Path:
    """--backup-dir / $ORCHESTRA_BACKUP_DIR when given, else the current directory."""
    return ctx.backups


def backed_up_database(manifest: dict | None) -> str | None:
    """The database a manifest says its archive was taken from."""
    if not manifest:
        return None
    if manifest.get("database"):
        return manifest["database"]
    from urllib.parse import unquote, urlsplit  # manifests older than the "database" key
    source = urlsplit(str(manifest.get("source") or ""))
    return unquote(source.path.lstrip("/")) or None


def _refuse_another_database(address, archive: Path, manifest, yes: bool) -> None:
    """Another database's archive replaces what this one holds only with --yes (an empty
    database, a new server's, has nothing to lose: it needs none)."""
    theirs, ours = backed_up_database(manifest), database_name(address)
    if theirs and theirs != ours and not yes:
        raise Refused(f"{archive}: its manifest says it is a backup of database {theirs}, not "
                      f"{ours}; nothing changed; rerun with --yes to restore it into {ours}")


def restore_database(ctx, archive: Path, make_backup: bool = True, yes: bool = False):
    """The restore command on PostgreSQL; returns restore.RestoreResult (SQLite's keys)."""
    address, archive = ctx.database, Path(archive)
    if not archive.exists():
        raise UsageError(f"{archive}: no such backup; check the path (backups are named "
                         f"{database_name(address)}.backup_YYYYmmdd_HHMMSS{SUFFIX})")
    check = check_archive(address, archive)
    if not check.ok:
        raise Refused(f"{archive}: {'; '.join(check.problems)}; refused to restore from it, "
                      f"{address.display} is unchanged; choose another backup")
    result = RestoreResult(address.display, archive, None, "ok", check.has_manifest, [],
                           "pg_restore")
    with connect(address, ctx.timeout) as driver:
        conn = driver.conn
        extra = tables_not_in(conn, check.toc)
        if extra:
            raise Refused(
                f"{address.display}: holds table(s) the backup lacks ({', '.join(extra)}), which "
                "a restore would leave beside the restored ones; nothing changed; roll back "
                "what created them first, or restore into an empty database")
        holds_tables = conn.execute(LIVE_TABLES).fetchone() is not None
        _refuse_another_database(address, archive, check.manifest, yes or not holds_tables)
        if make_backup and holds_tables:
            result.backup = backup_database(ctx, kind="pre-restore").path
        pg_restore(address, archive, conn, ctx.timeout)
        result.integrity = "ok"  # pg_restore committed every object and row of the archive
        result.applied_migrations = list(driver.applied())
    if not check.has_manifest:
        result.warnings.append(f"{archive}: no manifest; trusted because pg_restore read it whole")
    return result
