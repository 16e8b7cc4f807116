"""pg_dump and pg_restore: no secret where another user could read it, gone with the tool
however it is stopped, never stalling the app; restore all-or-nothing; the archive's
manifest and name right.

Real processes throughout: the tool as `python -m orchestra_schema`, its children read
from /proc while they run, the app as psycopg sessions of the throwaway server.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import run
from orchestra_schema import address, background
from orchestra_schema.engines.postgresql import archive as pgarchive
from pgserver import PASSWORD, USER
from test_pg_backup import build, ctx_of

SSL_SECRET = "ssl;Key-Pw9"  # sslpassword: libpq needs it only for an encrypted key
ENV_SECRET = "Env-Pgpw-4"  # a $PGPASSWORD the user left set
CHILDREN = (b"pg_dump", b"pg_restore")
APP_WORST = 1.0  # seconds: the app's worst query while the tool runs or dies (as rollback)


def npgsql(database, first="Include Error Detail=true") -> str:
    """The app's string, as its settings would hold it: client keys first, an sslpassword."""
    return (f"{first};Host=127.0.0.1;Port={database.cluster.port};Database={database.name};"
            f"Username={USER};Password=\"{PASSWORD}\";SSL Mode=Disable;"
            f"SSL Password=\"{SSL_SECRET}\";Pooling=true")


def tool_env(database, tmp_path) -> dict[str, str]:
    env = {**os.environ, "EFCORE_CONNECTION": npgsql(database),
           "HANGFIRE_CONNECTION": npgsql(database, "Server=127.0.0.1"), "PGPASSWORD": ENV_SECRET,
           "TMPDIR": str(tmp_path / "tmp")}
    env.pop("ORCHESTRA_DB", None)
    for name in ("tmp", "out"):
        (tmp_path / name).mkdir(exist_ok=True)
    return env


def start(env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestra_schema", "--timeout", "30", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def children_of_test(marker: str) -> dict[int, tuple[bytes, bytes]]:
    """pid -> (cmdline, environ) of every pg_dump/pg_restore whose command line names
    marker (this test's database or directory: other runs share the machine)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if os.path.basename(cmdline.split(b"\0")[0]) in CHILDREN and marker.encode() in cmdline:
                found[int(pid)] = (cmdline, Path(f"/proc/{pid}/environ").read_bytes())
        except OSError:
            continue
    return found


def wait_for(check, seconds: float, every: float = 0.01):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if found := check():
            return found
        time.sleep(every)
    return check()


def assert_nothing_secret(cmdline: bytes, environ: bytes) -> None:
    variables = dict(v.split(b"=", 1) for v in environ.split(b"\0") if b"=" in v)
    for secret in (PASSWORD, SSL_SECRET, ENV_SECRET):
        assert secret.encode() not in cmdline and secret.encode() not in environ, secret
    for name in (b"EFCORE_CONNECTION", b"HANGFIRE_CONNECTION", b"ORCHESTRA_DB", b"PGPASSWORD"):
        assert name not in variables, name
    for name in (b"PGPASSFILE", b"PGSERVICEFILE"):  # in memory, nowhere on disk
        assert re.fullmatch(rb"/dev/fd/\d+", variables[name]), variables[name]


def waiting_for_a_lock(database) -> bool:
    return bool(database.rows(
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' AND "
        "application_name LIKE 'orchestra-schema restore%%'", (database.name,)))


def sessions_of_children(database) -> list[tuple]:
    return database.rows("SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s "
                         "AND (application_name = 'pg_dump' OR application_name LIKE "
                         "'orchestra-schema restore%%')", (database.name,))


def assert_gone_with_the_tool(database, tmp_path) -> None:
    """No child left (the kernel kills them with the tool), their sessions ended by the
    server, and no file holding a secret anywhere under the test's directories."""
    assert wait_for(lambda: not children_of_test(database.name), 3)
    assert wait_for(lambda: not sessions_of_children(database), 3), sessions_of_children(database)
    assert list((tmp_path / "tmp").iterdir()) == []
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PASSWORD.encode() not in data and SSL_SECRET.encode() not in data, path


class App(threading.Thread):
    """The app: SELECTs on ChatMessages in a loop, each one's latency kept."""

    def __init__(self, database):
        super().__init__(daemon=True)
        self.database, self.latencies, self.stop = database, [], threading.Event()

    def run(self):
        # a query stuck behind an orphan would wait for ever: 5 s is a failure all the same
        with self.database.connect(options="-c statement_timeout=5000") as conn:
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    conn.execute('SELECT count(*) FROM "ChatMessages"').fetchone()
                except Exception:  # the table was replaced under a query: it ran, it answered
                    pass
                self.latencies.append(time.perf_counter() - began)
                time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


def contents(database) -> dict:
    """The whole catalog (pg_dump --schema-only, and every relation's oid and file, which
    any drop and re-create changes) and every table's rows."""
    conn = address.parse(database.url)
    with pgarchive.client(conn) as (conninfo, env, fds):
        schema = subprocess.run([pgarchive.program("pg_dump"), "--schema-only",
                                 f"--dbname={conninfo}"], env=env, pass_fds=fds,
                                capture_output=True, text=True, check=True).stdout
    schema = re.sub(r"(?m)^\\(un)?restrict .*$", "", schema)  # a random key per dump
    relations = database.rows(
        "SELECT c.oid::int, c.relfilenode::int, n.nspname, c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN "
        "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_t%' ORDER BY 1")
    rows = {f"{s}.{t}": database.rows(f'SELECT md5(coalesce(string_agg(t::text, \'|\' ORDER BY '
                                      f't::text), \'\')) FROM "{s}"."{t}" t')[0][0]
            for s, t in database.rows(pgarchive.LIVE_TABLES)}
    return {"schema": schema, "relations": relations, "rows": rows}


# ---- secrets

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_pg_dump_waiting_on_a_lock_sees_no_secret_and_dies_with_the_tool(pgdb, tmp_path, sig):
    build(pgdb, sessions=5)
    env = tool_env(pgdb, tmp_path)
    with pgdb.connect() as app:
        app.execute("BEGIN")
        app.execute('LOCK TABLE "ChatMessages" IN ACCESS EXCLUSIVE MODE')  # pg_dump waits
        tool = start(env, "backup", "--dir", tmp_path / "out")
        children = wait_for(lambda: children_of_test(pgdb.name), 30)
        assert children, tool.communicate(timeout=30)
        assert wait_for(lambda: pgdb.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = "
            "'pg_dump' AND wait_event_type = 'Lock'", (pgdb.name,)) == [(1,)], 10)
        for cmdline, environ in children_of_test(pgdb.name).values():
            assert_nothing_secret(cmdline, environ)
        tool.send_signal(sig)
        assert tool.wait(10) == -sig
        assert_gone_with_the_tool(pgdb, tmp_path)
        app.execute("COMMIT")
    assert not list((tmp_path / "out").glob("*.dump"))


def test_every_child_of_backup_and_restore_sees_no_secret(pgdb, tmp_path):
    """pg_dump, pg_restore --list, pg_restore: read while each runs."""
    build(pgdb, sessions=200, messages=20)
    env = tool_env(pgdb, tmp_path)
    seen, stop = {}, threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(children_of_test(pgdb.name))
            seen.update(children_of_test(str(tmp_path)))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        backup = run("--json", "backup", "--dir", tmp_path / "out", env=env)
        assert backup.returncode == 0, backup.stderr
        archive = json.loads(backup.stdout)["path"]
        restore = run("--json", "restore", "--no-backup", archive, env=env)
        assert restore.returncode == 0, restore.stderr
    finally:
        stop.set()
        watcher.join()
    names = {os.path.basename(c.split(b"\0")[0]) + (b" --list" if b"--list" in c else b"")
             for c, _ in seen.values()}
    assert {b"pg_dump", b"pg_restore", b"pg_restore --list"} <= names, names
    for cmdline, environ in seen.values():
        assert_nothing_secret(cmdline, environ) if b"--dbname" in cmdline else None
        for secret in (PASSWORD, SSL_SECRET, ENV_SECRET, "EFCORE_CONNECTION"):
            assert secret.encode() not in cmdline + environ
    assert list((tmp_path / "tmp").iterdir()) == []


def test_libpq_reads_the_secrets_from_the_memory_files(pgdb, monkeypatch):
    """The passfile and the service file as the child gets them (/dev/fd/N), read by
    libpq itself: the password authenticates, sslpassword is the one given."""
    import psycopg
    given = address.parse(npgsql(pgdb))
    with pgarchive.client(given, 150000) as (conninfo, env, fds):
        assert PASSWORD not in conninfo and SSL_SECRET not in conninfo
        for name in ("PGPASSFILE", "PGSERVICEFILE"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.delenv("PGPASSWORD", raising=False)
        with psycopg.connect(conninfo) as conn:
            options = {o.keyword: o.val for o in conn.pgconn.info}
            assert options[b"sslpassword"] == SSL_SECRET.encode()
            assert options[b"password"] is None  # it authenticated with the passfile's
            assert conn.execute("SHOW client_connection_check_interval").fetchone()[0] == "100ms"
    assert all(not os.path.exists(f"/proc/self/fd/{fd}") or
               not os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:") for fd in fds)


# ---- stopped at random instants: nothing survives, the app never stalls

def _stop_at_random(pgdb, tmp_path, args, sig, seconds, release=None):
    """Start the tool, stop it with sig after `seconds` (None: once a child's session waits
    for a lock); the app's latencies meanwhile. release: (seconds, connection) after
    which the app's lock holder commits."""
    env = tool_env(pgdb, tmp_path)
    with App(pgdb) as app:
        time.sleep(0.1)
        tool = start(env, *args)
        began = time.monotonic()
        if seconds is None:
            assert wait_for(lambda: waiting_for_a_lock(pgdb), 30, 0.005)
        elif release is not None and release[0] < seconds:
            time.sleep(release[0])
            release[1].execute("COMMIT")
        time.sleep(max(0.0, (seconds or 0) - (time.monotonic() - began)))
        tool.send_signal(sig)
        out, err = tool.communicate(timeout=30)
        assert_gone_with_the_tool(pgdb, tmp_path)
    return tool.returncode, err, app.latencies


def restore_trial(pgdb, tmp_path, archive: str, restored: dict, before: dict, sig,
                  seconds: float, release_after: float) -> str:
    """One restore stopped after `seconds` while the app holds ChatMessages (released
    after release_after): the database as it was or as restored, and so it stays."""
    with pgdb.connect() as holder:
        holder.execute("BEGIN")
        holder.execute('SELECT count(*) FROM "ChatMessages"').fetchone()  # ACCESS SHARE
        code, err, latencies = _stop_at_random(
            pgdb, tmp_path, ["restore", "--no-backup", archive], sig, seconds,
            (release_after, holder))
        holder.execute("COMMIT")  # an orphan waiting for it would now go on and commit
    assert max(latencies) < APP_WORST, (max(latencies), sig, seconds)
    now = contents(pgdb)
    assert now["rows"] in (before["rows"], restored["rows"]), (code, err)
    time.sleep(0.5)
    assert contents(pgdb) == now
    outcome = "restored" if now["rows"] == restored["rows"] else "as it was"
    print(f"\nrestore, {signal.Signals(sig).name} after {'its lock wait' if seconds is None else f'{seconds:.2f} s'}: "
          f"{outcome}, the app's worst query {max(latencies) * 1000:.0f} ms")
    return outcome


@pytest.fixture
def restorable(pgdb, tmp_path):
    """(archive, contents as restored, contents before): the live database lost 5 chat
    rows since the archive was taken."""
    build(pgdb, sessions=50, messages=10)
    (tmp_path / "archives").mkdir()
    archive = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path / "archives")
    restored = contents(pgdb)
    pgdb.run_sql('DELETE FROM "ChatMessages" WHERE ctid IN (SELECT ctid FROM "ChatMessages" '
                 'LIMIT 5)')
    return str(archive.path), restored, contents(pgdb)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restore_stopped_while_it_waits_for_the_app(pgdb, tmp_path, restorable, sig):
    """Stopped while pg_restore's session waits for the app's lock: the server ends that
    session though the tool that would cancel its wait is gone."""
    archive, restored, before = restorable
    seen = restore_trial(pgdb, tmp_path, archive, restored, before, sig, None, 60)
    assert seen == "as it was"


def test_restore_stopped_at_random_instants(pgdb, tmp_path, restorable):
    _trials(pgdb, tmp_path, restorable, 2)


@pytest.mark.slow
def test_restore_stopped_at_many_random_instants(pgdb, tmp_path, restorable):
    outcomes = _trials(pgdb, tmp_path, restorable, 30)
    assert len(set(outcomes)) == 2, outcomes  # some kills landed before the commit, some after


def _trials(pgdb, tmp_path, restorable, n: int) -> list[str]:
    archive, restored, before = restorable
    rng, outcomes = random.Random(os.getpid()), []
    for i in range(n):
        sig = (signal.SIGTERM, signal.SIGKILL)[i % 2]
        outcomes.append(restore_trial(pgdb, tmp_path, archive, restored, before, sig,
                                      rng.uniform(0.2, 3.0), rng.uniform(0.0, 2.5)))
        if outcomes[-1] == "restored":  # back to the state before, for the next trial
            pgdb.run_sql('DELETE FROM "ChatMessages" WHERE ctid IN (SELECT ctid FROM '
                         '"ChatMessages" LIMIT 5)')
            before = contents(pgdb)
    print(f"\nrestore stopped {n} times: {outcomes.count('restored')} restored, "
          f"{outcomes.count('as it was')} as it was")
    return outcomes


@pytest.mark.parametrize("trials", [pytest.param(2, id="2"),
                                    pytest.param(20, id="20", marks=pytest.mark.slow)])
def test_backup_stopped_at_random_instants(pgdb, tmp_path, trials):
    """An app session holds a row lock in an open transaction all through."""
    build(pgdb, sessions=400, messages=20)
    rng = random.Random(os.getpid())
    with pgdb.connect() as holder:
        holder.execute("BEGIN")
        holder.execute('UPDATE "ChatSessions" SET "Title" = \'x\' WHERE ctid IN '
                       '(SELECT ctid FROM "ChatSessions" LIMIT 1)')
        for i in range(trials):
            sig = (signal.SIGKILL, signal.SIGTERM)[i % 2]
            code, err, latencies = _stop_at_random(
                pgdb, tmp_path, ["backup", "--dir", tmp_path / "out"], sig, rng.uniform(0.2, 2.0))
            assert max(latencies) < APP_WORST, (max(latencies), sig)
            print(f"\nbackup, {signal.Signals(sig).name}: the app's worst query "
                  f"{max(latencies) * 1000:.0f} ms")
        holder.execute("COMMIT")
    for archive in (tmp_path / "out").glob("*.dump"):  # any that got its name is whole
        assert pgarchive.check_archive(address.parse(pgdb.url), archive, read_all=True).ok


# ---- all or nothing

def test_a_restore_failing_part_way_changes_nothing(pgdb, restorable):
    """A view the archive does not know keeps pg_restore from dropping ChatMessages, after
    it dropped other objects: the catalog and every row stay as they were."""
    archive, restored, before = restorable
    pgdb.run_sql('CREATE VIEW "RecentMessages" AS SELECT "Id" FROM "ChatMessages"')
    before = contents(pgdb)
    done = run("--database", pgdb.url, "restore", "--no-backup", archive)
    assert done.returncode == 6, done.stderr
    assert "rolled back" in done.stderr and PASSWORD not in done.stderr
    assert contents(pgdb) == before


# ---- what the manifest and the name say

def test_manifest_counts_the_archives_table_of_contents(pgdb, tmp_path):
    build(pgdb)
    result = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path)
    listed = subprocess.run([pgarchive.program("pg_restore"), "--list", str(result.path)],
                            capture_output=True, text=True, check=True).stdout
    entries = [line for line in listed.splitlines() if re.match(r"\d+; ", line)]
    assert len(entries) > 20
    assert json.loads(result.manifest.read_text())["toc_entries"] == len(entries)


def test_a_backup_through_a_service_is_named_after_its_database(pgdb, tmp_path):
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[other]\ndbname=postgres\n[orch]\nhost=127.0.0.1\n"
                        f"port={pgdb.cluster.port}\ndbname={pgdb.name}\nuser={USER}\n")
    build(pgdb, sessions=1)
    done = run("--json", "--database", "postgresql://?service=orch", "backup", "--dir", tmp_path,
               env={"PGSERVICEFILE": str(services), "PGPASSWORD": PASSWORD})
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)["path"]).name.startswith(f"{pgdb.name}.backup_")


def test_restore_of_another_databases_archive_asks_for_yes(pg_cluster, pgdb, tmp_path):
    build(pgdb, sessions=1)
    archive = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path).path
    other = pg_cluster.new_database("other")
    try:
        assert run("--database", other.url, "apply").returncode == 0  # it holds the schema
        before = other.tables()
        refused = run("--database", other.url, "restore", "--no-backup", archive)
        assert refused.returncode == 5, refused.stderr
        assert pgdb.name in refused.stderr and other.name in refused.stderr
        assert other.tables() == before and other.rows('SELECT count(*) FROM "ChatMessages"') == [(0,)]
        done = run("--database", other.url, "restore", "--no-backup", "--yes", archive)
        assert done.returncode == 0, done.stderr
        assert other.rows('SELECT count(*) FROM "ChatMessages"') != [(0,)]
    finally:
        pg_cluster.drop_database(other)
