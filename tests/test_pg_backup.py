"""backup and restore on PostgreSQL, on the throwaway server: pg_dump archives taken while
a writer process commits, checked, restored all-or-nothing, the password never shown."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestra_schema import address
from orchestra_schema.engines.postgresql import archive as pgarchive
from orchestra_schema.files import digest as digests
from orchestra_schema.context import Context
from orchestra_schema.errors import Refused
from orchestra_schema.migrations import default_sql_dir, load

from helpers import cli
from pgserver import PASSWORD

WRITER = Path(__file__).parent / "pg_writer.py"


def ctx_of(database, timeout=10.0) -> Context:
    return Context(address.parse(database.url), None, timeout)


def build(database, sessions=20, messages=5) -> None:
    """The three migrations applied by the tool, chat rows, and a Hangfire schema."""
    assert cli("--database", database.url, "apply").exit_code == 0
    with database.connect() as conn:
        conn.execute("""INSERT INTO "ChatSessions" SELECT gen_random_uuid(), 'u', 'i', 't', now(),
                        now() FROM generate_series(1, %s)""", (sessions,))
        conn.execute("""INSERT INTO "ChatMessages" SELECT gen_random_uuid(), s."Id", 'user',
                        'hello', 0, now(), NULL FROM "ChatSessions" s, generate_series(1, %s)""",
                     (messages,))
        conn.execute("CREATE SCHEMA hangfire")
        conn.execute("CREATE TABLE hangfire.job (id bigserial PRIMARY KEY, state text)")
        conn.execute("INSERT INTO hangfire.job (state) VALUES ('Succeeded'), ('Enqueued')")


def state(database) -> dict:
    """Tables (every schema) with their row counts."""
    out = {}
    for schema, table in database.rows(pgarchive.LIVE_TABLES):
        out[f"{schema}.{table}"] = database.rows(f'SELECT count(*) FROM "{schema}"."{table}"')[0][0]
    return out


@pytest.fixture
def archive(pgdb, tmp_path) -> Path:
    """A backup of a built database, in tmp_path."""
    build(pgdb)
    return pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path).path


def test_backup_is_0600_checked_and_has_the_manifest(pgdb, tmp_path):
    build(pgdb)
    result = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path)
    assert result.path.name.startswith(f"{pgdb.name}.backup_") and result.path.suffix == ".dump"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    manifest = json.loads(result.manifest.read_text())
    assert manifest["size"] == result.path.stat().st_size == result.size
    assert manifest["digest"] == {"algorithm": "blake3",
                                  "value": digests.of_file(result.path).value}
    assert manifest["applied_migrations"] == [m.id for m in load(default_sql_dir("postgresql"))]
    assert manifest["server_version"].startswith("15")
    assert manifest["source"] == address.parse(pgdb.url).display
    assert not [p for p in tmp_path.iterdir() if ".orchestra-tmp-" in p.name]
    assert pgarchive.check_archive(address.parse(pgdb.url), result.path, read_all=True).ok


def test_backup_is_synced_then_named_then_its_manifest(pgdb, tmp_path, monkeypatch):
    """The archive is fsynced while pg_restore reads it back (not in publish): still in its
    last state before it gets its name, then the directory; the manifest after it."""
    from test_fsync import Spy
    build(pgdb)
    spy = Spy(monkeypatch)
    result = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path)
    spy.assert_published_durably(result.path)
    spy.assert_published_durably(result.manifest)
    named = [e[0] != "sync" and e[3] for e in spy.events]
    assert named.index(os.path.realpath(result.path)) < named.index(
        os.path.realpath(result.manifest))


def test_backup_under_a_writer_restores_to_one_consistent_state(pg_cluster, pgdb, tmp_path):
    build(pgdb, sessions=0)
    writer = subprocess.Popen([sys.executable, str(WRITER), str(pg_cluster.socket_dir),
                               str(pg_cluster.port), pgdb.name, PASSWORD],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        while pgdb.rows('SELECT count(*) FROM "ChatSessions"')[0][0] < 50:
            time.sleep(0.05)
        result = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path)
        time.sleep(0.2)
    finally:
        writer.terminate()
        writer.wait(10)
    copy = pg_cluster.new_database("restored")
    try:
        pgarchive.restore_database(ctx_of(copy), result.path, make_backup=False, yes=True)
        sessions = copy.rows('SELECT count(*) FROM "ChatSessions"')[0][0]
        per_session = copy.rows('SELECT s."Id", count(m."Id") FROM "ChatSessions" s LEFT JOIN '
                                '"ChatMessages" m ON m."SessionId" = s."Id" GROUP BY s."Id"')
        assert sessions >= 50
        # The writer commits a session and its three messages together: a consistent
        # snapshot holds whole transactions only.
        assert {n for _, n in per_session} == {3}
        assert pgdb.rows('SELECT count(*) FROM "ChatSessions"')[0][0] > sessions
    finally:
        pg_cluster.drop_database(copy)


def test_restore_into_an_empty_database(pg_cluster, pgdb, tmp_path):
    build(pgdb)
    archive = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path).path
    empty = pg_cluster.new_database("empty")
    try:
        result = pgarchive.restore_database(ctx_of(empty), archive, yes=True)  # another name
        assert state(empty) == state(pgdb)
        assert result.backup is None  # nothing to keep of an empty database
        assert result.applied_migrations == [m.id for m in load(default_sql_dir("postgresql"))]
    finally:
        pg_cluster.drop_database(empty)


def test_restore_puts_the_backup_back_after_a_safety_backup(pgdb, tmp_path, monkeypatch):
    build(pgdb)
    before = state(pgdb)
    archive = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path).path
    pgdb.run_sql('DELETE FROM "ChatMessages"; INSERT INTO hangfire.job (state) VALUES (\'new\')')
    monkeypatch.chdir(tmp_path)
    result = pgarchive.restore_database(ctx_of(pgdb), archive)
    assert state(pgdb) == before
    assert result.backup.name.startswith(f"{pgdb.name}.pre-restore_")
    assert pgarchive.check_archive(address.parse(pgdb.url), tmp_path / result.backup.name).ok


@pytest.mark.parametrize("keep_manifest", [True, False])
def test_a_truncated_archive_is_refused_and_nothing_changes(pgdb, tmp_path, archive,
                                                           keep_manifest):
    cut = tmp_path / f"cut{pgarchive.SUFFIX}"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    if keep_manifest:
        manifest = json.loads(pgarchive.manifest_path(archive).read_text())
        pgarchive.manifest_path(cut).write_text(json.dumps(manifest))
    pgdb.run_sql('DELETE FROM "ChatMessages"')
    refused_and_unchanged(pgdb, cut, "refused to restore")


def test_an_altered_archive_is_refused(pgdb, archive):
    data = bytearray(archive.read_bytes())
    data[-100] ^= 0xFF
    archive.write_bytes(bytes(data))
    refused_and_unchanged(pgdb, archive, "differs from its manifest")


def test_restore_refuses_tables_the_backup_lacks(pgdb, archive):
    pgdb.run_sql('CREATE TABLE "Later" (id int)')
    refused_and_unchanged(pgdb, archive, "public.Later")


def refused_and_unchanged(database, archive: Path, match: str) -> None:
    before = state(database)
    with pytest.raises(Refused, match=match):
        pgarchive.restore_database(ctx_of(database), archive)
    assert state(database) == before


def test_keep_deletes_only_this_databases_older_backups(pgdb, tmp_path):
    build(pgdb, sessions=1)
    made = [pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path).path for _ in range(3)]
    by_hand = tmp_path / f"{pgdb.name}.backup_20000101_000000{pgarchive.SUFFIX}"
    by_hand.write_bytes(made[0].read_bytes())  # no manifest: not this tool's
    last = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path, keep=2)
    assert set(last.deleted) == set(made[:2])
    assert by_hand.exists() and made[2].exists() and last.path.exists()


def test_the_password_never_shows(pgdb, tmp_path):
    """Not in pg_dump's or pg_restore's command line or environment, the manifest, the
    result, or any file left behind."""
    build(pgdb, sessions=200, messages=50)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if b"pg_dump" in cmdline or b"pg_restore" in cmdline:
                    seen.append((cmdline, environ))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = pgarchive.backup_database(ctx_of(pgdb), directory=tmp_path)
        copy_ctx = ctx_of(pgdb)
        pgarchive.restore_database(copy_ctx, result.path, make_backup=False)
    finally:
        stop.set()
        watcher.join()
    programs = {os.path.basename(c.split(b"\0")[0]) for c, _ in seen}
    assert {b"pg_dump", b"pg_restore"} <= programs
    secret = PASSWORD.encode()
    assert not [c for c, e in seen if secret in c or secret in e]
    assert secret not in result.manifest.read_bytes()
    assert PASSWORD not in repr(result)
    assert not [p for p in tmp_path.iterdir() if "pgpass" in p.name]
