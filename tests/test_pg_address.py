"""Addressing PostgreSQL: URLs, Npgsql strings, the environment defaults, libpq's password
sources; every bad address is exit 6 in one line; the password never shows anywhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import cli, run
from orchestra_schema.address import PgAddress, parse
from pgserver import PASSWORD, USER

CHAT = "20250927103132_AddChatTables"


# ---- parsing (no server needed)

@pytest.mark.parametrize("value", ["orchestra.db", "./data/orchestra.db", "Data Source=orchestra.db",
                                   "data source=/var/x.db;Cache=Shared", "a=b.db"])
def test_sqlite_paths(value):
    assert isinstance(parse(value), Path)


def test_data_source_means_the_file():
    assert parse("Data Source=/var/lib/orchestra.db;Cache=Shared") == Path("/var/lib/orchestra.db")


def test_npgsql_string_as_the_app_uses_it():
    address = parse("Host=localhost;Database=orchestra;Username=postgres;Password=postgres")
    assert isinstance(address, PgAddress)
    assert address.connect_kwargs() == {"host": "localhost", "dbname": "orchestra",
                                        "user": "postgres", "password": "postgres"}
    assert address.display == "postgresql://postgres@localhost/orchestra"
    assert "postgres@" in str(address) and ":postgres@" not in repr(address)


def test_npgsql_synonyms_quotes_and_client_settings():
    address = parse("SERVER=db1; port = 5433 ;User ID=app;PWD='a;b''c';DB=orchestra;"
                    "Pooling=true;Maximum Pool Size=50;SSL Mode=VerifyFull;Search Path=orch")
    assert address.connect_kwargs() == {
        "host": "db1", "port": "5433", "user": "app", "password": "a;b'c", "dbname": "orchestra",
        "sslmode": "verify-full", "options": "-c search_path=orch"}
    assert "a;b'c" not in address.display


@pytest.mark.parametrize("url", ["postgresql://app:pw@db:5433/orchestra", "postgres://app:pw@db:5433/orchestra"])
def test_urls(url):
    address = parse(url)
    assert address.connect_kwargs()["password"] == "pw"
    assert address.display == "postgresql://app@db:5433/orchestra"


def test_socket_directory_and_service_in_a_url():
    assert parse("postgresql:///orchestra?host=/run/pg").display == "postgresql:///orchestra?host=/run/pg"
    assert "service=orch" in parse("postgresql://?service=orch").display


def test_a_malformed_url_is_a_usage_error_without_the_password():
    result = cli("--database", "postgresql://app:hunter2%zz@db/x", "status")
    assert result.exit_code == 2 and "hunter2" not in result.stderr


# ---- on the server

def test_url_npgsql_string_and_socket_all_reach_the_same_database(pgdb):
    for address in (pgdb.url, pgdb.npgsql, pgdb.socket_url):
        result = cli("--database", address, "status")
        assert result.exit_code == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr


def test_efcore_connection_is_the_default_before_hangfire_connection(pgdb, tmp_path):
    env = {"ORCHESTRA_DB": None, "EFCORE_CONNECTION": pgdb.npgsql,
           "HANGFIRE_CONNECTION": f"Data Source={tmp_path / 'x.db'}"}
    result = cli("apply", env=env)
    assert result.exit_code == 0, result.stderr
    assert "AgentSessions" in pgdb.tables() and not (tmp_path / "x.db").exists()


def test_libpq_password_sources(pgdb, tmp_path):
    no_password = ["--database", pgdb.url_no_password, "status"]
    assert run(*no_password, env={"PGPASSWORD": PASSWORD}).returncode == 0
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:{USER}:{PASSWORD.replace(':', chr(92) + ':')}\n")
    passfile.chmod(0o600)
    assert run(*no_password, env={"PGPASSFILE": str(passfile)}).returncode == 0
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[orch]\nhost=127.0.0.1\nport={pgdb.cluster.port}\ndbname={pgdb.name}\n"
                        f"user={USER}\n")
    done = run("--database", "postgresql://?service=orch", "status",
               env={"PGSERVICEFILE": str(services), "PGPASSWORD": PASSWORD})
    assert done.returncode == 0, done.stderr


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestra-schema: error: "), result.stderr
    assert PASSWORD not in result.stdout + result.stderr and "Traceback" not in result.stderr
    return lines[0]


def test_wrong_password(pgdb):
    result = cli("--database", pgdb.url.replace("s3cret", "wrong"), "status")
    assert result.exit_code == 6
    assert "wrong password for user orchestra" in _one_line_error(result)


def test_no_password_given(pgdb):
    result = run("--database", pgdb.url_no_password, "status",
                 env={"PGPASSWORD": "", "PGPASSFILE": "/nonexistent"})
    assert result.returncode == 6 and "password" in _one_line_error(result)


def test_missing_database(pgdb):
    result = cli("--database", pgdb.url.replace(pgdb.name, "nosuchdb"), "apply")
    assert result.exit_code == 6 and "nosuchdb does not exist" in _one_line_error(result)


def test_refused_port(pgdb):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        url = pgdb.url.replace(f":{pgdb.cluster.port}/", f":{port}/")
        result = cli("--database", url, "status")
    assert result.exit_code == 6 and "connection refused" in _one_line_error(result)


def _serve(handler):
    """A loopback TCP server running handler(conn) per connection; returns (port, stop)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def loop():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            handler(conn)
    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1], lambda: (stop.set(), server.close())


def test_not_a_postgresql_server(pgdb):
    def http(conn):
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()
    port, stop = _serve(http)
    try:
        url = pgdb.url.replace(f":{pgdb.cluster.port}/", f":{port}/")
        result = cli("--database", url, "status")
    finally:
        stop()
    assert result.exit_code == 6 and "not a PostgreSQL server" in _one_line_error(result)


def test_unanswering_host_gives_up_within_timeout(pgdb):
    held = []
    port, stop = _serve(held.append)  # accepts, never answers
    try:
        url = pgdb.url.replace(f":{pgdb.cluster.port}/", f":{port}/")
        result = cli("--timeout", "1", "--database", url, "status")
    finally:
        stop()
        for conn in held:
            conn.close()
    assert result.exit_code == 6 and "no answer from the server" in _one_line_error(result)


def test_password_in_no_output_and_no_command_line(pgdb):
    """Every output of a whole session, and the process's own argv as `ps` shows it,
    when the address comes from the environment as the app's does."""
    env = {**os.environ, "EFCORE_CONNECTION": pgdb.npgsql}
    env.pop("ORCHESTRA_DB", None)
    proc = subprocess.Popen([sys.executable, "-m", "orchestra_schema", "--json", "apply"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while proc.poll() is None:
        seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    outputs = [out, err, *seen]
    for args in (["--json", "status"], ["rollback", "--only", CHAT, "--dry-run"],
                 ["--json", "rollback", "--only", CHAT, "--yes", "--no-backup"],
                 ["--json", "adopt", "--no-backup"], ["-v", "rollback", "--to", "nope"]):
        done = subprocess.run([sys.executable, "-m", "orchestra_schema", *args], env=env,
                              capture_output=True, text=True)
        outputs += [done.stdout, done.stderr]
    assert not [o for o in outputs if PASSWORD in o]
    assert pgdb.rows("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s",
                     (f"%{PASSWORD}%",)) == [(0,)]
