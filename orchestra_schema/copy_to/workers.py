"""Copy workers: processes making COPY rows side by side, all reading one snapshot.

Converting a row is SQLite and md5 work that holds the GIL, so threads would only take
turns; each worker is a process with its own read-only connection to the source, and
makes the rows of every Nth rowid range (copy_lines.Lines). The main process sends
each piece to PostgreSQL as it arrives and knows which rows it holds, so a value COPY
rejects is still named by its row.

One snapshot. Readers in several processes see the same state of the file if no other
connection commits between the first one's BEGIN and the last one's. `PRAGMA
data_version` on a probe connection, read before and after, differs if one did
(sqlite.org/pragma.html#pragma_data_version); then everyone rolls back and tries again.
Read-only connections only, in both journal modes. In rollback-journal mode a writer
waiting to commit keeps new readers out until the readers already in leave, so a reader
that cannot begin within BEGIN_WAIT makes everyone leave and try again (else the writer
and the copy would wait for each other until --timeout).

A worker ends with the main process: its orders come on stdin (EOF ends it) and its
lines go to a pipe (a write after the main process died fails with EPIPE, and ends it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import apsw

from .. import background, errors
from . import values as pg_values
from .lines import Lines, Piece, Select
from ..engines.sqlite.database import Database, begin_snapshot, connect, translated

ATTEMPTS = 5  # tries at a moment with no commit between the first BEGIN and the last
BEGIN_WAIT = 0.2  # seconds a reader waits to begin while the others hold their snapshot
CHUNK_ROWIDS = 4096  # rowids per range: about 1 MB of chat lines, small enough to keep both busy
PIPE_BYTES = 1 << 20  # a piece fits the pipe whole (Linux; the default 64 KiB works, slower)
# frames: kind, range (chunk) number, rows, offset of the first row in the range, payload size
HEADER = struct.Struct(">cIIQQ")
READY, BEGUN, BUSY, ROLLED, DATA, DONE, FAILED = b"R", b"B", b"W", b"X", b"D", b"C", b"E"


class Workers:
    """The main process's side: started, told what to read, read from."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs
        self.next = list(range(len(procs)))  # the chunk each worker sends next
        self.starts: list[int] = []  # each chunk's first rowid

    @classmethod
    def start(cls, source: Path, timeout: float, count: int) -> "Workers":
        # The same code as ours: `python -m` puts its working directory first on sys.path,
        # so it runs in our package's parent (not the user's, which may hold another copy),
        # with that first on PYTHONPATH too (PYTHONSAFEPATH leaves the directory out).
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        env = background.child_env(PYTHONPATH=os.pathsep.join(  # no address, no password
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        procs = []
        try:
            for _ in range(count):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "orchestra_schema.copy_to.workers"], cwd=package_root,
                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0))
                with contextlib.suppress(OSError):
                    fcntl.fcntl(procs[-1].stdout, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError as err:
            cls(procs).close()
            raise errors.DatabaseUnavailable(
                f"cannot start copy workers ({err}); nothing changed; rerun with --jobs 0") from None
        workers = cls(procs)
        workers.tell({"source": os.path.abspath(source), "timeout": timeout})
        return workers

    def tell(self, order, to: list[subprocess.Popen] | None = None) -> None:
        for proc in to or self.procs:
            try:
                proc.stdin.write(json.dumps(order).encode() + b"\n")
            except BrokenPipeError:
                _failed(proc)

    def expect(self, *kinds: bytes) -> list[bytes]:
        """Every worker's next frame, one of `kinds` (a worker's error is raised as ours)."""
        replies = [_frame(proc)[0] for proc in self.procs]
        for proc, kind in zip(self.procs, replies):
            if kind not in kinds:
                _failed(proc, broke=True)
        return replies

    def plan(self, tables: list[tuple[Select, int | None, int | None, int]]) -> list[range]:
        """Give out each table's rowid ranges, round robin: tables are (statement, lowest
        rowid, highest rowid, rows); returns each table's range numbers, in order."""
        orders: list[list] = [[] for _ in self.procs]
        shares = []
        for index, (_, low, high, rows) in enumerate(tables):
            first = len(self.starts)
            for start, end in _ranges(low, high, rows):
                chunk = len(self.starts)
                orders[chunk % len(self.procs)].append([index, chunk, start, end])
                self.starts.append(start)
            shares.append(range(first, len(self.starts)))
        selects = [[s.sql, s.cuts, s.limits] for s, _, _, _ in tables]
        for proc, chunks in zip(self.procs, orders):
            self.tell({"selects": selects, "chunks": chunks}, to=[proc])
        return shares

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    stream.close()


def _ranges(low: int | None, high: int | None, rows: int) -> list[tuple[int, int]]:
    """Rowid ranges of about CHUNK_ROWIDS rows: wider where rowids are sparse (deleted rows,
    a rowid set by hand), so there are never many more ranges than rows / CHUNK_ROWIDS."""
    if high is None or not rows:
        return []
    span = max(CHUNK_ROWIDS, -(-(high - low + 1) * CHUNK_ROWIDS // rows))
    return [(start, min(start + span - 1, high)) for start in range(low, high + 1, span)]


class Share:
    """The pieces of one table's rowid ranges, from whichever worker has one ready;
    `digest` and `cuts` are the table's once they are all read (copy_lines.Lines)."""

    def __init__(self, workers: Workers, chunks: range):
        self.workers, self.chunks, self.digest = workers, chunks, 0
        self._cuts: dict[int, list[list]] = {}

    @property
    def cuts(self) -> list[list]:
        return [cut for chunk in sorted(self._cuts) for cut in self._cuts[chunk]]

    def __iter__(self) -> Iterator[Piece]:
        workers = self.workers
        count = len(workers.procs)
        waiting = {p.stdout.fileno(): (i, p) for i, p in enumerate(workers.procs)
                   if workers.next[i] in self.chunks}
        while waiting:
            for fd in select.select(list(waiting), [], [])[0]:
                i, proc = waiting[fd]
                kind, chunk, rows, offset, payload = _frame(proc)
                if kind == DATA:
                    yield Piece(payload, rows, workers.starts[chunk], offset)
                elif kind == DONE and chunk == workers.next[i]:
                    done = json.loads(payload)
                    self.digest += done["digest"]
                    self._cuts[chunk] = done["cuts"]
                    workers.next[i] += count
                    if workers.next[i] not in self.chunks:
                        del waiting[fd]
                else:
                    _failed(proc, broke=True)


def _frame(proc: subprocess.Popen) -> tuple[bytes, int, int, int, bytes]:
    """One frame; a worker's error is raised here as the error it was."""
    head = _read_exact(proc, HEADER.size)
    kind, chunk, rows, offset, size = HEADER.unpack(head)
    payload = _read_exact(proc, size) if size else b""
    if kind == FAILED:
        failure = json.loads(payload)
        cls = getattr(errors, failure["kind"], None)
        if not (isinstance(cls, type) and issubclass(cls, errors.OrchestraError)):
            cls = errors.DatabaseUnavailable
        if cls is errors.DatabaseCorrupt:
            raise cls(failure["message"], failure["reason"])
        raise cls(failure["message"])
    return kind, chunk, rows, offset, payload


def _read_exact(proc: subprocess.Popen, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = proc.stdout.readinto(view[got:])
        if not n:
            _failed(proc)
        got += n
    return buffer


def _failed(proc: subprocess.Popen, broke: bool = False):
    """A worker that ended (its pipe closed), or broke protocol (then it is stopped): the
    copy fails."""
    if broke:
        proc.kill()
    code = proc.wait()
    raise errors.DatabaseUnavailable(
        f"a copy worker {'broke protocol (a bug: report it)' if broke else 'ended'} before "
        f"its work was done (exit code {code}); nothing committed; rerun (--jobs 0 copies in "
        "one process)")


# ---- one snapshot for all

@contextlib.contextmanager
def reading(src: Database, jobs: int, timeout: float) -> Iterator[Workers | None]:
    """`src` inside a read transaction, with `jobs` workers reading the same snapshot
    (None: no workers, because jobs is 0 or no quiet moment came to begin them all in)."""
    workers = Workers.start(src.path, timeout, jobs) if jobs else None
    try:
        if workers:
            workers.expect(READY)
        if not _begin_together(src, workers) and workers:
            workers.close()
            workers = None
        yield workers
    finally:
        if workers:
            workers.close()
        if not src.connection.get_autocommit():
            src.execute("ROLLBACK")  # nothing to keep, and COMMIT fails on a corrupt file


def _begin_together(src: Database, workers: Workers | None) -> bool:
    """Begin src's read transaction, and the workers' in the same snapshot if a moment
    comes when nobody commits (False: src's alone)."""
    if workers is None:
        begin_snapshot(src.connection)
        return False
    probe = connect(src.path, flags=apsw.SQLITE_OPEN_READONLY, timeout=BEGIN_WAIT)
    try:
        for _ in range(ATTEMPTS):
            before = _data_version(probe)
            begin_snapshot(src.connection)
            workers.tell("begin")
            if workers.expect(BEGUN, BUSY) == [BEGUN] * len(workers.procs) and (
                    before is not None and _data_version(probe) == before):
                return True
            workers.tell("rollback")
            workers.expect(ROLLED)
            src.execute("ROLLBACK")
            time.sleep(BEGIN_WAIT)  # a writer waiting to commit gets its turn
        begin_snapshot(src.connection)
        return False
    finally:
        probe.close()  # SQLite keeps the file open while src holds its locks


def _data_version(conn) -> int | None:
    """None: no read lock within BEGIN_WAIT (a writer is committing)."""
    try:
        return conn.execute("PRAGMA data_version").fetchone()[0]
    except apsw.BusyError:
        return None


# ---- the worker process

def main() -> None:
    out, orders = sys.stdout.fileno(), sys.stdin.buffer
    try:
        spec = json.loads(orders.readline())
        source = Path(spec["source"])
        with translated(source, "reading the source"):
            db = Database.open(source, timeout=spec["timeout"], readonly=True)
            pg_values.register(db.connection)
            _send(out, READY)
            for line in orders:
                _obey(db, json.loads(line), out, spec["timeout"])
    except errors.OrchestraError as err:
        failure = {"kind": type(err).__name__, "message": str(err),
                   "reason": getattr(err, "reason", None)}
        with contextlib.suppress(OSError):
            _send(out, FAILED, payload=json.dumps(failure).encode())
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the main process is gone, or the user stopped both


def _obey(db: Database, order, out: int, timeout: float) -> None:
    if order == "begin":
        db.connection.setbusytimeout(int(BEGIN_WAIT * 1000))
        try:
            begin_snapshot(db.connection)
            _send(out, BEGUN)
        except apsw.BusyError:
            _send(out, BUSY)
        finally:
            db.connection.setbusytimeout(int(timeout * 1000))
    elif order == "rollback":
        if not db.connection.getautocommit():
            db.execute("ROLLBACK")
        _send(out, ROLLED)
    else:
        selects = [Select(sql, cuts, tuple(map(tuple, limits)))
                   for sql, cuts, limits in order["selects"]]
        for index, chunk, start, end in order["chunks"]:
            lines = Lines(db.connection, selects[index], start, end)
            for piece in lines:
                _send(out, DATA, chunk, piece.rows, piece.offset, piece.data)
            _send(out, DONE, chunk,
                  payload=json.dumps({"digest": lines.digest, "cuts": lines.cuts}).encode())


def _send(fd: int, kind: bytes, chunk: int = 0, rows: int = 0, offset: int = 0,
          payload: bytes = b"") -> None:
    view = memoryview(HEADER.pack(kind, chunk, rows, offset, len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    main()
