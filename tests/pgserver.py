"""A throwaway PostgreSQL 15 cluster for the tests: initdb in a temp dir, scram passwords,
a unix socket in that dir and a loopback TCP port, pg_ctl -w start, stopped at the end.

The server refuses to run as root, so as root every server command runs as the
`postgres` user (runuser), and the temp dir belongs to it. Under CI=true a missing
server is a test failure; elsewhere the PostgreSQL tests skip, saying how to run them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from helpers import unavailable

SERVER_USER = "postgres"
ADMIN_PASSWORD = "adm1n-Secret"
USER = "orchestra"
# A password with characters that need quoting in URLs and key=value strings, and one
# that is easy to grep for in every output the tests read.
PASSWORD = "s3cret;P@ss word"
HOW_TO_RUN = ("PostgreSQL tests need initdb and pg_ctl (Debian: apt-get install -y "
              "postgresql-15 postgresql-contrib-15, then put /usr/lib/postgresql/15/bin on PATH)")


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}") if p.exists()), None)


def missing(reason: str):
    unavailable(f"{reason}. {HOW_TO_RUN}")  # under CI=true a failure: CI must run the PostgreSQL tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Database:
    """One database of the cluster, owned by USER, addressed every way the tool accepts."""

    name: str
    cluster: "Cluster"

    @property
    def url(self) -> str:
        return (f"postgresql://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:"
                f"{self.cluster.port}/{self.name}")

    @property
    def url_no_password(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.cluster.port}/{self.name}"

    @property
    def npgsql(self) -> str:
        return (f"Host=127.0.0.1;Port={self.cluster.port};Database={self.name};"
                f"Username={USER};Password=\"{PASSWORD}\"")

    @property
    def socket_url(self) -> str:
        return (f"postgresql://{USER}:{quote(PASSWORD, safe='')}@/{self.name}"
                f"?host={quote(str(self.cluster.socket_dir), safe='')}&port={self.cluster.port}")

    def connect(self, **kw):
        import psycopg
        return psycopg.connect(host=str(self.cluster.socket_dir), port=self.cluster.port,
                               dbname=self.name, user=USER, password=PASSWORD,
                               autocommit=True, **kw)

    def rows(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def tables(self, schema: str = "public") -> set[str]:
        return {r[0] for r in self.rows(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s AND table_type = 'BASE TABLE'", (schema,))}

    def run_sql(self, sql: str) -> None:
        with self.connect() as conn:
            conn.execute(sql)


class Cluster:
    def __init__(self):
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
        self.data = self.dir / "data"
        self.socket_dir = self.dir
        self.port = free_port()
        self._names = itertools.count(1)

    def _run(self, *argv, **kw):
        prefix = ["runuser", "-u", SERVER_USER, "--"] if self.as_root else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, **kw)

    def start(self) -> "Cluster":
        if not (self.initdb and self.pg_ctl):
            missing("initdb/pg_ctl not found")
        if self.as_root:
            shutil.chown(self.dir, SERVER_USER, SERVER_USER)
        pwfile = self.dir / "pw"
        pwfile.write_text(ADMIN_PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, SERVER_USER, SERVER_USER)
        self._check(self._run(self.initdb, "-D", str(self.data), "-U", "postgres",
                              "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                              "--locale=C.UTF-8", "--no-sync"), "initdb")
        self._pg_ctl_start()
        self.admin(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}' CREATEDB")
        return self

    def _pg_ctl_start(self) -> None:
        options = (f"-k {self.socket_dir} -p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=100")
        self._check(self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"),
                              "-w", "-t", "60", "-o", options, "start"), "pg_ctl start")

    @contextlib.contextmanager
    def stopped(self):
        """The server shut down cleanly (a checkpoint: every page is in its file, and no crash
        recovery rewrites them at the start), then started again: for editing its files."""
        self._check(self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"),
                    "pg_ctl stop")
        try:
            yield self.data
        finally:
            self._pg_ctl_start()

    def _check(self, done, what):
        if done.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            missing(f"{what} failed: {done.stderr.strip()} {tail}")

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(host=str(self.socket_dir), port=self.port, dbname=dbname,
                             user="postgres", password=ADMIN_PASSWORD, autocommit=True) as c:
            c.execute(sql)

    def new_database(self, prefix: str = "t") -> Database:
        name = f"{prefix}{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} OWNER {USER}")
        return Database(name, self)

    def drop_database(self, db: Database) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")

    def stop(self) -> None:
        if self.data.exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
