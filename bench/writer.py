"""Writer stall: how long the application's commits wait while a backup runs.

Run as a script, this is the stand-in for the Orchestra API and Hangfire: it
commits one small transaction (BEGIN IMMEDIATE, one INSERT, COMMIT, SQLite's
default synchronous setting) every PAUSE_MS, with a 60 s busy timeout so a
blocked commit waits instead of failing, and on SIGTERM writes each commit's
start time (time.monotonic, the same clock in every process) and latency.

    python bench/writer.py DB OUT.json PAUSE_MS
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

from contenders import Contender, Paths, Run


def writer_main(db: str, out: str, pause_ms: float) -> None:
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    conn = apsw.Connection(db)
    conn.setbusytimeout(60_000)
    starts, latencies = [], []
    while not stop:
        t0 = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute('INSERT INTO "HangFire.Counter" ("Key", "Value") VALUES (?, 1)',
                     ("stats:bench",))
        conn.execute("COMMIT")
        starts.append(t0)
        latencies.append(time.monotonic() - t0)
        time.sleep(pause_ms / 1000)
    conn.close()
    Path(out).write_text(json.dumps({"starts": starts, "latencies": latencies}))


@dataclass
class Stall:
    commits: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, latencies: list[float]) -> "Stall | None":
        if not latencies:
            return None
        ms = sorted(x * 1000 for x in latencies)

        def rank(q):  # nearest-rank percentile
            return ms[max(0, math.ceil(q * len(ms)) - 1)]
        return cls(len(ms), rank(0.5), rank(0.99), ms[-1])


@dataclass
class StallRun:
    backup: Run
    baseline: list[float]  # latencies of commits before the backup started
    during: list[float]  # latencies of commits that overlapped the backup's work
    window_from: str  # "first open": the backup's first open of the database; else "spawn"


IN_OPEN = 0x20


class FirstOpen:
    """The instant a file is first opened after arm(): inotify's IN_OPEN on its directory.

    The backup's work begins with its open of the database; its process's
    start-up (Python: about 0.1 s) before that is not the backup's doing, and
    commits made meanwhile would dilute the stall. Linux only: elsewhere `at` stays None.
    """

    def __init__(self, path: Path):
        self.name, self.at, self.armed = path.name.encode(), None, False
        self.lock, self.stop = threading.Lock(), threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = getattr(libc, "inotify_init1", lambda flags: -1)(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd >= 0 and libc.inotify_add_watch(self.fd, str(path.parent).encode(), IN_OPEN) < 0:
            os.close(self.fd)
            self.fd = -1
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "FirstOpen":
        if self.fd >= 0:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.fd >= 0:
            self.thread.join()
            os.close(self.fd)

    def arm(self) -> None:
        """From now on (the backup's process exists), an open of the file is its work beginning."""
        with self.lock:
            self._read()  # opens before this one (the harness's own) are not the backup's
            self.armed = True

    def _watch(self) -> None:
        while not self.stop.is_set():
            if select.select([self.fd], [], [], 0.05)[0]:
                with self.lock:
                    self._read()

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + 16 <= len(data):
            _, mask, _, size = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + size].rstrip(b"\0")
            offset += 16 + size
            if self.armed and self.at is None and mask & IN_OPEN and name == self.name:
                self.at = time.monotonic()


def measure(db: Path, contender: Contender, paths: Paths, baseline_s: float,
            timeout_s: float, pause_ms: float) -> StallRun:
    """Start the writer, let it run alone, run the backup beside it, stop it.

    The "during" window runs from the backup's first open of the database (its
    spawn where that cannot be watched) to its exit.
    """
    log = paths.out.with_suffix(".writer.json")
    writer = subprocess.Popen([sys.executable, __file__, str(db), str(log), str(pause_ms)])
    spawned = []
    try:
        time.sleep(baseline_s)
        with FirstOpen(db) as first_open:
            backup = contender.run(paths, timeout=timeout_s,
                                   on_spawn=lambda: (spawned.append(time.monotonic()), first_open.arm()))
            ended = time.monotonic()
        began = first_open.at or spawned[0]
        time.sleep(0.3)
    finally:
        writer.terminate()
        writer.wait(timeout=120)
    data = json.loads(log.read_text())
    log.unlink()
    pairs = list(zip(data["starts"], data["latencies"]))
    warm = pairs[0][0] + 0.5 if pairs else 0  # the first commits open the file: skip them
    return StallRun(
        backup,
        [lat for start, lat in pairs if warm <= start and start + lat < spawned[0]],
        [lat for start, lat in pairs if start < ended and start + lat > began],
        "first open" if first_open.at else "spawn",
    )


if __name__ == "__main__":
    writer_main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
