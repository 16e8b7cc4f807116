"""Index on a busy ChatMessages: the app's writer while an index is built, side by side.

    python bench/busy_index.py [--messages 500000 2000000] [--reps 3]

Starts a throwaway PostgreSQL cluster (tests/pgserver.py), and per size builds a database
the tool's `apply` made with that many chat messages. An app writer (one INSERT per
transaction, as fast as it can, in a thread with its own connection) runs throughout;
each contender builds the same index on ChatMessages("Author"), as a real process timed
from spawn to exit, alternating (A B C A B C); the index is dropped untimed between trials:

- `orchestra-schema apply` of a `-- transactional: false` migration with
  `CREATE INDEX CONCURRENTLY` (the tool);
- `psql -f` of the same index built plainly (`CREATE INDEX`): what blocks the app;
- `psql -c 'CREATE INDEX CONCURRENTLY ...'` typed by hand: the floor for a build that
  does not block.

Per contender: the build's median time, and the writer's worst and 99th-percentile insert
latency during the build (medians over the trials). Targets: the writer's worst stall
under the tool <= 0.1x under the plain build; the tool's build <= 1.1x the by-hand one.
Writes bench/results/busy-index.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import report  # noqa: E402
from busy_chat import Writer, fill  # noqa: E402
from contenders import program  # noqa: E402
from pgserver import PASSWORD, Cluster  # noqa: E402

CHAT = "20250927103132_AddChatTables"
INDEX_ID = "20261208000000_ChatMessagesAuthorIndex"
INDEX = "IX_ChatMessages_Author"
CONCURRENT = f'CREATE INDEX CONCURRENTLY "{INDEX}" ON "ChatMessages" ("Author");'
PLAIN = f'CREATE INDEX "{INDEX}" ON "ChatMessages" ("Author");'
TOOL, PSQL_PLAIN, BY_HAND = ("orchestra-schema apply (CONCURRENTLY)", "psql -f (plain CREATE INDEX)",
                             "psql -c CREATE INDEX CONCURRENTLY (by hand)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, nargs="+", default=[500_000, 2_000_000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--output", type=Path, default=HERE / "results" / "busy-index.md")
    return p.parse_args(argv)


def sql_dir(where: Path) -> Path:
    shutil.copytree(ROOT / "sql" / "postgresql", where)
    (where / f"{INDEX_ID}.sql").write_text(
        f"-- transactional: false\n-- depends: {CHAT}\n{CONCURRENT}\n")
    (where / f"{INDEX_ID}.rollback.sql").write_text(f'DROP INDEX CONCURRENTLY "{INDEX}";\n')
    (where.parent / "plain.sql").write_text(PLAIN + "\n")
    return where


def build(cluster, messages: int, tool: str, where: Path):
    db = cluster.new_database()
    subprocess.run([tool, "-q", "-d", db.url, "--sql-dir", where, "apply", "--to", CHAT],
                   check=True)
    fill(db, messages)
    return db


def contenders(tool: str, psql: str, db, where: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (argv, untimed reset)."""
    conninfo = f"host={db.cluster.socket_dir} port={db.cluster.port} dbname={db.name} user=orchestra"
    drop = [psql, "-X", "-q", "-d", conninfo, "-c", f'DROP INDEX IF EXISTS "{INDEX}"']
    return {
        TOOL: ([tool, "-q", "-d", db.url, "--sql-dir", str(where), "--timeout", "600", "apply",
                "--no-lint"],
               [tool, "-q", "-d", db.url, "--sql-dir", str(where), "rollback", "--only", INDEX_ID,
                "--yes", "--no-backup"]),
        PSQL_PLAIN: ([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f",
                      str(where.parent / "plain.sql")], drop),
        BY_HAND: ([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", CONCURRENT],
                  drop),
    }


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def measure(db, runs: dict, reps: int, say) -> dict:
    writer = Writer(db)
    writer.start()
    trials = {name: [] for name in runs}
    try:
        time.sleep(1)
        for rep in range(reps):
            for name, (argv, reset) in runs.items():
                began = time.perf_counter()
                subprocess.run(argv, check=True, env={**os.environ, "PGPASSWORD": PASSWORD})
                ended = time.perf_counter()
                time.sleep(0.3)  # the insert the build held back is appended by its thread
                during = writer.during(began, ended)
                trials[name].append({"seconds": ended - began, "worst": max(during),
                                     "p99": p99(during), "inserts": len(during)})
                say(f"  {rep + 1}/{reps} {name}: {ended - began:.2f} s, writer worst "
                    f"{max(during) * 1000:.0f} ms")
                subprocess.run(reset, check=True, env={**os.environ, "PGPASSWORD": PASSWORD})
                time.sleep(0.2)
    finally:
        writer.stop.set()
        writer.join()
    return {name: {key: statistics.median(t[key] for t in ts) for key in ts[0]}
            for name, ts in trials.items()} | {"_trials": trials}


def render(results: dict, env: dict) -> str:
    lines = ["### Index on a busy ChatMessages", "",
             f"{env['date_utc']}, {env['cpu']}, {env['cpus']} cores, PostgreSQL {env['server']}, "
             f"commit {env['commit']}, `{env['command']}`; medians of {env['reps']} trials, "
             "contenders alternating; an app writer inserts one message per transaction "
             "throughout.", ""]
    for messages, r in results.items():
        tool, plain, hand = r[TOOL], r[PSQL_PLAIN], r[BY_HAND]
        lines += [f"**{int(messages):,} messages** ({r['_size_mb']} MB database)", "",
                  "| contender | build (s) | writer's worst insert (ms) | writer's p99 (ms) | inserts during |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {m['seconds']:.2f} | {m['worst'] * 1000:.0f} | "
                  f"{m['p99'] * 1000:.1f} | {m['inserts']:.0f} |"
                  for name, m in ((TOOL, tool), (PSQL_PLAIN, plain), (BY_HAND, hand))]
        stall, build = tool["worst"] / plain["worst"], tool["seconds"] / hand["seconds"]
        lines += ["", f"- writer's worst stall, tool / plain build: **{stall:.3f}x** "
                  f"(target <= 0.1x: {'met' if stall <= 0.1 else 'NOT MET'})",
                  f"- build time, tool / by hand: **{build:.2f}x** "
                  f"(target <= 1.1x: {'met' if build <= 1.1 else 'NOT MET'})", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    tool, psql = program("orchestra-schema"), program("psql")
    if not tool or not psql:
        raise SystemExit("needs orchestra-schema (pip install .) and psql on PATH")
    cluster, results, work = Cluster().start(), {}, Path(tempfile.mkdtemp())
    try:
        for messages in args.messages:
            say(f"{messages} messages: building")
            where = sql_dir(work / f"m{messages}" / "sql")
            db = build(cluster, messages, tool, where)
            results[messages] = measure(db, contenders(tool, psql, db, where), args.reps, say)
            results[messages]["_size_mb"] = round(
                db.rows("SELECT pg_database_size(current_database())")[0][0] / 2**20)
            server = db.rows("SHOW server_version")[0][0]
            cluster.drop_database(db)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    env = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpu": f"{report._cpu()} (SHA extensions: {report._sha_extensions()})",
           "cpus": os.cpu_count(), "server": server, "commit": report._git_commit(),
           "reps": args.reps, "command": " ".join(["python bench/busy_index.py", *sys.argv[1:]])}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps({"env": env, "results": results},
                                                           indent=1))
    text = render(results, env)
    args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
