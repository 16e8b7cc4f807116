"""Build a realistic orchestra.db once and cache it under bench/.cache/.

Two variants with the same rows:
  ef.db    made as the field databases were: EF Core's exact script run through
           apsw (it has __EFMigrationsHistory and no yoyo history);
  tool.db  made by `orchestra-schema apply` on an empty file (yoyo history and
           checksums, as stock `yoyo rollback` and the tool's rollback need).
Both hold the Orchestra core tables with rows, Hangfire-like foreign tables
with rows, and millions of chat messages of realistic sizes (size by flag).

Everything is seeded, so a size always gives the same rows. The cache key is
the size, the seed, and the SHA-256 of the SQL files and of this file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
EF_SCRIPT = ROOT / "tests" / "data" / "ef-core-9-initial-script.sql"
SQL_DIR = ROOT / "sql" / "sqlite"
SEED = 20250922

# Calibrated so the file is about --size-mb: 1200 MB holds about 2 million messages
# (the reference database: 1.2 GB, 2 million chat messages).
MESSAGES_PER_MB = 1625
BASE_TIME = dt.datetime(2025, 1, 6, 8, 0, 0)


@dataclass
class Built:
    ef: Path
    tool: Path
    info: dict


def cache_key(size_mb: int) -> str:
    digest = hashlib.sha256()
    for path in [EF_SCRIPT, Path(__file__), *sorted(SQL_DIR.glob("*.sql"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{size_mb}mb-seed{SEED}-{digest.hexdigest()[:12]}"


def ensure_built(size_mb: int, tool_cmd: list[str], say=print) -> Built:
    """The cached pair for this size, built first if absent."""
    folder = CACHE / cache_key(size_mb)
    done = folder / "info.json"
    if not done.exists():
        say(f"building the {size_mb} MB databases in {folder} (once; cached) ...")
        folder.mkdir(parents=True, exist_ok=True)
        info = _build(folder, size_mb, tool_cmd, say)
        done.write_text(json.dumps(info, indent=2))
    return Built(folder / "ef.db", folder / "tool.db", json.loads(done.read_text()))


def _build(folder: Path, size_mb: int, tool_cmd: list[str], say) -> dict:
    started = time.perf_counter()
    ef_tmp, tool_tmp = folder / "ef.db.tmp", folder / "tool.db.tmp"
    for p in (ef_tmp, tool_tmp):
        p.unlink(missing_ok=True)
    counts = build_ef(ef_tmp, size_mb)
    say(f"  ef.db: {_mb(ef_tmp)} MB in {time.perf_counter() - started:.0f} s")
    subprocess.run([*tool_cmd, "-q", "-d", str(tool_tmp), "apply"], check=True)
    copy_rows(ef_tmp, tool_tmp)
    say(f"  tool.db: {_mb(tool_tmp)} MB")
    ef_tmp.rename(folder / "ef.db")
    tool_tmp.rename(folder / "tool.db")
    return {"size_mb": size_mb, "seed": SEED, "rows": counts,
            "ef_bytes": (folder / "ef.db").stat().st_size,
            "tool_bytes": (folder / "tool.db").stat().st_size,
            "build_seconds": round(time.perf_counter() - started, 1)}


def _mb(path: Path) -> int:
    return path.stat().st_size // 2**20


def _fast(conn: apsw.Connection) -> None:
    # A build, not a live database: no journal, no fsync, a big cache.
    conn.execute("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                 "PRAGMA cache_size = -1000000; PRAGMA foreign_keys = ON")


def build_ef(path: Path, size_mb: int) -> dict[str, int]:
    """EF Core's script, then the rows the API and Hangfire would have written."""
    conn = apsw.Connection(str(path))
    _fast(conn)
    conn.execute(EF_SCRIPT.read_text())
    conn.execute(HANGFIRE_SCHEMA)
    gen = Rows(size_mb)
    counts = {}
    with conn:
        for table, rows in gen.tables():
            counts[table] = _insert(conn, table, rows)
    problems = conn.execute("PRAGMA foreign_key_check").fetchall()
    assert not problems, f"generated rows break foreign keys: {problems[:3]}"
    conn.close()
    return counts


def _insert(conn: apsw.Connection, table: str, rows) -> int:
    rows = iter(rows)
    first = next(rows)
    count = [0]

    def counted():
        for row in itertools.chain([first], rows):
            count[0] += 1
            yield row
    conn.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(first))})', counted())
    return count[0]


def copy_rows(source: Path, target: Path) -> None:
    """Every row of source into target (made by `apply`); foreign tables created as in source."""
    conn = apsw.Connection(str(target))
    _fast(conn)
    conn.execute("ATTACH DATABASE ? AS src", (str(source),))
    listing = "SELECT name FROM {} WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    have = {r[0] for r in conn.execute(listing.format("main.sqlite_schema"))}
    tables = [r[0] for r in conn.execute(listing.format("src.sqlite_schema"))
              if r[0] != "__EFMigrationsHistory"]
    foreign = json.dumps([t for t in tables if t not in have])
    with conn:
        for (sql,) in conn.execute(
                "SELECT sql FROM src.sqlite_schema WHERE sql IS NOT NULL AND tbl_name IN "
                "(SELECT value FROM json_each(?)) ORDER BY type = 'index'", (foreign,)).fetchall():
            conn.execute(sql)
        for name in tables:
            conn.execute(f'INSERT INTO main."{name}" SELECT * FROM src."{name}"')
    conn.close()


# Hangfire's SQLite storage shares the file: tables the migrations did not create.
HANGFIRE_SCHEMA = """
CREATE TABLE [HangFire.Schema] ([Version] INTEGER NOT NULL);
CREATE TABLE [HangFire.Job] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [StateId] INTEGER,
    [StateName] NVARCHAR(20) COLLATE NOCASE, [InvocationData] NVARCHAR NOT NULL COLLATE NOCASE,
    [Arguments] NVARCHAR NOT NULL COLLATE NOCASE, [CreatedAt] DATETIME NOT NULL, [ExpireAt] DATETIME);
CREATE INDEX [IX_HangFire_Job_ExpireAt] ON [HangFire.Job] ([ExpireAt] DESC);
CREATE INDEX [IX_HangFire_Job_StateName] ON [HangFire.Job] ([StateName]);
CREATE TABLE [HangFire.State] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [JobId] INTEGER NOT NULL,
    [Name] NVARCHAR(20) NOT NULL COLLATE NOCASE, [Reason] NVARCHAR(100) COLLATE NOCASE,
    [CreatedAt] DATETIME NOT NULL, [Data] NVARCHAR COLLATE NOCASE,
    FOREIGN KEY ([JobId]) REFERENCES [HangFire.Job] ([Id]) ON DELETE CASCADE);
CREATE INDEX [IX_HangFire_State_JobId] ON [HangFire.State] ([JobId]);
CREATE TABLE [HangFire.JobParameter] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [JobId] INTEGER NOT NULL,
    [Name] NVARCHAR(40) NOT NULL COLLATE NOCASE, [Value] NVARCHAR COLLATE NOCASE,
    FOREIGN KEY ([JobId]) REFERENCES [HangFire.Job] ([Id]) ON DELETE CASCADE);
CREATE INDEX [IX_HangFire_JobParameter_JobIdAndName] ON [HangFire.JobParameter] ([JobId], [Name]);
CREATE TABLE [HangFire.JobQueue] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [JobId] INTEGER NOT NULL,
    [Queue] NVARCHAR(50) NOT NULL COLLATE NOCASE, [FetchedAt] DATETIME);
CREATE INDEX [IX_HangFire_JobQueue_QueueAndFetchedAt] ON [HangFire.JobQueue] ([Queue], [FetchedAt]);
CREATE TABLE [HangFire.Server] (
    [Id] NVARCHAR(100) NOT NULL PRIMARY KEY COLLATE NOCASE, [Data] NVARCHAR COLLATE NOCASE,
    [LastHeartbeat] DATETIME NOT NULL);
CREATE TABLE [HangFire.Hash] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [Key] NVARCHAR(100) NOT NULL COLLATE NOCASE,
    [Field] NVARCHAR(100) NOT NULL COLLATE NOCASE, [Value] NVARCHAR COLLATE NOCASE, [ExpireAt] DATETIME);
CREATE UNIQUE INDEX [UX_HangFire_Hash_KeyAndField] ON [HangFire.Hash] ([Key], [Field]);
CREATE TABLE [HangFire.Set] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [Key] NVARCHAR(100) NOT NULL COLLATE NOCASE,
    [Score] FLOAT NOT NULL, [Value] NVARCHAR(256) NOT NULL COLLATE NOCASE, [ExpireAt] DATETIME);
CREATE UNIQUE INDEX [UX_HangFire_Set_KeyAndValue] ON [HangFire.Set] ([Key], [Value]);
CREATE TABLE [HangFire.Counter] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [Key] NVARCHAR(100) NOT NULL COLLATE NOCASE,
    [Value] INTEGER NOT NULL, [ExpireAt] DATETIME);
CREATE INDEX [IX_HangFire_Counter_Key] ON [HangFire.Counter] ([Key]);
CREATE TABLE [HangFire.AggregatedCounter] (
    [Id] INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, [Key] NVARCHAR(100) NOT NULL COLLATE NOCASE,
    [Value] INTEGER NOT NULL, [ExpireAt] DATETIME);
CREATE UNIQUE INDEX [UX_HangFire_CounterAggregated_Key] ON [HangFire.AggregatedCounter] ([Key]);
"""

WORDS = ("the agent task repository build test failed passed error warning file function class "
         "return value config deploy branch commit merge review request response token model "
         "prompt context output input queue worker job retry timeout session message user "
         "please can you check why this is slow fix update add remove refactor docs api "
         "database migration schema index query table column row null default json yaml").split()
STATES = ("Enqueued", "Processing", "Succeeded", "Failed", "Scheduled", "Deleted")


class Rows:
    """Seeded generators of every table's rows, scaled to the requested size."""

    def __init__(self, size_mb: int):
        self.rng = random.Random(SEED)
        self.n_messages = max(200, round(size_mb * MESSAGES_PER_MB))
        scale = size_mb / 1024
        self.n_sessions = max(5, self.n_messages // 40)
        self.n_tasks = max(50, round(40_000 * scale))
        self.n_logs = max(100, round(150_000 * scale))
        self.n_metrics = max(100, round(80_000 * scale))
        self.n_jobs = max(20, round(60_000 * scale))
        self.pool = self._text_pool()
        self.repos = [self.guid() for _ in range(12)]
        self.agents = [self.guid() for _ in range(60)]
        self.workflows = [self.guid() for _ in range(25)]
        self.tasks: list[str] = []

    def tables(self):
        yield "Repositories", self.repositories()
        yield "TaskTemplates", self.task_templates()
        yield "WorkflowDefinitions", self.workflow_definitions()
        yield "Agents", self.agent_rows()
        yield "UserPreferences", self.user_preferences()
        yield "PerformanceMetrics", self.performance_metrics()
        yield "Tasks", self.task_rows()
        yield "OrchestrationLogs", self.orchestration_logs()
        yield "ChatSessions", self.chat_sessions()
        yield "ChatMessages", self.chat_messages()
        yield "HangFire.Schema", [(7,)]
        yield "HangFire.Job", self.hangfire_jobs()
        yield "HangFire.State", self.hangfire_states()
        yield "HangFire.JobParameter", self.hangfire_parameters()
        yield "HangFire.Server", [(f"orchestra-api:{i}:{self.guid().lower()}", '{"WorkerCount":20}',
                                   self.time(0)) for i in range(2)]
        yield "HangFire.Hash", ((i + 1, f"recurring-job:job{i // 8}", f"field{i % 8}",
                                 self.text(40), None) for i in range(400))
        yield "HangFire.Set", ((i + 1, "schedule", float(i), f"{i + 1}", None)
                               for i in range(self.n_jobs // 10))
        yield "HangFire.Counter", ((i + 1, "stats:succeeded", 1, self.time(i * 60))
                                   for i in range(self.n_jobs // 4))
        yield "HangFire.AggregatedCounter", ((i + 1, f"stats:succeeded:2025-01-{i % 28 + 1:02d}-{i}",
                                              i * 3, None) for i in range(200))

    # -- values ---------------------------------------------------------------

    def _text_pool(self) -> str:
        # Words plus some code and JSON, as agent replies have; sliced at random offsets.
        parts, rng = [], self.rng
        while sum(map(len, parts)) < 1_500_000:
            if rng.random() < 0.1:
                parts.append("\n```python\ndef f(x):\n    return x * %d\n```\n" % rng.randrange(99))
            else:
                parts.append(" ".join(rng.choices(WORDS, k=rng.randrange(5, 25))) + ". ")
        return "".join(parts)

    def text(self, length: int) -> str:
        length = min(length, 60_000)
        start = self.rng.randrange(len(self.pool) - length)
        return self.pool[start:start + length]

    def lognormal_length(self, median: float, sigma: float) -> int:
        return max(1, int(self.rng.lognormvariate(math.log(median), sigma)))

    def guid(self) -> str:
        h = "%032X" % self.rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    @staticmethod
    def time(seconds: float) -> str:
        # EF Core's TEXT format for DateTime in SQLite.
        return (BASE_TIME + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f0")

    # -- Orchestra core -------------------------------------------------------

    def repositories(self):
        for i, rid in enumerate(self.repos):
            yield (rid, f"repo-{i}", f"/srv/src/repo-{i}", self.text(80), i % 3, 1, self.time(i),
                   self.time(i + 86400), self.time(i + 90000), '{"autoCommit":false}', "main",
                   '["read","write","build"]', 100 * i, 90 * i, 10 * i, 3600 * i,
                   '["read","write","build"]')  # EF's primitive collection: JSON, as its *Json twin

    def task_templates(self):
        for i in range(40):
            yield (self.guid(), f"template-{i}", self.text(60), f"claude -p {{prompt{i}}}", i % 5,
                   ("build", "test", "docs", None)[i % 4], 1, '{"prompt":"string"}',
                   self.time(i), self.time(i))

    def workflow_definitions(self):
        for i, wid in enumerate(self.workflows):
            yield (wid, f"workflow-{i}", self.text(60), json.dumps({"steps": [self.text(30)] * 4}),
                   1, 1 + i % 3, self.time(i), self.time(i))

    def agent_rows(self):
        for i, aid in enumerate(self.agents):
            yield (aid, f"agent-{i}", "claude-code", f"/srv/src/repo-{i % 12}", i % 4, self.time(i),
                   None, self.time(i), self.time(i), 0, '{"model":"sonnet"}', 2, 30, 500 + i, i,
                   36000 + i, 71.5, self.guid() if i % 2 else None, self.repos[i % 12])

    def user_preferences(self):
        for i in range(150):
            yield (self.guid(), f"user{i // 10}", f"key{i % 10}", self.text(20), i % 3, "ui",
                   self.time(i), self.time(i), self.repos[i % 12])

    def performance_metrics(self):
        rng = self.rng
        for i in range(self.n_metrics):
            t = self.time(i * 30)
            yield (self.guid(), rng.choice(self.agents), rng.choice(("cpu", "memory", "latency")),
                   rng.random() * 100, "%", t, t, t, None)

    def task_rows(self):
        rng = self.rng
        for i in range(self.n_tasks):
            tid = self.guid()
            parent = rng.choice(self.tasks) if self.tasks and rng.random() < 0.1 else None
            self.tasks.append(tid)
            start = i * 120
            yield (tid, self.text(self.lognormal_length(80, 0.7)), rng.choice(self.agents),
                   f"/srv/src/repo-{i % 12}", rng.randrange(4), rng.randrange(5), self.time(start),
                   self.time(start + 5), self.time(start + 95), 90_000,
                   self.text(self.lognormal_length(300, 1.0)), None, 0, self.guid(),
                   rng.choice(self.workflows) if rng.random() < 0.3 else None, parent,
                   0, self.time(start + 95), self.repos[i % 12])

    def orchestration_logs(self):
        rng = self.rng
        for i in range(self.n_logs):
            t = self.time(i * 20)
            yield (self.guid(), rng.choice(("TaskStarted", "TaskCompleted", "AgentPing")),
                   self.text(self.lognormal_length(100, 0.6)), rng.randrange(4),
                   rng.choice(self.agents), rng.choice(self.tasks), self.repos[i % 12],
                   '{"source":"scheduler"}' if i % 3 == 0 else None, t, t)

    # -- chat -----------------------------------------------------------------

    def chat_sessions(self):
        self.sessions = [self.guid() for _ in range(self.n_sessions)]
        span = self.n_messages * 15
        for i, sid in enumerate(self.sessions):
            yield (sid, f"user{i % 40}", f"instance-{i % 7}", self.text(self.lognormal_length(30, 0.4)),
                   self.time(i * span / self.n_sessions), self.time(span))

    def chat_messages(self):
        """User prompts short, agent replies long-tailed (some overflow pages), system notes between."""
        rng, sessions = self.rng, self.sessions
        active = sessions[:200]
        for i in range(self.n_messages):
            if rng.random() < 0.02:  # a new conversation takes over an old slot
                active[rng.randrange(len(active))] = sessions[rng.randrange(len(sessions))]
            kind = rng.random()
            if kind < 0.45:
                author, mtype, length, meta = "user", 0, self.lognormal_length(40, 0.8), None
            elif kind < 0.9:
                author, mtype, length = "agent", 2, self.lognormal_length(140, 1.1)
                meta = '{"model":"claude-sonnet-4","tokens":%d}' % length
            else:
                author, mtype, length, meta = "system", 1, self.lognormal_length(90, 0.5), None
            yield (self.guid(), rng.choice(active), author, self.text(length), mtype,
                   self.time(i * 15), meta)

    # -- Hangfire -------------------------------------------------------------

    def hangfire_jobs(self):
        for i in range(self.n_jobs):
            yield (i + 1, 3 * i + 3, STATES[2 if i % 10 else 3],
                   '{"Type":"Orchestra.API.Services.TaskRunner, Orchestra.API","Method":"Run",'
                   '"ParameterTypes":"[\\"System.String\\"]"}', f'["\\"{self.guid()}\\""]',
                   self.time(i * 60), self.time(i * 60 + 86400 * 7))

    def hangfire_states(self):
        for i in range(self.n_jobs * 3):
            job, step = i // 3 + 1, i % 3
            yield (i + 1, job, ("Enqueued", "Processing", "Succeeded")[step], None,
                   self.time(job * 60 + step),
                   '{"EnqueuedAt":"%s","Queue":"default","ServerId":"orchestra-api:1"}'
                   % self.time(job * 60))

    def hangfire_parameters(self):
        for i in range(self.n_jobs * 3):
            job = i // 3 + 1
            name, value = (("CurrentCulture", '"en-US"'), ("CurrentUICulture", '"en-US"'),
                           ("RetryCount", "0"))[i % 3]
            yield i + 1, job, name, value


def fresh_copy(source: Path, target: Path) -> Path:
    """A byte copy for one trial (never timed), flushed so the trial starts with clean pages."""
    remove_db(target)
    shutil.copyfile(source, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
    return target


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
