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

from helpers import build_ef_database, cli, run
from orchestra_schema.address import PgAddress, parse
from orchestra_schema.errors import UsageError
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


# Keys the app's settings may put first (Npgsql's docs list them): each one makes a
# connection string, never a file name.
FIRST_KEYS = ["Server=db1", "Pooling=true", "Include Error Detail=true", "Timeout=15",
              "Command Timeout=30", "SSL Mode=Require", "Trust Server Certificate=true",
              "Maximum Pool Size=50", "Max Pool Size=5", "Keepalive=30", "Tcp Keepalive=true",
              "Application Name=api", "Search Path=orch", "Enlist=false", "User ID=app",
              "Connection Idle Lifetime=300", "Target Session Attributes=primary",
              "Multiplexing=false", "Log Parameters=false", "Persist Security Info=true"]


@pytest.mark.parametrize("first", FIRST_KEYS)
def test_any_npgsql_key_may_come_first(first):
    address = parse(f"{first};Host=db1;Database=orchestra;Username=app;Password='p;w'")
    assert isinstance(address, PgAddress)
    params = address.connect_kwargs()
    assert params["host"] == "db1" and params["password"] == "p;w"
    assert "p;w" not in address.display


def test_npgsql_values_reach_libpq_in_its_words():
    address = parse('Include Error Detail=true;Server=db1;SSL Password="k;ey";'
                    "Root Certificate=/ca.pem;Application Name=api;Options=-c x=1;"
                    "Search Path=orch;Channel Binding=Require;Timeout=15;Command Timeout=30")
    assert address.connect_kwargs() == {
        "host": "db1", "sslpassword": "k;ey", "sslrootcert": "/ca.pem", "application_name": "api",
        "options": "-c x=1 -c search_path=orch", "channel_binding": "require",
        "connect_timeout": "15"}
    assert address.secrets() == {"sslpassword": "k;ey"} and address.get("sslpassword") is None


# Strings the app's settings might hold, each malformed, each with a password to look for.
SECRET_PARTS = ("Pa55", "wOrd9")
MALFORMED = [
    "Host=db.internal;Database=orchestra;Username=orchestra;Password=Pa55;wOrd9",
    "Pooling=true;Host=db.internal;Database=orchestra;Password=Pa55;wOrd9=x",
    "Include Error Detail=true;Host=db.internal;Password=Pa55;wOrd9",
    "Host=db.internal;Password=\"Pa55;wOrd9",  # a quote never closed
    "Host=db.internal;Password=\"Pa55\"wOrd9;Database=orchestra",  # text after the quote
    "Host=db.internal;Pasword=Pa55wOrd9",  # a misspelt key
    "Data Source=orchestra.db;Password=Pa55;wOrd9",  # SQLite's, malformed too
]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_string_is_refused_naming_the_key_never_the_value(value):
    with pytest.raises(UsageError) as err:
        parse(value)
    assert not [part for part in SECRET_PARTS if part in str(err.value)], err.value
    assert "key" in str(err.value) or "start" in str(err.value)


def _every_command(target: str) -> list[list[str]]:
    return [["status"], ["--json", "status"], ["-q", "apply"], ["apply", "--dry-run"],
            ["verify"], ["--json", "verify"], ["checklist"], ["backup"], ["rehearse"],
            ["rollback", "--to", "0", "--yes"], ["adopt"], ["restore", "x.backup"],
            ["recover", "--yes"], ["history", "forget", CHAT, "--yes"], ["schema"],
            ["lint"], ["copy-to", target], ["--json", "copy-to", target], ["new", "x"]]


@pytest.mark.parametrize("value", MALFORMED)
def test_every_command_refuses_a_malformed_string_and_creates_nothing(value, tmp_path,
                                                                     monkeypatch):
    """From --database and from $EFCORE_CONNECTION: exit 2, no file made in the working
    directory (or the sql dir), the password in no output."""
    monkeypatch.chdir(tmp_path)
    sql = tmp_path / "sql"
    sql.mkdir()
    for args in _every_command(value):
        runs = [(["--database", value, "--sql-dir", sql, *args], {}),
                (["--sql-dir", sql, *args], {"ORCHESTRA_DB": None, "EFCORE_CONNECTION": value})]
        for argv, env in runs:
            result = cli(*argv, env=env)
            out = result.stdout + result.stderr
            assert result.exit_code == 2, (argv, out)
            assert not [part for part in SECRET_PARTS if part in out], (argv, out)
            assert sorted(tmp_path.rglob("*")) == [sql], argv


@pytest.mark.parametrize("value", MALFORMED[:-1])
def test_copy_to_refuses_a_malformed_target(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = build_ef_database(tmp_path / "orchestra.db")
    before = sorted(tmp_path.rglob("*"))
    for json_flag in ([], ["--json"]):
        result = cli("--database", source, *json_flag, "copy-to", value)
        out = result.stdout + result.stderr
        assert result.exit_code == 2 and not [p for p in SECRET_PARTS if p in out], out
    assert sorted(tmp_path.rglob("*")) == before


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
    typed = "Typo-7Qx;pass"
    for address in (pgdb.url.replace("s3cret%3BP%40ss%20word", "Typo-7Qx%3Bpass"),
                    pgdb.npgsql.replace(PASSWORD, typed)):
        assert PASSWORD not in address
        for args in (["status"], ["--json", "verify"]):
            result = cli("--database", address, *args)
            assert result.exit_code == 6
            assert "wrong password for user orchestra" in _one_line_error(result)
            assert "Typo-7Qx" not in result.stdout + result.stderr, result.stderr


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
