"""The migration commands on a real PostgreSQL server: status, apply, rollback (--to, --only),
adopt, history forget, recover; EF's history kept true; unmanaged schemas left alone."""

from __future__ import annotations

import json

import pytest

from helpers import cli
from orchestra_schema import address
from pgserver import PASSWORD
from test_pg_schema import AGENT_SESSIONS, INITIAL, catalog_schema, ef_schema

CORE = "20250927103131_OrchestraCore"
CHAT = "20250927103132_AddChatTables"
AGENT = "20251109091141_AddAgentSessionsTable"
EF_INITIAL = "20250927103132_InitialPostgreSQLMigration"
CHAT_TABLES = {"ChatSessions", "ChatMessages"}
HISTORY = {"_yoyo_migration", "_yoyo_log", "_yoyo_version", "_orchestra_schema_checksum"}
EF_HISTORY_DDL = """CREATE TABLE "__EFMigrationsHistory" (
    "MigrationId" character varying(150) NOT NULL,
    "ProductVersion" character varying(32) NOT NULL,
    CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY ("MigrationId"))"""


def pg(database, *args, **kw):
    """The CLI in this process on database, asserting no output shows the password."""
    result = cli("--database", database.url, *args, **kw)
    assert PASSWORD not in result.stdout + result.stderr
    return result


def history(database) -> set[str]:
    if "_yoyo_migration" not in database.tables():
        return set()
    return {r[0] for r in database.rows("SELECT migration_id FROM _yoyo_migration")}


def ef_rows(database) -> dict[str, str]:
    return dict(database.rows('SELECT "MigrationId", "ProductVersion" FROM "__EFMigrationsHistory"'))


def add_rows(database) -> None:
    database.run_sql("""
        INSERT INTO "Repositories" VALUES ('r1', 'repo', '/src', NULL, 0, true, now(), now(), NULL,
            NULL, 'main', '[]', 0, 0, 0, 0, '{Read,Write}');
        INSERT INTO "Agents" ("Id", "Name", "Type", "RepositoryPath", "Status", "LastPing",
            "CreatedAt", "UpdatedAt", "IsDeleted", "MaxConcurrentTasks", "HealthCheckInterval",
            "TotalTasksCompleted", "TotalTasksFailed", "TotalExecutionTime", "AverageExecutionTime",
            "RepositoryId") VALUES ('a1', 'agent', 'claude', '/src', 0, now(), now(), now(), false,
            1, 30, 0, 0, 0, 0, 'r1');
        INSERT INTO "ChatSessions" VALUES ('51462f0a-ef08-4c51-aaf2-89fc4e821db8', 'u1', 'i1', 't',
            now(), now());
        INSERT INTO "ChatMessages" SELECT gen_random_uuid(), '51462f0a-ef08-4c51-aaf2-89fc4e821db8',
            'user', 'hello', 0, now(), NULL FROM generate_series(1, 5);
        INSERT INTO "AgentSessions" VALUES ('as1', 'a1', 'sess-1', 42, '/src', 0, now(), now(), NULL,
            NULL, 0.5, 10, 3);
    """)


def ef_made(database, with_agent_sessions=True) -> None:
    """The database as `dotnet ef database update` made it: EF's tables and history."""
    from orchestra_schema.migrations import default_sql_dir, load
    with database.connect() as conn:
        for m in load(default_sql_dir("postgresql")):
            if with_agent_sessions or m.id != AGENT:
                conn.execute(m.path.read_text())
        conn.execute(EF_HISTORY_DDL)
        conn.execute("""INSERT INTO "__EFMigrationsHistory" VALUES (%s, '9.0.9')""", (EF_INITIAL,))
        if with_agent_sessions:
            conn.execute("""INSERT INTO "__EFMigrationsHistory" VALUES (%s, '9.0.9')""", (AGENT,))


@pytest.fixture
def applied(pgdb):
    assert pg(pgdb, "apply").exit_code == 0
    add_rows(pgdb)
    return pgdb


def test_apply_makes_ef_cores_schema_and_the_history(pgdb):
    result = pg(pgdb, "--json", "apply")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["applied"] == [CORE, CHAT, AGENT]
    assert catalog_schema(pgdb) == {**ef_schema(INITIAL), **ef_schema(AGENT_SESSIONS)}
    assert history(pgdb) == {CORE, CHAT, AGENT}
    assert HISTORY <= pgdb.tables()
    sums = pgdb.rows("SELECT migration_id, forward_sha256 FROM _orchestra_schema_checksum")
    assert {r[0] for r in sums} == {CORE, CHAT, AGENT} and all(len(r[1]) == 64 for r in sums)
    assert "up to date" in pg(pgdb, "apply").stderr


def test_status_reads_without_writing(pgdb):
    result = pg(pgdb, "--json", "status")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [m["applied"] for m in report["migrations"]] == [False] * 3
    assert report["ef_history"] is None
    assert pgdb.tables() == set()  # no history tables made by a read
    assert report["database"].startswith("postgresql://orchestra@127.0.0.1:")
    pg(pgdb, "apply")
    report = json.loads(pg(pgdb, "--json", "status").stdout)
    assert all(m["applied"] and m["forward_matches"] for m in report["migrations"])


def test_apply_to_and_dry_run(pgdb):
    dry = pg(pgdb, "apply", "--to", CHAT, "--dry-run")
    assert dry.exit_code == 0 and f"-- apply {CHAT}" in dry.stdout and AGENT not in dry.stdout
    assert pgdb.tables() == set()
    assert pg(pgdb, "apply", "--to", CHAT).exit_code == 0
    assert history(pgdb) == {CORE, CHAT} and "AgentSessions" not in pgdb.tables()


def test_rollback_only_chat_keeps_agent_sessions(applied):
    refused = pg(applied, "rollback", "--only", CHAT, "--no-backup")
    assert refused.exit_code == 5 and "ChatMessages 5" in refused.stderr
    assert CHAT_TABLES <= applied.tables()
    dry = pg(applied, "rollback", "--only", CHAT, "--dry-run")
    assert 'DROP TABLE "ChatMessages"' in dry.stdout and "AgentSessions" not in dry.stdout
    result = pg(applied, "--json", "rollback", "--only", CHAT, "--yes", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back"] == [CHAT]
    assert json.loads(result.stdout)["rows_lost"] == {"ChatMessages": 5, "ChatSessions": 1}
    assert not CHAT_TABLES & applied.tables()
    assert applied.rows('SELECT count(*) FROM "AgentSessions"') == [(1,)]
    assert history(applied) == {CORE, AGENT}


def test_rollback_counts_the_rows_at_risk_exactly_wherever_the_numbers_are_shown(applied):
    """Without counts asked for (the CLI's --yes without --json), the tables that hold rows
    are named but not counted: COUNT(*) would read all of ChatMessages before its DROP."""
    from orchestra_schema.commands import migrate as commands
    from orchestra_schema.context import Context
    from orchestra_schema.errors import Refused
    applied.run_sql('DELETE FROM "AgentSessions"')  # empty: never listed
    ctx = Context(address.parse(applied.url))
    with pytest.raises(Refused, match=r"ChatMessages 5, ChatSessions 1"):
        commands.rollback(ctx, only=CORE, exact_counts=False)  # the refusal counts anyway
    dry = commands.rollback(ctx, only=CORE, dry_run=True, exact_counts=False)
    assert dry.rows_lost == {"ChatMessages": 5, "ChatSessions": 1, "Repositories": 1, "Agents": 1}
    assert history(applied) == {CORE, CHAT, AGENT}
    result = commands.rollback(ctx, only=CHAT, yes=True, exact_counts=False)
    assert result.rolled_back == [CHAT]
    assert result.rows_lost == {"ChatMessages": None, "ChatSessions": None}
    assert not CHAT_TABLES & applied.tables()


def test_rollback_only_core_takes_what_depends_on_it(applied):
    result = pg(applied, "--json", "rollback", "--only", CORE, "--yes", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back"] == [AGENT, CHAT, CORE]
    # EF's table stays, empty, as `dotnet ef database update 0` leaves it
    assert applied.tables() == HISTORY | {"__EFMigrationsHistory"} and ef_rows(applied) == {}


def test_rollback_to_zero_leaves_unmanaged_tables_and_schemas(applied):
    applied.run_sql("""CREATE SCHEMA hangfire; CREATE TABLE hangfire.job (id bigserial, state text);
                       INSERT INTO hangfire.job (state) VALUES ('Succeeded');
                       CREATE TABLE public.notes (n int); INSERT INTO public.notes VALUES (1)""")
    result = pg(applied, "rollback", "--to", "0", "--yes", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert applied.tables() == HISTORY | {"__EFMigrationsHistory", "notes"}
    assert applied.rows("SELECT state FROM hangfire.job") == [("Succeeded",)]
    assert pg(applied, "apply").exit_code == 0  # and back again


def test_rollback_needs_to_or_only(applied):
    assert pg(applied, "rollback", "--no-backup").exit_code == 2
    assert pg(applied, "rollback", "--to", "0", "--only", CHAT).exit_code == 2
    assert pg(applied, "rollback", "--only", "nope", "--no-backup").exit_code == 2


def test_ef_made_database_must_be_adopted_then_ef_history_follows(pgdb):
    ef_made(pgdb)
    refused = pg(pgdb, "apply")
    assert refused.exit_code == 5 and "adopt" in refused.stderr
    result = pg(pgdb, "--json", "adopt", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["recorded"] == [CORE, CHAT, AGENT]
    assert history(pgdb) == {CORE, CHAT, AGENT}
    assert pg(pgdb, "rollback", "--only", CHAT, "--yes", "--no-backup").exit_code == 0
    assert ef_rows(pgdb) == {AGENT: "9.0.9"}  # the app must not believe the chat tables exist
    assert pg(pgdb, "apply").exit_code == 0
    assert ef_rows(pgdb) == {EF_INITIAL: "9.0.9", AGENT: "9.0.9"}
    assert pg(pgdb, "rollback", "--only", AGENT, "--yes", "--no-backup").exit_code == 0
    assert ef_rows(pgdb) == {EF_INITIAL: "9.0.9"}


def test_adopt_before_agent_sessions_records_only_what_ef_lists(pgdb):
    ef_made(pgdb, with_agent_sessions=False)
    result = pg(pgdb, "--json", "adopt", "--no-backup")
    assert json.loads(result.stdout)["recorded"] == [CORE, CHAT]
    assert pg(pgdb, "apply").exit_code == 0
    assert ef_rows(pgdb) == {EF_INITIAL: "9.0.9", AGENT: "9.0.9"}


def test_adopt_refuses_a_different_schema_naming_every_difference(pgdb):
    ef_made(pgdb)
    pgdb.run_sql('ALTER TABLE "ChatMessages" ALTER COLUMN "Content" TYPE text;'
                 'DROP INDEX "IX_Tasks_Status"')
    result = pg(pgdb, "adopt", "--no-backup")
    assert result.exit_code == 5
    assert "ChatMessages.Content" in result.stderr and "IX_Tasks_Status" in result.stderr
    assert history(pgdb) == set() and "_orchestra_schema_checksum" not in pgdb.tables()
    assert not [t for t in pgdb.tables() if t.startswith("orchestra_schema_replay")]


def test_history_forget_binds_the_id(applied):
    result = pg(applied, "history", "forget", CHAT, "--yes", "--no-backup")
    assert result.exit_code == 0, result.stderr
    assert history(applied) == {CORE, AGENT} and CHAT_TABLES <= applied.tables()
    sneaky = pg(applied, "history", "forget", "x'; DROP TABLE \"Agents\"; --", "--yes", "--no-backup")
    assert sneaky.exit_code == 2 and "Agents" in applied.tables()


def test_recover_points_to_restore(applied):
    result = pg(applied, "recover")
    assert result.exit_code == 2 and "restore" in result.stderr


def test_a_failing_migration_changes_nothing(pgdb, tmp_path):
    (tmp_path / "m1.sql").write_text("CREATE TABLE a (n int);\nINSERT INTO a VALUES (1);\n")
    (tmp_path / "m2.sql").write_text("-- depends: m1\nCREATE TABLE b (n int);\nSELECT 1/0;\n")
    result = pg(pgdb, "--sql-dir", tmp_path, "apply")
    assert result.exit_code == 4 and "statement 2" in result.stderr
    assert history(pgdb) == {"m1"} and "b" not in pgdb.tables()


def test_new_writes_a_pair_depending_on_the_heads(pgdb, tmp_path):
    from orchestra_schema.migrations import default_sql_dir
    for f in default_sql_dir("postgresql").iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    result = pg(pgdb, "--sql-dir", tmp_path, "--json", "new", "AddThing")
    assert result.exit_code == 0, result.stderr
    forward = json.loads(result.stdout)["forward"]
    assert f"-- depends: {CHAT} {AGENT}" in open(forward).read()


def test_a_user_without_privileges_gets_one_line_not_a_traceback(applied, pg_cluster):
    pg_cluster.admin("CREATE ROLE reader LOGIN PASSWORD 'r'")
    try:
        url = f"postgresql://reader:r@127.0.0.1:{pg_cluster.port}/{applied.name}"
        result = cli("--database", url, "status")
        assert result.exit_code == 6, result.stderr
        assert "permission denied" in result.stderr and result.stderr.count("\n") == 1
    finally:
        pg_cluster.admin("DROP OWNED BY reader", applied.name)
        pg_cluster.admin("DROP ROLE reader")


def _ef_table(database) -> dict:
    return catalog_schema(database, skip=())["__EFMigrationsHistory"]


def test_apply_leaves_ef_cores_history_as_npgsql_writes_it(pgdb, pg_cluster):
    """What `dotnet ef database update` would find: the table EF's Npgsql provider creates
    (its DDL run on another database, the catalogs compared) with EF's rows."""
    reference = pg_cluster.new_database("efref")
    try:
        reference.run_sql(EF_HISTORY_DDL)
        assert pg(pgdb, "apply", "--to", CORE).exit_code == 0
        assert _ef_table(pgdb) == _ef_table(reference) and ef_rows(pgdb) == {}
        assert pg(pgdb, "apply").exit_code == 0
        assert _ef_table(pgdb) == _ef_table(reference)
        assert ef_rows(pgdb) == {EF_INITIAL: "9.0.9", AGENT: "9.0.9"}
        assert pg(pgdb, "verify").exit_code == 0
    finally:
        pg_cluster.drop_database(reference)


def test_verify_judges_ef_history_with_postgresqls_ids(pgdb):
    """The user's report: verify after adopt failed on EF's own PostgreSQL ids, and passed
    once EF's rows were deleted."""
    ef_made(pgdb)
    assert pg(pgdb, "adopt", "--no-backup").exit_code == 0
    assert pg(pgdb, "verify").exit_code == 0
    pgdb.run_sql('DELETE FROM "__EFMigrationsHistory"')
    result = pg(pgdb, "--json", "verify")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["problems"] == [
        f"ef_history: __EFMigrationsHistory lacks {id} although {needed} are applied: EF Core "
        "believes those tables do not exist; run `orchestra-schema apply` to write it"
        for id, needed in [(EF_INITIAL, f"{CORE}, {CHAT}"), (AGENT, AGENT)]]
    assert pg(pgdb, "apply").exit_code == 0
    assert ef_rows(pgdb) == {EF_INITIAL: "9.0.9", AGENT: "9.0.9"}
    pgdb.run_sql('DROP TABLE "__EFMigrationsHistory"')
    result = pg(pgdb, "verify")
    assert result.exit_code == 1 and "no __EFMigrationsHistory table although" in result.stdout


REFUSE = """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$BEGIN RAISE EXCEPTION '% is frozen', TG_TABLE_NAME; END$$;
            CREATE TRIGGER frozen BEFORE INSERT ON "{}" FOR EACH ROW EXECUTE FUNCTION refuse()"""


@pytest.mark.parametrize("table", ["__EFMigrationsHistory", "_yoyo_migration"])
def test_a_refused_history_write_rolls_the_migration_back(pgdb, table):
    """EF's row and yoyo's are written in the migration's transaction: either refused,
    the chat tables are not there afterwards and both histories are as before."""
    assert pg(pgdb, "apply", "--to", CORE).exit_code == 0
    pgdb.run_sql(REFUSE.format(table))

    result = pg(pgdb, "apply", "--to", CHAT)

    assert result.exit_code == 4, result.stderr
    assert f"{table} is frozen" in result.stderr and "rolled back" in result.stderr
    assert not CHAT_TABLES & pgdb.tables()
    assert history(pgdb) == {CORE} and ef_rows(pgdb) == {}


@pytest.mark.parametrize("command", [["apply"], ["rollback", "--to", "0", "--yes", "--no-backup"],
                                     ["adopt", "--no-backup"],
                                     ["history", "forget", AGENT, "--from", "yoyo", "--yes",
                                      "--no-backup"]], ids=lambda c: c[0])
def test_a_read_only_database_is_exit_6_saying_so(pgdb, pg_cluster, command):
    """A standby, or default_transaction_read_only: what to do, not "fix the SQL"."""
    if command[0] == "adopt":
        ef_made(pgdb)
    elif command[0] != "apply":
        assert pg(pgdb, "apply").exit_code == 0
    before = pgdb.tables()
    pg_cluster.admin(f"ALTER DATABASE {pgdb.name} SET default_transaction_read_only = on")
    result = pg(pgdb, "-q", *command)
    assert result.exit_code == 6 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1
    assert "cannot write the database" in result.stderr and "it is read-only" in result.stderr
    assert "run it on the primary, read-write" in result.stderr
    assert pgdb.tables() == before
