"""backup, restore, verify and checklist through the CLI on a real PostgreSQL server: the
procedure's chat rollback with its backup, the checklist after it, verify finding what is
wrong, a backup brought up on an empty database, and the password never shown."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import types

import psycopg
import pytest

from helpers import cli, run
from orchestra_schema.engines.postgresql.driver import LOCK_TIMEOUT_MS
from orchestra_schema.migrations import default_sql_dir
from pgserver import PASSWORD
from test_pg_commands import AGENT, CHAT, CORE, add_rows, pg

EF_INITIAL = "20250927103132_InitialPostgreSQLMigration"


@pytest.fixture
def applied(pgdb, tmp_path, monkeypatch):
    """Every migration applied, rows in, the working directory a fresh one (backups land there)."""
    monkeypatch.chdir(tmp_path)
    assert pg(pgdb, "apply").exit_code == 0
    add_rows(pgdb)
    return pgdb


def checklist(database):
    result = pg(database, "--json", "checklist")
    return result, {i["name"]: (i["status"], i["detail"]) for i in json.loads(result.stdout)["items"]}


def test_backup_through_the_cli_says_where_and_never_the_password(applied, tmp_path):
    result = pg(applied, "--json", "backup", "--dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["copy_mode"] == "pg_dump" and data["integrity"] == "ok"
    assert data["applied_migrations"] == [CORE, CHAT, AGENT]
    assert data["database"] == applied.url_no_password
    assert PASSWORD not in (tmp_path / f"{data['path']}.json").read_text()


def test_chat_rollback_with_its_backup_then_the_checklist(applied, tmp_path):
    before, items = checklist(applied)
    assert before.exit_code == 1  # the chat tables are still there
    result = pg(applied, "rollback", "--only", CHAT, "--yes")
    assert result.exit_code == 0, result.stderr
    backups = sorted(tmp_path.glob(f"{applied.name}.backup_*.dump"))
    assert len(backups) == 1 and f"{backups[0].name}\n" in result.stderr

    result, items = checklist(applied)
    assert result.exit_code == 0, result.stdout
    assert items[f"{CHAT} absent from yoyo's history"][0] == "pass"
    assert items["table ChatMessages does not exist"][0] == "pass"
    assert items["every other managed table present and matching its history"][0] == "pass"
    assert items["database passes amcheck"] == ("n/a", items["database passes amcheck"][1])
    assert "superuser" in items["database passes amcheck"][1]
    backup_item = items["a backup taken before the rollback exists and matches its manifest"]
    assert backup_item[0] == "pass" and backups[0].name in backup_item[1]

    backups[0].write_bytes(backups[0].read_bytes()[:-10])  # damaged since: the item fails
    result, items = checklist(applied)
    assert result.exit_code == 1
    assert items["a backup taken before the rollback exists and matches its manifest"][0] == "fail"


def test_the_ef_row_counts_in_the_checklist(pgdb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pgdb.run_sql('CREATE TABLE "__EFMigrationsHistory" ("MigrationId" character varying(150) '
                 'NOT NULL PRIMARY KEY, "ProductVersion" character varying(32) NOT NULL)')
    assert pg(pgdb, "apply").exit_code == 0
    assert pg(pgdb, "rollback", "--only", CHAT, "--yes", "--no-backup").exit_code == 0
    _, items = checklist(pgdb)
    assert items[f"{CHAT} absent from __EFMigrationsHistory"][0] == "pass"
    pgdb.run_sql(f"""INSERT INTO "__EFMigrationsHistory" VALUES ('{EF_INITIAL}', '9.0.9')""")
    _, items = checklist(pgdb)
    assert items[f"{CHAT} absent from __EFMigrationsHistory"][0] == "fail"


def verify(database, *args):
    result = pg(database, "--json", *args, "verify")
    data = json.loads(result.stdout)
    return result, {c["name"]: c["problems"] for c in data["checks"]}, data


def test_verify_passes_and_says_why_amcheck_is_na(applied):
    result, checks, data = verify(applied)
    assert result.exit_code == 0, result.stdout
    assert data["integrity_pragma"] == "n/a"
    assert any("amcheck" in n and "superuser" in n for n in data["notes"])
    assert "hangfire" not in " ".join(data["unmanaged_tables"])


def install_amcheck(pg_cluster, database) -> None:
    pg_cluster.admin("CREATE EXTENSION amcheck; GRANT EXECUTE ON FUNCTION verify_heapam, "
                     "bt_index_check(regclass, boolean) TO orchestra", dbname=database.name)


def test_verify_with_amcheck_installed(pg_cluster, applied):
    install_amcheck(pg_cluster, applied)
    result, checks, data = verify(applied)
    assert result.exit_code == 0 and data["integrity_pragma"] == "amcheck"
    result = pg(applied, "--json", "verify", "--full")
    assert json.loads(result.stdout)["integrity_pragma"] == "amcheck heapallindexed"


def test_verify_finds_drift(applied):
    applied.run_sql('ALTER TABLE "Agents" ADD COLUMN "Extra" integer; '
                    'DROP INDEX "IX_ChatMessages_CreatedAt"')
    result, checks, _ = verify(applied)
    assert result.exit_code == 1
    text = " ".join(checks["drift"])
    assert "Agents.Extra" in text and "IX_ChatMessages_CreatedAt" in text
    assert [c for c, problems in checks.items() if problems] == ["drift"]


def test_verify_finds_a_foreign_key_never_checked(applied):
    applied.run_sql("""
        ALTER TABLE "ChatMessages" DROP CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId";
        INSERT INTO "ChatMessages" VALUES (gen_random_uuid(), gen_random_uuid(), 'user', 'x', 0,
            now(), NULL);
        ALTER TABLE "ChatMessages" ADD CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId"
            FOREIGN KEY ("SessionId") REFERENCES "ChatSessions" ("Id") ON DELETE CASCADE
            NOT VALID""")
    result, checks, _ = verify(applied)
    assert result.exit_code == 1
    assert [c for c, problems in checks.items() if problems] == ["foreign_keys"]
    assert "1 row(s) reference missing rows" in checks["foreign_keys"][0]


def test_verify_finds_a_changed_migration_file(applied, tmp_path):
    sql = shutil.copytree(default_sql_dir("postgresql"), tmp_path / "sql")
    chat = sql / f"{CHAT}.rollback.sql"
    chat.write_text(chat.read_text() + "\n-- edited after it was applied\n")
    result, checks, _ = verify(applied, "--sql-dir", sql)
    assert result.exit_code == 1
    assert "changed since it was applied" in checks["migration_files"][0]


def test_restore_brings_a_backup_up_on_an_empty_database(pg_cluster, applied, tmp_path):
    made = json.loads(pg(applied, "--json", "backup", "--dir", tmp_path).stdout)
    empty = pg_cluster.new_database("new")
    try:
        # As a new server would be addressed: the app's own variable, Npgsql's syntax; the
        # archive's manifest names another database, but this one is empty: no --yes needed.
        result = cli("--json", "restore", made["path"],
                     env={"EFCORE_CONNECTION": empty.npgsql})
        assert result.exit_code == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert json.loads(result.stdout)["applied_migrations"] == [CORE, CHAT, AGENT]
        assert empty.tables() == applied.tables()
        assert empty.rows('SELECT count(*) FROM "ChatMessages"') == [(5,)]
        result, checks, _ = verify(empty)
        assert result.exit_code == 0, checks
    finally:
        pg_cluster.drop_database(empty)


def test_restore_refuses_a_truncated_archive_through_the_cli(applied, tmp_path):
    made = json.loads(pg(applied, "--json", "backup", "--dir", tmp_path).stdout)
    archive = tmp_path / made["path"]
    archive.write_bytes(archive.read_bytes()[:-200])
    applied.run_sql('DELETE FROM "ChatMessages"')
    result = pg(applied, "restore", archive)
    assert result.exit_code == 5
    assert result.stderr.startswith("orchestra-schema: error: ") and "unchanged" in result.stderr
    assert applied.rows('SELECT count(*) FROM "ChatMessages"') == [(0,)]


def test_restore_behind_an_app_transaction_gives_up_at_timeout_and_changes_nothing(applied,
                                                                                   tmp_path):
    """The archive's script sets lock_timeout 0: restore watches its own pg_restore and
    cancels a lock wait past 200 ms, so the app's queries never queue behind it for long."""
    made = json.loads(pg(applied, "--json", "backup", "--dir", tmp_path).stdout)
    applied.run_sql('DELETE FROM "ChatMessages"')
    with app_holding_and_reading(applied) as app:
        result = run("--timeout", "2", "--database", applied.url, "restore", made["path"],
                     "--no-backup", timeout=60)
    assert result.returncode == 3, result.stderr
    assert "nothing changed" in result.stderr
    assert app.failures == [] and app.queries > 10
    assert applied.rows('SELECT count(*) FROM "ChatMessages"') == [(0,)]


@contextlib.contextmanager
def app_holding_and_reading(database):
    """The app: one session in a long transaction that has read ChatMessages (ACCESS SHARE
    until it ends), another querying the table with a statement_timeout a few times the
    tool's lock_timeout: a query queued behind a DROP waiting for its lock for longer fails."""
    app = types.SimpleNamespace(queries=0, failures=[])
    done = threading.Event()
    holder = database.connect()
    holder.execute("BEGIN")
    holder.execute('SELECT count(*) FROM "ChatMessages"')

    def read():
        with database.connect() as conn:
            conn.execute(f"SET statement_timeout = '{4 * LOCK_TIMEOUT_MS}ms'")
            while not done.is_set():
                try:
                    conn.execute('SELECT count(*) FROM "ChatMessages"').fetchone()
                    app.queries += 1
                except psycopg.errors.QueryCanceled as err:
                    app.failures.append(str(err))
    reader = threading.Thread(target=read)
    reader.start()
    try:
        yield app
    finally:
        done.set()
        reader.join()
        holder.execute("ROLLBACK")
        holder.close()


def test_unmanaged_tables_are_exactly_those_of_the_app_schema(applied):
    """Hangfire.PostgreSql keeps its tables in schema hangfire: not ours, not unmanaged here."""
    applied.run_sql("""CREATE SCHEMA hangfire; CREATE TABLE hangfire.job (id bigserial PRIMARY KEY);
                       CREATE TABLE hangfire."Agents" (id integer);
                       CREATE TABLE "Notes" (id integer)""")
    result, checks, data = verify(applied)
    assert result.exit_code == 0, result.stdout
    assert data["unmanaged_tables"] == ["Notes"]


def test_verify_finds_a_foreign_key_whose_triggers_were_disabled(pg_cluster, applied):
    pg_cluster.admin("""ALTER TABLE "ChatMessages" DISABLE TRIGGER ALL;
        INSERT INTO "ChatMessages" VALUES (gen_random_uuid(), gen_random_uuid(), 'user', 'x', 0,
            now(), NULL)""", dbname=applied.name)  # system triggers: a superuser's to disable
    result, checks, _ = verify(applied)
    assert result.exit_code == 1
    assert [c for c, problems in checks.items() if problems] == ["foreign_keys"]
    assert checks["foreign_keys"] == [
        'ChatMessages: foreign key FK_ChatMessages_ChatSessions_SessionId has its triggers '
        'disabled: rows written meanwhile were never checked; 1 row(s) reference missing rows; '
        'fix the rows, then ALTER TABLE ... ENABLE TRIGGER ALL']


def test_verify_finds_a_dropped_not_null_and_a_changed_on_delete(applied):
    applied.run_sql("""
        ALTER TABLE "ChatMessages" ALTER COLUMN "Content" DROP NOT NULL;
        ALTER TABLE "ChatMessages" DROP CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId";
        ALTER TABLE "ChatMessages" ADD CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId"
            FOREIGN KEY ("SessionId") REFERENCES "ChatSessions" ("Id") ON DELETE RESTRICT""")
    result, checks, _ = verify(applied)
    assert result.exit_code == 1
    assert [c for c, problems in checks.items() if problems] == ["drift"]
    assert sorted(checks["drift"]) == [
        "column ChatMessages.Content: notnull True expected, False found",
        "foreign key ChatMessages(SessionId) -> ChatSessions(Id) ON DELETE CASCADE: missing or "
        "different",
        "foreign key ChatMessages(SessionId) -> ChatSessions(Id) ON DELETE RESTRICT: not "
        "expected (extra)"]


# ---- amcheck on indexes damaged as disks and bugs damage them (the server stopped cleanly,
# its files edited, started again)

PAGE = 8192  # the server's block size
LINE_POINTERS = 24  # a page's ItemIdData array starts after its 24-byte header


def index_file(pg_cluster, database, index: str):
    return pg_cluster.data / database.rows("SELECT pg_relation_filepath(%s::regclass)",
                                           (f'"{index}"',))[0][0]


def integrity_problems(database, *options) -> tuple[int, list[str]]:
    result = pg(database, "--json", "verify", *options)
    data = json.loads(result.stdout)
    assert data["integrity_pragma"].startswith("amcheck"), data["notes"]
    return result.exit_code, next(c["problems"] for c in data["checks"] if c["name"] == "integrity")


def test_verify_names_a_btree_index_whose_keys_are_out_of_order(pg_cluster, applied):
    """The first two line pointers of PK_ChatMessages's one leaf page (block 1) swapped."""
    install_amcheck(pg_cluster, applied)
    path = index_file(pg_cluster, applied, "PK_ChatMessages")
    with pg_cluster.stopped():
        with open(path, "r+b") as f:
            f.seek(PAGE + LINE_POINTERS)
            first, second = f.read(4), f.read(4)
            f.seek(PAGE + LINE_POINTERS)
            f.write(second + first)
    code, problems = integrity_problems(applied)
    assert code == 1
    assert len(problems) == 1 and problems[0].startswith(
        'index public."PK_ChatMessages" on ChatMessages: item order invariant violated')
    assert problems[0].endswith("; REINDEX it")


def test_only_verify_full_names_an_index_missing_the_newest_rows(pg_cluster, applied):
    """PK_ChatMessages's file as it was before three more rows were inserted: a sound
    B-tree that lacks their keys, which only heapallindexed (--full) finds."""
    install_amcheck(pg_cluster, applied)
    path = index_file(pg_cluster, applied, "PK_ChatMessages")
    with pg_cluster.stopped():
        older = path.read_bytes()
    applied.run_sql("""INSERT INTO "ChatMessages" SELECT gen_random_uuid(),
        '51462f0a-ef08-4c51-aaf2-89fc4e821db8', 'user', 'later', 0, now(), NULL
        FROM generate_series(1, 3)""")
    with pg_cluster.stopped():
        path.write_bytes(older)
    assert integrity_problems(applied) == (0, [])
    code, problems = integrity_problems(applied, "--full")
    assert code == 1 and len(problems) == 1
    assert problems[0].startswith('index public."PK_ChatMessages" on ChatMessages: heap tuple')
    assert "lacks matching index tuple" in problems[0]
