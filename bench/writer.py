"""Writer stall: how long the application's commits wait while a backup runs.

Run as a script, this is the stand-in for the Orchestra API and Hangfire: it
commits one small transaction (BEGIN IMMEDIATE, one INSERT, COMMIT, SQLite's
default synchronous setting) every PAUSE_MS, with a 60 s busy timeout so a
blocked commit waits instead of failing, and on SIGTERM writes each commit's
start time (time.monotonic, the same clock in every process) and latency.

    python bench/writer.py DB OUT.json PAUSE_MS
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
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
    during: list[float]  # latencies of commits that overlapped the backup


def measure(db: Path, contender: Contender, paths: Paths, baseline_s: float,
            timeout_s: float, pause_ms: float) -> StallRun:
    """Start the writer, let it run alone, run the backup beside it, stop it."""
    log = paths.out.with_suffix(".writer.json")
    writer = subprocess.Popen([sys.executable, __file__, str(db), str(log), str(pause_ms)])
    try:
        time.sleep(baseline_s)
        began = time.monotonic()
        backup = contender.run(paths, timeout=timeout_s)
        ended = time.monotonic()
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
        [lat for start, lat in pairs if warm <= start and start + lat < began],
        [lat for start, lat in pairs if start < ended and start + lat > began],
    )


if __name__ == "__main__":
    writer_main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
