"""Benchmark orchestra-schema on PostgreSQL beside what a PostgreSQL DBA runs by hand.

    python bench/pg.py [--messages 2000000] [--reps 3] [--warmup 1] [--only GROUP ...]

Starts a throwaway PostgreSQL cluster (tests/pgserver.py: a temporary directory,
unix socket and loopback port, fsync off as in the tests), builds one database the
tool's `apply` made with core rows, Hangfire rows in their own schema and about
--messages chat messages loaded with COPY, then per group runs every contender as
a real process, alternating them (A B C A B C), timed from spawn to exit with its
peak RSS (bench/contenders.run_timed). Groups: status, backup, rollback, rehearse.
A trial that changes the database works on a fresh copy (CREATE DATABASE ...
TEMPLATE, untimed). Prints a markdown table, also written to bench/results/
pg-latest.md, and the raw numbers to bench/results/pg-size-N.json (N: messages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import report  # noqa: E402
from contenders import Contender, Group, Paths, Step, Target, program  # noqa: E402
from pgserver import PASSWORD, USER, Cluster  # noqa: E402

SQL_DIR = ROOT / "sql" / "postgresql"
CHAT = "20250927103132_AddChatTables"
CHAT_ROLLBACK = SQL_DIR / f"{CHAT}.rollback.sql"
RESULTS = HERE / "results"
GROUPS = ["status", "backup", "rollback", "rehearse"]
OUT = Path("/tmp") / f"orchestra-pg-bench-{os.getpid()}"  # a trial's outputs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2_000_000, help="chat messages (default 2e6)")
    p.add_argument("--reps", type=int, default=3, help="timed trials per contender (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP")
    p.add_argument("--output", type=Path, default=RESULTS / "pg-latest.md")
    return p.parse_args(argv)


# ---- the database

WORDS = ("the agent task repository build test failed passed error warning file function class "
         "return value config deploy branch commit merge review request response token model "
         "prompt context output input queue worker job retry timeout session message user "
         "please can you check why this is slow fix update add remove refactor docs api "
         "database migration schema index query table column row null default json").split()

CORE_ROWS = """
INSERT INTO "Repositories" SELECT 'repo-' || i, 'repo ' || i, '/src/repo' || i, NULL, 0, true,
  now(), now(), NULL, NULL, 'main', '["Read","Write"]', 0, 0, 0, 0, '{Read,Write}'
  FROM generate_series(1, 20) i;
INSERT INTO "Agents" ("Id", "Name", "Type", "RepositoryPath", "Status", "LastPing", "CreatedAt",
  "UpdatedAt", "IsDeleted", "MaxConcurrentTasks", "HealthCheckInterval", "TotalTasksCompleted",
  "TotalTasksFailed", "TotalExecutionTime", "AverageExecutionTime", "RepositoryId")
  SELECT 'agent-' || i, 'agent ' || i, 'claude', '/src', i % 4, now(), now(), now(), false, 2, 30,
  i, 0, 0, 0.5, 'repo-' || (i % 20 + 1) FROM generate_series(1, 200) i;
INSERT INTO "Tasks" ("Id", "Command", "AgentId", "RepositoryPath", "Priority", "Status",
  "CreatedAt", "RetryCount", "WorkflowStep", "UpdatedAt", "RepositoryId", "Result")
  SELECT 'task-' || i, 'run the tests of module ' || i, 'agent-' || (i % 200 + 1), '/src', i % 3,
  i % 5, now() - i * interval '1 minute', 0, 0, now(), 'repo-' || (i % 20 + 1),
  repeat('ok ', i % 50) FROM generate_series(1, %(tasks)s) i;
INSERT INTO "OrchestrationLogs" SELECT 'log-' || i, 'TaskStarted', 'task ' || i || ' started on '
  || md5(i::text), i % 4, 'agent-' || (i % 200 + 1), 'task-' || (i % %(tasks)s + 1),
  'repo-' || (i % 20 + 1), NULL, now(), now() FROM generate_series(1, %(logs)s) i;
INSERT INTO "AgentSessions" SELECT 'as-' || i, 'agent-' || (i % 200 + 1), 'sess-' || i, NULL,
  '/src', i % 3, now(), now(), NULL, NULL, 0.01 * i, i, i % 40 FROM generate_series(1, 2000) i;
CREATE SCHEMA hangfire;
CREATE TABLE hangfire.job (id bigserial PRIMARY KEY, stateid bigint, statename text,
  invocationdata text NOT NULL, arguments text NOT NULL, createdat timestamp NOT NULL,
  expireat timestamp);
CREATE TABLE hangfire.state (id bigserial PRIMARY KEY, jobid bigint NOT NULL REFERENCES
  hangfire.job (id) ON DELETE CASCADE, name text NOT NULL, reason text, createdat timestamp NOT
  NULL, data text);
INSERT INTO hangfire.job (statename, invocationdata, arguments, createdat)
  SELECT 'Succeeded', '{"Type":"Orchestra.Jobs.Run","Method":"Execute"}', '["' || i || '"]',
  now() FROM generate_series(1, %(jobs)s) i;
INSERT INTO hangfire.state (jobid, name, createdat, data) SELECT id, s, now(), '{}'
  FROM hangfire.job, unnest(ARRAY['Enqueued', 'Processing', 'Succeeded']) s;
"""


def content(rng: random.Random, kind: int) -> str:
    """A user prompt, an agent's long-tailed reply, or a system note (at most 4000 chars)."""
    n = {0: rng.randint(4, 40), 1: 6, 2: min(650, int(rng.lognormvariate(4.5, 0.9)))}[kind]
    return " ".join(rng.choice(WORDS) for _ in range(n))[:4000]


def build(cluster: Cluster, messages: int, tool: str, say):
    db = cluster.new_database("bench")
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    subprocess.run([tool, "-q", "-d", url(db), "apply"], check=True, env=env)
    rng = random.Random(20251127)
    start = time.perf_counter()
    with db.connect() as conn:
        sizes = {"tasks": max(1000, messages // 40), "logs": max(5000, messages // 10),
                 "jobs": max(1000, messages // 40)}
        conn.execute(CORE_ROWS.replace("%(tasks)s", str(sizes["tasks"])).replace(
            "%(logs)s", str(sizes["logs"])).replace("%(jobs)s", str(sizes["jobs"])))
        sessions = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(max(10, messages // 100))]
        t0 = datetime(2025, 10, 1, tzinfo=timezone.utc)
        with conn.cursor().copy('COPY "ChatSessions" FROM STDIN') as copy:
            for i, s in enumerate(sessions):
                copy.write_row((s, f"user{i % 300}", f"inst{i % 7}", f"chat {i}", t0, t0))
        indexes = [r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = "
            "'\"ChatMessages\"'::regclass AND NOT indisprimary")]
        for ix in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
                               "'\"ChatMessages\"'::regclass AND NOT indisprimary").fetchall():
            conn.execute(f"DROP INDEX {ix[0]}")  # made again after the load: faster
        pool = [content(rng, k) for k in (0, 1, 2) * 3000]
        with conn.cursor().copy('COPY "ChatMessages" FROM STDIN') as copy:
            for i in range(messages):
                kind = (0, 2, 2, 1)[i % 4]
                copy.write_row((uuid.UUID(int=rng.getrandbits(128)), sessions[i % len(sessions)],
                                ("user", "claude", "claude", "system")[i % 4],
                                pool[rng.randrange(3000) * 3 + kind], kind,
                                t0 + timedelta(seconds=i), None))
        for ix in indexes:
            conn.execute(ix)
        conn.execute("VACUUM ANALYZE")
    cluster.admin("CHECKPOINT")
    size = db.rows("SELECT pg_database_size(current_database())")[0][0]
    say(f"built {db.name}: {messages} messages, {size / 2**20:.0f} MB in "
        f"{time.perf_counter() - start:.0f} s")
    return db


def url(db) -> str:
    return f"postgresql://{USER}@127.0.0.1:{db.cluster.port}/{db.name}"


# ---- the contenders

def groups(tool: str, pg: dict) -> list[Group]:
    """pg: program paths. Contenders address the database by URL; PGPASSWORD holds the
    password for every one of them alike."""
    def orchestra(*args):
        return lambda p: [Step([tool, "-q", "-d", p.db, *args])]

    out = lambda p: str(p.out)  # noqa: E731
    dump = lambda p: Step([pg["pg_dump"], "-Fc", "-f", out(p), "-d", p.db])  # noqa: E731
    listing = lambda p: Step([pg["pg_restore"], "--list", out(p)])  # noqa: E731
    backup = Contender("orchestra-schema backup", lambda p: [Step([
        tool, "-q", "-d", p.db, "backup", "--output", out(p) + ".dump"])],
        note="exported snapshot, pg_dump -Fc, pg_restore --list, digest, fsync, manifest")
    return [
        Group("status", "Status (which migrations are applied)", "pg", [
            Contender("yoyo list (stock)", lambda p: [Step([
                program("yoyo"), "list", "--batch", "--no-config-file", "--database",
                p.db.replace("postgresql://", "postgresql+psycopg://"), str(SQL_DIR)])]),
            Contender("orchestra-schema status", orchestra("status")),
        ], ["yoyo list (stock)"], [Target("orchestra-schema status", "<= 1.0x yoyo list",
                                          lambda m: _ratio(m, "orchestra-schema status",
                                                           "yoyo list (stock)", 1.0))]),
        Group("backup", "Backup while nothing else runs", "pg", [
            Contender("pg_dump -Fc + pg_restore --list", lambda p: [dump(p), listing(p)],
                      note="by hand: the archive and its table of contents read back"),
            Contender("pg_dump -Fc", lambda p: [dump(p)], note="no check, no fsync"),
            backup,
        ], ["pg_dump -Fc + pg_restore --list"], [Target(
            "orchestra-schema backup", "<= 1.05x pg_dump + pg_restore --list",
            lambda m: _ratio(m, "orchestra-schema backup", "pg_dump -Fc + pg_restore --list",
                             1.05))]),
        Group("rollback", "Chat rollback (drop ChatMessages, ChatSessions)", "fresh", [
            Contender("psql -f rollback file", lambda p: [Step([
                pg["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(CHAT_ROLLBACK),
                "-d", p.db])], note="history not updated"),
            Contender("orchestra-schema rollback", orchestra("rollback", "--only", CHAT, "--yes",
                                                             "--no-backup"),
                      note="advisory lock, lock_timeout, history and EF row in the transaction"),
            Contender("floor for a Python client: python -c (psycopg, the file, commit)",
                      lambda p: [Step([sys.executable, "-c", PSYCOPG_FLOOR, p.db,
                                       str(CHAT_ROLLBACK)])],
                      note="Python's start-up, import psycopg, connect, the rollback file; nothing else"),
        ], ["psql -f rollback file"], [Target(
            "orchestra-schema rollback", "<= 1.1x psql -f",
            lambda m: _ratio(m, "orchestra-schema rollback", "psql -f rollback file", 1.1))],
            fresh_copy=True),
        Group("rehearse", "Rehearsal of the chat rollback", "pg", [
            backup,
            Contender("orchestra-schema rehearse", orchestra("rehearse"),
                      note="rollback and apply in a transaction rolled back; counts every table"),
        ], ["orchestra-schema backup"], [Target(
            "orchestra-schema rehearse", "<= 1.0x orchestra-schema backup",
            lambda m: _ratio(m, "orchestra-schema rehearse", "orchestra-schema backup", 1.0))]),
    ]


# What any Python tool on psycopg pays before and around the rollback file's statements.
PSYCOPG_FLOOR = """import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute(open(sys.argv[2]).read())
"""


def _ratio(medians, name, ref, limit):
    if name not in medians or ref not in medians:
        return None
    return medians[name] <= limit * medians[ref]


# ---- running

def trial(cluster: Cluster, c: Contender, db, fresh: bool):
    target = db
    if fresh:
        target = cluster.new_database("trial")
        cluster.admin(f"DROP DATABASE {target.name}")
        cluster.admin(f"CREATE DATABASE {target.name} TEMPLATE {db.name} OWNER {USER}")
    OUT.mkdir(exist_ok=True)
    try:
        result = c.run(Paths(url(target), OUT / "archive"))
        if result.ok and fresh and {"ChatMessages", "ChatSessions"} & target.tables():
            result.ok, result.error = False, "the chat tables are still there"
        return result
    finally:
        for f in OUT.iterdir():
            f.unlink()
        os.sync()
        if fresh:
            cluster.drop_database(target)


def run_group(cluster, group: Group, db, args, say) -> dict:
    say(f"{group.name}: {', '.join(c.name for c in group.contenders)}")
    runs = {c.name: [] for c in group.contenders}
    errors = {}
    for round_ in range(args.warmup + args.reps):
        for c in group.contenders:
            if c.name in errors:
                continue
            r = trial(cluster, c, db, group.fresh_copy)
            if not r.ok:
                errors[c.name] = r.error
                say(f"  {c.name}: FAILED: {r.error}")
            elif round_ >= args.warmup:
                runs[c.name].append(r)
                say(f"  {c.name}: {r.seconds:.2f} s, {r.max_rss_kb} KiB")
    rows = []
    for c in group.contenders:
        times = [r.seconds for r in runs[c.name]]
        rows.append({"name": c.name, "note": c.note, "missing": c.missing,
                     "error": errors.get(c.name), "seconds": times,
                     "median": statistics.median(times) if times and c.name not in errors else None,
                     "max_rss_kb": max((r.max_rss_kb or 0 for r in runs[c.name]), default=None)})
    medians = {r["name"]: r["median"] for r in rows if r["median"] is not None}
    return {"title": group.title, "database": group.database, "reference": group.reference(),
            "contenders": rows,
            "targets": [{"contender": t.contender, "text": t.text, "met": t.check(medians)}
                        for t in group.targets]}


def main(argv=None) -> None:
    args = parse_args(argv)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    tool = program("orchestra-schema")
    pg = {name: program(name) for name in ("pg_dump", "pg_restore", "psql")}
    os.environ["PGPASSWORD"] = PASSWORD  # every contender alike; never on a command line
    cluster = Cluster().start()
    try:
        db = build(cluster, args.messages, tool, say)
        size_mb = db.rows("SELECT pg_database_size(current_database())")[0][0] / 2**20
        results = {g.name: run_group(cluster, g, db, args, say)
                   for g in groups(tool, pg) if g.name in (args.only or GROUPS)}
        server = db.rows("SHOW server_version")[0][0]
    finally:
        cluster.stop()
    data = {"env": {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
                    "messages": args.messages, "size_mb": round(size_mb),
                    "server": server, "cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu": f"{report._cpu()}; SHA extensions: {report._sha_extensions()}",
                    "only": args.only,
                    "commit": report._git_commit(), "reps": args.reps, "warmup": args.warmup,
                    "load": os.getloadavg()[0]},
            "groups": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    (args.output.parent / f"pg-size-{args.messages}.json").write_text(json.dumps(data, indent=1))
    text = render(data, args.output.parent)
    args.output.write_text(text)
    print(text)


def render(data: dict, folder: Path) -> str:
    env = data["env"]
    out = [f"Measured {env['date_utc']} UTC by `python bench/pg.py --messages {env['messages']} "
           f"--reps {env['reps']}{' --only ' + ' '.join(env['only']) if env.get('only') else ''}` "
           f"on {env['cpus']} cores ({env.get('cpu', 'CPU not recorded')}), {env['platform']}; PostgreSQL "
           f"{env['server']} (throwaway cluster, fsync off), orchestra-schema @ {env['commit']}; "
           f"load average {env['load']:.2f} at the end.", "",
           f"Database: {env['messages']:,} chat messages, core, AgentSessions and Hangfire rows; "
           f"{env['size_mb']} MB (pg_database_size). Every contender is a real process timed "
           "from spawn to exit; trials alternate; the password is in PGPASSWORD for all."]
    for group in data["groups"].values():
        out += ["", f"### {group['title']}", ""] + report._group_table(group)
    sizes = {json.loads(p.read_text())["env"]["messages"]: json.loads(p.read_text())
             for p in sorted(folder.glob("pg-size-*.json"))}
    if len(sizes) > 1:
        out += ["", "### Peak memory by database size (MB)", "",
                "| Command | " + " | ".join(f"{n:,} msgs" for n in sorted(sizes)) + " |",
                "|---|" + "---:|" * len(sizes)]
        names = {(g, r["name"]) for d in sizes.values() for g, grp in d["groups"].items()
                 for r in grp["contenders"]}
        for g, name in sorted(names):
            cells = []
            for n in sorted(sizes):
                row = next((r for r in sizes[n]["groups"].get(g, {}).get("contenders", [])
                            if r["name"] == name), None)
                cells.append(report._mb(row and row["max_rss_kb"]))
            out.append(f"| {g}: {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
