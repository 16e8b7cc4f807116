"""mark ID and unmark ID (yoyo's names) through the CLI, on real SQLite files and the real
PostgreSQL server, on databases the tool did not make: the schema compared with what the one
migration makes (every difference named, exit 5, nothing changed), yoyo's order, the backup
first, EF Core's history kept in step."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import (CHAT, CORE, assert_refused, build_ef_database, cli, connect, count,
                     ef_history, file_state, history)
from orchestra_schema import ef
from orchestra_schema.commands import backup as backups
from orchestra_schema.commands.history import mark
from orchestra_schema.context import Context
from orchestra_schema.errors import Refused
from orchestra_schema.migrations import default_sql_dir, load
from test_pg_commands import AGENT, EF_INITIAL, ef_rows, pg
from test_pg_commands import CHAT as PG_CHAT, CORE as PG_CORE, history as pg_history
from test_pg_scenario import ef_core_made

CHECKSUMS = "_orchestra_schema_checksum"
SQL = {m.id: m.path for m in load(default_sql_dir())}


def by_hand(path, *ids):
    """An SQLite file where a DBA ran these forward files with sqlite3: no history at all."""
    with connect(path) as c:
        for mid in ids:
            c.execute(SQL[mid].read_text())
    return path


def sqlite_log(path, mid) -> list[str]:
    with connect(path) as c:
        return [r[0] for r in c.execute("SELECT operation FROM _yoyo_log WHERE migration_id = ? "
                                        "ORDER BY created_at_utc", (mid,))]


def checksums(path) -> dict[str, str]:
    with connect(path) as c:
        return dict(c.execute(f"SELECT migration_id, forward_sha256 FROM {CHECKSUMS}"))


@pytest.fixture
def vault(tmp_path):
    path = tmp_path / "vault"
    path.mkdir()
    return path


def test_mark_records_what_was_made_by_hand_and_ef_follows(tmp_path, vault):
    path = by_hand(tmp_path / "orchestra.db", CORE, CHAT)
    done = cli("--database", path, "--backup-dir", vault, "--json", "mark", CORE)
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["recorded"], result["differences"]) == (True, [])
    assert f"recorded {CORE} as applied (schema matched; not run)" in done.stderr
    assert history(path) == {CORE} and sqlite_log(path, CORE) == ["mark"]
    assert checksums(path) == {CORE: load(default_sql_dir())[0].forward_sha256}
    assert ef_history(path) == {}  # EF's table made; its row needs the chat tables too
    assert result["backup"] and (vault / result["backup"].rsplit("/", 1)[-1]).is_file()

    done = cli("--database", path, "--json", "mark", CHAT, "--no-backup")
    assert json.loads(done.stdout)["ef_history"] == [f"added {CHAT} (ProductVersion 9.0.6)"]
    assert history(path) == {CORE, CHAT} and ef_history(path) == {CHAT: "9.0.6"}
    assert cli("--database", path, "verify").exit_code == 0
    again = cli("--database", path, "--backup-dir", vault, "mark", CHAT)
    assert again.exit_code == 0 and "already applied, nothing to do" in again.stderr
    assert sqlite_log(path, CHAT) == ["mark"] and len(list(vault.iterdir())) == 2  # no backup


def test_mark_refuses_a_schema_that_differs_naming_every_difference(tmp_path, vault):
    path = by_hand(tmp_path / "orchestra.db", CORE, CHAT)
    with connect(path) as c:
        c.execute('DROP INDEX "IX_ChatMessages_SessionId";'
                  'ALTER TABLE "ChatSessions" ADD "Extra" TEXT')
    # The chat tables' differences are not the core's: marking the core is not held up by them.
    assert cli("--database", path, "mark", CORE, "--no-backup").exit_code == 0
    before = file_state(path)
    refused = cli("--database", path, "--backup-dir", vault, "mark", CHAT)
    assert_refused(refused, 5, CHAT, "2 way(s)",
                   "index IX_ChatMessages_SessionId on ChatMessages: missing",
                   "column ChatSessions.Extra: not expected", "nothing changed", "--force")
    assert file_state(path) == before and history(path) == {CORE} and ef_history(path) == {}
    assert list(vault.iterdir()) == []


def test_a_refusal_under_the_lock_discards_the_backup_taken_first(tmp_path, vault):
    path = by_hand(tmp_path / "orchestra.db", CORE)
    ctx = Context(path, backup_dir=vault)

    def backup_then_someone_drops_an_index():
        taken = backups.backup(ctx).path
        with connect(path) as c:
            c.execute('DROP INDEX "IX_Tasks_Status"')
        return taken
    with pytest.raises(Refused, match="index IX_Tasks_Status on Tasks: missing"):
        mark(ctx, CORE, backup=backup_then_someone_drops_an_index)
    assert history(path) == set() and list(vault.iterdir()) == []


def test_mark_force_records_over_the_differences_warning_of_each(tmp_path, vault):
    path = by_hand(tmp_path / "orchestra.db", CORE)
    with connect(path) as c:
        c.execute('DROP INDEX "IX_Tasks_Status"; DROP INDEX "IX_Agents_Status"')
    done = cli("--database", path, "--backup-dir", vault, "-q", "--json", "mark", CORE, "--force")
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["recorded"] and sorted(result["differences"]) == [
        "index IX_Agents_Status on Agents: missing", "index IX_Tasks_Status on Tasks: missing"]
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2 and all("--force" in w for w in warnings)  # printed under -q too
    assert history(path) == {CORE} and sqlite_log(path, CORE) == ["mark"]
    assert len(list(vault.glob("*.json"))) == 1  # the backup is kept: something was written


def test_mark_compares_a_migration_that_only_adds_an_index(db, tmp_path):
    sql = shutil.copytree(default_sql_dir(), tmp_path / "sql")
    index = "20990101000000_IndexTaskTitles"
    (sql / f"{index}.sql").write_text(f"-- depends: {CHAT}\n"
                                      'CREATE INDEX "IX_Tasks_Title" ON "Tasks" ("Title");\n')
    (sql / f"{index}.rollback.sql").write_text('DROP INDEX "IX_Tasks_Title";\n')
    refused = cli("--database", db, "--sql-dir", sql, "mark", index, "--no-backup")
    assert_refused(refused, 5, "1 way(s)", "index IX_Tasks_Title on Tasks: missing")
    assert history(db) == {CORE, CHAT}
    with connect(db) as c:
        c.execute('CREATE INDEX "IX_Tasks_Title" ON "Tasks" ("Title" DESC)')
    assert_refused(cli("--database", db, "--sql-dir", sql, "mark", index, "--no-backup"), 5,
                   "index IX_Tasks_Title on Tasks: differs")
    with connect(db) as c:
        c.execute('DROP INDEX "IX_Tasks_Title"; CREATE INDEX "IX_Tasks_Title" ON "Tasks" ("Title")')
    assert cli("--database", db, "--sql-dir", sql, "mark", index, "--no-backup").exit_code == 0
    assert history(db) == {CORE, CHAT, index} and ef_history(db) == {CHAT: "9.0.6"}


def test_mark_needs_what_it_depends_on_applied_and_a_known_id(tmp_path):
    path = by_hand(tmp_path / "orchestra.db", CORE, CHAT)
    before = file_state(path)
    assert_refused(cli("--database", path, "mark", CHAT, "--no-backup"), 5,
                   f"depends on {CORE}", "nothing changed", "apply or mark")
    assert_refused(cli("--database", path, "mark", "20250101000000_Nope"), 2,
                   "unknown migration '20250101000000_Nope'", str(default_sql_dir()))
    assert_refused(cli("--database", path, "unmark", "20250101000000_Nope", "--yes"), 2,
                   "unknown migration '20250101000000_Nope'")
    assert file_state(path) == before and list(tmp_path.iterdir()) == [path]


def test_mark_refuses_a_database_ef_core_made_until_adopted(tmp_path):
    path = build_ef_database(tmp_path / "ef.db")
    assert_refused(cli("--database", path, "mark", CORE, "--no-backup"), 5, "adopt")
    assert history(path) == set() and ef_history(path) == {CHAT: "9.0.6"}


def test_unmark_forgets_the_history_and_ef_row_leaving_the_schema(ef_db, tmp_path, vault):
    rows = count(ef_db, "ChatMessages")
    done = cli("--database", ef_db, "--backup-dir", vault, "--json", "unmark", CHAT, "--yes")
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["removed"] and result["ef_history"] == [f"removed {CHAT}"]
    assert history(ef_db) == {CORE} and ef_history(ef_db) == {}
    assert CHAT not in checksums(ef_db) and sqlite_log(ef_db, CHAT)[-1] == "unmark"
    assert count(ef_db, "ChatMessages") == rows  # the schema and its rows untouched
    assert len(list(vault.glob("*.json"))) == 1
    again = cli("--database", ef_db, "unmark", CHAT, "--yes")
    assert again.exit_code == 0 and "not applied, nothing to do" in again.stderr
    # Back as it was: the chat tables are still what CHAT makes.
    assert cli("--database", ef_db, "mark", CHAT, "--no-backup").exit_code == 0
    assert ef_history(ef_db) == {CHAT: "9.0.6"} and history(ef_db) == {CORE, CHAT}


def test_unmark_refuses_while_a_dependent_is_applied_or_nobody_said_yes(db, vault):
    before = file_state(db)
    assert_refused(cli("--database", db, "--backup-dir", vault, "unmark", CORE, "--yes"), 5,
                   f"{CHAT} depends on {CORE} and is applied", "unmark them first")
    for asked in (("unmark", CHAT), ("--json", "unmark", CHAT)):  # no terminal; --json never asks
        assert_refused(cli("--database", db, "--backup-dir", vault, *asked), 5,
                       f"would remove {CHAT} from yoyo's history", f"{ef.TABLE}: removed {CHAT}",
                       "rerun with --yes")
    assert file_state(db) == before and list(vault.iterdir()) == []


# ---- PostgreSQL: a database `dotnet ef database update` made, adopted


@pytest.fixture
def pg_adopted(pgdb):
    ef_core_made(pgdb)
    assert pg(pgdb, "adopt", "--no-backup").exit_code == 0
    return pgdb


def pg_log(database, mid) -> list[str]:
    return [r[0] for r in database.rows(
        "SELECT operation FROM _yoyo_log WHERE migration_id = %s ORDER BY created_at_utc", (mid,))]


def test_pg_unmark_then_mark_keeps_ef_in_step(pg_adopted, tmp_path):
    rows = pg_adopted.rows('SELECT count(*) FROM "AgentSessions"')
    done = pg(pg_adopted, "--json", "--backup-dir", tmp_path, "unmark", AGENT, "--yes")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["ef_history"] == [f"removed {AGENT}"]
    assert json.loads(done.stdout)["backup"]
    assert pg_history(pg_adopted) == {PG_CORE, PG_CHAT} and ef_rows(pg_adopted) == {
        EF_INITIAL: "9.0.9"}
    assert pg_adopted.rows('SELECT count(*) FROM "AgentSessions"') == rows
    assert pg_log(pg_adopted, AGENT)[-1] == "unmark"

    done = pg(pg_adopted, "--json", "mark", AGENT, "--no-backup")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["ef_history"] == [f"added {AGENT} (ProductVersion 9.0.9)"]
    assert ef_rows(pg_adopted) == {EF_INITIAL: "9.0.9", AGENT: "9.0.9"}
    assert pg_log(pg_adopted, AGENT)[-1] == "mark"
    assert AGENT in {r[0] for r in pg_adopted.rows(f"SELECT migration_id FROM {CHECKSUMS}")}

    assert pg(pg_adopted, "unmark", PG_CHAT, "--yes", "--no-backup").exit_code == 0
    assert ef_rows(pg_adopted) == {AGENT: "9.0.9"}  # the initial row stands for core and chat
    assert pg(pg_adopted, "verify").exit_code == 1  # the chat tables are there, not applied
    assert pg(pg_adopted, "mark", PG_CHAT, "--no-backup").exit_code == 0
    assert pg(pg_adopted, "verify").exit_code == 0


def test_pg_mark_refuses_a_schema_that_differs_then_force(pg_adopted):
    assert pg(pg_adopted, "unmark", AGENT, "--yes", "--no-backup").exit_code == 0
    pg_adopted.run_sql('DROP INDEX "IX_AgentSessions_SessionId";'
                       'ALTER TABLE "AgentSessions" ALTER COLUMN "MessageCount" TYPE bigint')
    refused = pg(pg_adopted, "mark", AGENT, "--no-backup")
    assert refused.exit_code == 5
    for word in ("2 way(s)", "IX_AgentSessions_SessionId", "AgentSessions.MessageCount",
                 "nothing changed"):
        assert word in refused.stderr
    assert pg_history(pg_adopted) == {PG_CORE, PG_CHAT} and ef_rows(pg_adopted) == {
        EF_INITIAL: "9.0.9"}
    assert not [s for (s,) in pg_adopted.rows("SELECT nspname FROM pg_namespace")
                if s.startswith("orchestra_schema_replay")]
    forced = pg(pg_adopted, "mark", AGENT, "--force", "--no-backup")
    assert forced.exit_code == 0 and forced.stderr.count("warning") == 2
    assert AGENT in pg_history(pg_adopted) and AGENT in ef_rows(pg_adopted)


def test_pg_unmark_names_every_applied_dependent_and_unknown_ids(pg_adopted):
    assert_refused(pg(pg_adopted, "unmark", PG_CORE, "--yes", "--no-backup"), 5,
                   f"{AGENT}, {PG_CHAT} depend on {PG_CORE} and are applied")
    assert_refused(pg(pg_adopted, "mark", "nope"), 2, "unknown migration 'nope'")
    assert_refused(pg(pg_adopted, "unmark", "nope", "--yes"), 2, "unknown migration 'nope'")
    assert pg_history(pg_adopted) == {PG_CORE, PG_CHAT, AGENT}


def test_both_are_silent_under_quiet(db, vault):
    for args in (("unmark", CHAT, "--yes"), ("unmark", CHAT, "--yes"), ("mark", CHAT),
                 ("mark", CHAT)):  # done, then nothing to do
        result = cli("-q", "--database", db, "--backup-dir", vault, *args)
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), args
    assert history(db) == {CORE, CHAT} and ef_history(db) == {CHAT: "9.0.6"}
