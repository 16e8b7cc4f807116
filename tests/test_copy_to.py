"""copy-to on a real PostgreSQL server: every row value for value (checked here in Python,
apart from the tool's own digests), refusals that change nothing, kill -9 then rerun.

The server is conftest's pg_cluster: without one these tests skip, and under CI=true they
fail (pgserver.missing)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apsw
import psycopg
import pytest

from helpers import EF_SCRIPT, REAL_DB, cli, connect, file_state
from orchestra_schema.copy_to.lines import SIGNATURE, TRAILER
from pgserver import PASSWORD
from test_pg_schema import AGENT_SESSIONS, INITIAL, catalog_schema, ef_schema

REAL = REAL_DB
TEN = ["Repositories", "TaskTemplates", "WorkflowDefinitions", "Agents", "UserPreferences",
       "PerformanceMetrics", "Tasks", "OrchestrationLogs", "ChatSessions", "ChatMessages"]
PG_MIGRATIONS = ["20250927103131_OrchestraCore", "20250927103132_AddChatTables",
                 "20251109091141_AddAgentSessionsTable"]
EF_ROWS = {"20250927103132_InitialPostgreSQLMigration": "9.0.9",
           "20251109091141_AddAgentSessionsTable": "9.0.9"}


def copy(source, target, *args, json_out=True, jobs=None):
    """jobs: --jobs N (None: the default, none for these small sources)."""
    result = cli("--database", source, *(["--json"] if json_out else []), "copy-to",
                 target.url, *args, *([] if jobs is None else ["--jobs", jobs]))
    assert PASSWORD not in result.stdout + result.stderr
    return result


def guid(n: int) -> str:
    return str(uuid.UUID(int=(n * 0x9E3779B97F4A7C15) % (1 << 128))).upper()


def orchestra_db(path: Path, sessions: int = 3, messages: int = 4) -> Path:
    """An orchestra.db as EF Core wrote it: uppercase GUIDs, 7-digit UTC dates, 0/1,
    JSON arrays, reals, and a Hangfire table beside."""
    with connect(path) as c:
        c.execute(EF_SCRIPT.read_text())
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("BEGIN")
        c.execute("""INSERT INTO Repositories VALUES ('repo-1', 'orchestra', '/src/orchestra',
            'tab\there, newline\nthere, back\\slash', 1, 1, '2025-09-23 13:26:48.9782527',
            '2025-09-23 13:26:48.9999995', NULL, '{"a":1}', 'main', '["Read","Write"]', 3, 2, 1,
            9000000000, '["Read","Write","with space","","NULL","quote\\"d","back\\\\slash"]')""")
        c.execute("""INSERT INTO Agents VALUES ('agent-1', 'claude', 'claude-code', '/src', 2,
            '2025-09-23 13:26:48.1', NULL, '0001-01-01 00:00:00', '2025-09-23T13:26:48.12',
            0, NULL, 2, 30, 5, 1, 4000000000, 0.1, NULL, 'repo-1')""")
        c.execute("""INSERT INTO PerformanceMetrics VALUES ('m1', 'agent-1', 'cpu', 1e-05, '%',
            '2025-09-23 13:26:48', '2025-09-23 13:26:48', '2025-09-23 13:26:48', NULL),
            ('m2', 'agent-1', 'cpu', 1234567890123456.0, NULL, '2025-09-23 13:26:48',
            '2025-09-23 13:26:48', '2025-09-23 13:26:48', 'big'),
            ('m3', 'agent-1', 'cpu', -0.0, NULL, '2025-01-01', '2025-01-01', '2025-01-01', NULL)""")
        c.execute("""INSERT INTO Tasks VALUES ('t1', 'ls', 'agent-1', '/src', 1, 0,
            '2025-09-23 13:26:48.9782527', NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0,
            '2025-09-23 13:26:48.9782527', 'repo-1'), ('t2', 'ls -l', NULL, '/src', 1, 0,
            '2025-09-23 13:26:48', NULL, NULL, NULL, 'ok', NULL, 0, NULL, NULL, 't1', 0,
            '2025-09-23 13:26:48', NULL)""")
        for s in range(sessions):
            c.execute("INSERT INTO ChatSessions VALUES (?, 'u1', 'coordinator-main', ?, "
                      "'2025-09-23 11:52:27.3122339', '2025-09-23 11:52:27.3122944')",
                      (guid(s), f"Chat Session {s} 🤖"))
            c.executemany("INSERT INTO ChatMessages VALUES (?, ?, 'System', ?, 1, ?, ?)",
                          [(guid(1000 + s * messages + m), guid(s),
                            f"🤖 **Coordinator** {m}\nType 'help' \\ for\tcommands " * 3,
                            f"2025-09-23 13:{m % 60:02d}:48.{m % 10_000_000:07d}",
                            '{"connectionId":"x"}' if m % 2 else None)
                           for m in range(messages)])
        c.execute('CREATE TABLE "Job" (Id INTEGER PRIMARY KEY AUTOINCREMENT, StateName TEXT)')
        c.execute("""INSERT INTO "Job" (StateName) VALUES ('Succeeded'), ('Enqueued')""")
        c.execute("COMMIT")
    return path


# ---- what PostgreSQL must hold, computed independently of pg_values

def expected(value, pg_type: str):
    if value is None:
        return None
    if pg_type == "uuid":
        return uuid.UUID(value)
    if pg_type == "timestamp with time zone":
        text = value.replace("T", " ") + (" 00:00:00" if len(value) == 10 else "")
        if text == "0001-01-01 00:00:00":
            return "-infinity"
        whole = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
        micros = (int((text[20:] + "0000000")[:7]) + 5) // 10
        return whole + timedelta(microseconds=micros)
    if pg_type == "boolean":
        return {0: False, 1: True}[value]
    if pg_type == "text[]":
        return json.loads(value)
    if pg_type == "double precision":
        return float(value)
    return value


def assert_every_value(source: Path, target) -> int:
    """Each source row's every column equals the target's (typed, via psycopg)."""
    checked = 0
    with target.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for table in TEN:
            types = dict(conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
                (f'"{table}"',)).fetchall())
            cols = list(types)
            # infinity is not a Python datetime: those columns are compared as text
            select = ", ".join(f'CASE WHEN NOT isfinite("{c}") THEN "{c}"::text END, '
                               f'CASE WHEN isfinite("{c}") THEN "{c}" END'
                               if types[c].startswith("timestamp") else f'"{c}"' for c in cols)
            got = {}
            for row in conn.execute(f'SELECT {select} FROM "{table}"'):
                values, i = [], 0
                for c in cols:
                    if types[c].startswith("timestamp"):
                        values.append(row[i] if row[i] is not None else row[i + 1])
                        i += 2
                    else:
                        values.append(row[i])
                        i += 1
                got[values[0]] = values
            with connect(source) as src:
                rows = list(src.execute(f'SELECT {", ".join(f"[{c}]" for c in cols)} FROM "{table}"'))
            assert len(rows) == len(got), table
            for row in rows:
                want = [expected(v, types[c]) for v, c in zip(row, cols)]
                assert got[want[0]] == want, (table, row)
                checked += 1
    return checked


def source_state(path: Path) -> tuple:
    """file_state, but an empty -wal (what any read-only open of a WAL database leaves,
    see the README's known limits) is no change."""
    return tuple(s for s in file_state(path)
                 if not (s[0] == "-wal" and os.path.getsize(str(path) + "-wal") == 0))


def pg_text(target, query: str):
    with target.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(query).fetchall()


# ---- a real orchestra.db, its WAL live

JOBS = pytest.mark.parametrize("jobs", [0, 2])  # in this process, and in two workers


@JOBS
def test_real_database_with_a_live_wal_arrives_value_for_value(tmp_path, pgdb, jobs):
    source = tmp_path / "orchestra.db"
    shutil.copyfile(REAL, source)
    for suffix in ("-wal", "-shm"):
        if Path(str(REAL) + suffix).exists():
            shutil.copyfile(str(REAL) + suffix, str(source) + suffix)
    app = apsw.Connection(str(source))  # the app, still running: its commit sits in the WAL
    app.execute("PRAGMA wal_autocheckpoint = 0")
    app.execute("INSERT INTO ChatMessages SELECT '11111111-2222-4333-8444-555555555555', "
                "Id, 'User', 'written just before the copy', 0, "
                "'2025-09-25 10:00:00.1234567', NULL FROM ChatSessions LIMIT 1")
    assert os.path.getsize(str(source) + "-wal") > 0
    before = source_state(source)

    result = subprocess.run([sys.executable, "-m", "orchestra_schema", "--database", source,
                             "--json", "copy-to", pgdb.url, "--jobs", str(jobs)],
                            capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["jobs"] == jobs
    copied = {t["table"]: t["copied"] for t in report["tables"]}
    assert copied["ChatSessions"] == 48 and copied["ChatMessages"] == 147
    assert all(t["skipped"] == 0 for t in report["tables"])
    assert assert_every_value(source, pgdb) == 48 + 147
    assert source_state(source) == before  # the source's bytes and mtimes, -wal included
    app.close()

    not_copied = {n["table"]: n["rows"] for n in report["not_copied"]}
    assert not_copied["Job"] == 33 and not_copied["State"] == 102
    assert not_copied["__EFMigrationsHistory"] == 1
    assert {"Job", "State", "Hash", "Server"}.isdisjoint(pgdb.tables())
    # EF Core's schema with both histories, ready for the app and every command
    schema = catalog_schema(pgdb)
    assert schema == {**ef_schema(INITIAL), **ef_schema(AGENT_SESSIONS)}
    assert dict(pgdb.rows('SELECT "MigrationId", "ProductVersion" FROM "__EFMigrationsHistory"')) \
        == EF_ROWS
    status = json.loads(cli("--database", pgdb.url, "--json", "status").stdout)
    assert [(m["id"], m["applied"], m["forward_matches"]) for m in status["migrations"]] == \
        [(m, True, True) for m in PG_MIGRATIONS]
    assert cli("--database", pgdb.url, "verify").exit_code == 0  # was 1: judged by SQLite's ids


@JOBS
def test_every_conversion_value_for_value(tmp_path, pgdb, jobs):
    source = orchestra_db(tmp_path / "orchestra.db")
    result = copy(source, pgdb, jobs=jobs)
    assert result.exit_code == 0, result.stderr
    assert assert_every_value(source, pgdb) == 1 + 1 + 3 + 2 + 3 + 12
    # the edges, as PostgreSQL prints them
    assert pg_text(pgdb, 'SELECT "CreatedAt"::text, "UpdatedAt"::text FROM "Repositories"') == [
        ("2025-09-23 13:26:48.978253+00", "2025-09-23 13:26:49+00")]  # half up, with a carry
    assert pg_text(pgdb, 'SELECT "CreatedAt"::text, "LastPing"::text, "UpdatedAt"::text '
                         'FROM "Agents"') == [
        ("-infinity", "2025-09-23 13:26:48.1+00", "2025-09-23 13:26:48.12+00")]
    assert pg_text(pgdb, 'SELECT "AllowedOperations" FROM "Repositories"')[0][0] == [
        "Read", "Write", "with space", "", "NULL", 'quote"d', "back\\slash"]
    assert sorted(pg_text(pgdb, 'SELECT "Value"::text FROM "PerformanceMetrics"')) == [
        ("0",), ("1.234567890123456e+15",), ("1e-05",)]  # SQLite keeps no -0.0


def test_json_report_and_the_hangfire_table(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    report = json.loads(copy(source, pgdb).stdout)
    assert set(report) >= {"source", "target", "applied", "ef_history", "tables", "not_copied",
                           "truncated", "rows_copied", "seconds"}
    assert report["target"].startswith("postgresql://orchestra@")
    assert report["applied"] == PG_MIGRATIONS
    assert [t["table"] for t in report["tables"]] == TEN
    assert set(report["tables"][0]) == {"table", "copied", "skipped", "seconds", "rows_per_second"}
    assert report["rows_copied"] == 22
    assert {"table": "Job", "rows": 2,
            "reason": "Hangfire's (Hangfire.PostgreSql builds its own; jobs do not move)"} \
        in report["not_copied"]


def test_text_report(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    result = copy(source, pgdb, json_out=False)
    assert result.exit_code == 0, result.stderr
    assert "ChatMessages" in result.stdout and "rows/s" in result.stdout
    assert "not copied: Job (2 row(s))" in result.stdout
    assert "counts and digests match; committed" in result.stderr


# ---- refusals: exit 5, nothing changed on either side

def assert_untouched(target) -> None:
    assert target.tables() == set()


def bad_value(sql: str):
    def change(c):
        c.execute(sql)
    return change


BAD = {
    "content over 4000": (
        "UPDATE ChatMessages SET Content = printf('%.5000c', 'x') WHERE Id = '" + guid(1001) + "'",
        ["ChatMessages.Content", guid(1001), "5000 characters", "character varying(4000)"]),
    "malformed guid": (
        "UPDATE ChatSessions SET Id = 'not-a-guid' WHERE Id = '" + guid(2) + "'",
        ["ChatSessions.Id", "'not-a-guid'", "malformed GUID", "uuid"]),
    "malformed date": (
        "UPDATE Tasks SET CreatedAt = '2025-02-30 10:00:00' WHERE Id = 't1'",
        ["Tasks.CreatedAt", "'t1'", "malformed date", "timestamp with time zone"]),
    # EF Core's own shape (7 fractional digits) is converted by SQLite arithmetic, apart
    # from the other shapes: unixepoch() reads month 00 or 13 as NULL, sent as 2000-01-01
    "month 13 in EF's shape": (
        "UPDATE Tasks SET CreatedAt = '2025-13-05 10:00:00.1234567' WHERE Id = 't1'",
        ["Tasks.CreatedAt", "'t1'", "malformed date", "timestamp with time zone"]),
    "month 00 in EF's shape": (
        "UPDATE Tasks SET UpdatedAt = '2025-00-05 10:00:00.1234567' WHERE Id = 't2'",
        ["Tasks.UpdatedAt", "'t2'", "malformed date", "timestamp with time zone"]),
    "eight fractional digits": (
        "UPDATE Tasks SET UpdatedAt = '2025-09-23 13:26:48.12345678' WHERE Id = 't2'",
        ["Tasks.UpdatedAt", "'t2'", "malformed date"]),
    "allowed operations not an array": (
        "UPDATE Repositories SET AllowedOperations = 'Read,Write'",
        ["Repositories.AllowedOperations", "'repo-1'", "not a JSON array", "text[]"]),
    "allowed operations of numbers": (
        "UPDATE Repositories SET AllowedOperations = '[1, 2]'",
        ["Repositories.AllowedOperations", "something other than strings"]),
    "boolean 2": (
        "UPDATE Agents SET IsDeleted = 2",
        ["Agents.IsDeleted", "'agent-1'", "0 or 1", "boolean"]),
    "integer out of range": (
        "UPDATE Agents SET Status = 3000000000",
        ["Agents.Status", "out of range for integer"]),
    "text where a number belongs": (
        "UPDATE Agents SET TotalExecutionTime = 'lots'",
        ["Agents.TotalExecutionTime", "holds text, not integer", "bigint"]),
    "NUL in text": (
        "UPDATE Tasks SET Result = 'a' || char(0) || 'b' WHERE Id = 't2'",
        ["Tasks.Result", "NUL character"]),
    # SQLite's GLOB, length() and unhex() stop at a NUL: what follows must not be dropped
    "GUID, NUL, more": (
        "UPDATE ChatSessions SET Id = Id || char(0) || 'junk' WHERE Id = '" + guid(2) + "'",
        ["ChatSessions.Id", "malformed GUID"]),
    "EF date, NUL, more": (
        "UPDATE Tasks SET CreatedAt = CreatedAt || char(0) || '1' WHERE Id = 't1'",
        ["Tasks.CreatedAt", "'t1'", "malformed date"]),
    # bytes that are not UTF-8 in a column converted in Python (apsw cannot decode them)
    "date not UTF-8": (
        "UPDATE Tasks SET CreatedAt = CAST(x'323032352d30392d3233eda080' AS TEXT) WHERE Id = 't1'",
        ["Tasks.CreatedAt", "'t1'", "malformed date"]),
    "double not UTF-8": (
        "UPDATE PerformanceMetrics SET Value = CAST(x'31eda080' AS TEXT) WHERE Id = 'm1'",
        ["PerformanceMetrics.Value", "'m1'", "holds text, not real/integer"]),
    "allowed operations not UTF-8": (
        "UPDATE Repositories SET AllowedOperations = CAST(x'5b22eda080225d' AS TEXT)",
        ["Repositories.AllowedOperations", "not text"]),
    "allowed operations with a lone surrogate escape": (
        "UPDATE Repositories SET AllowedOperations = '[\"\\ud800\"]'",
        ["Repositories.AllowedOperations", "not text"]),
    # varchar_input would drop spaces past the limit quietly, and the proof then fail
    "trailing spaces past the limit": (
        "UPDATE ChatMessages SET Content = printf('%.3999c', 'x') || '   ' WHERE Id = '"
        + guid(1001) + "'",
        ["ChatMessages.Content", guid(1001), "4002 characters, over the limit"]),
}


@JOBS
@pytest.mark.parametrize("case", list(BAD))
def test_a_value_postgresql_cannot_hold_is_named_and_nothing_is_committed(tmp_path, pgdb, case,
                                                                          jobs):
    source = orchestra_db(tmp_path / "orchestra.db")
    statement, words = BAD[case]
    with connect(source) as c:
        c.execute(statement)
    before = source_state(source)
    result = copy(source, pgdb, jobs=jobs)
    assert result.exit_code == 5, result.stderr
    line = result.stderr.strip()
    assert line.startswith("orchestra-schema: error: ") and "\n" not in line
    for word in words:
        assert word in line, (word, line)
    assert "nothing committed" in line
    assert_untouched(pgdb)
    assert source_state(source) == before


@JOBS
def test_a_bad_value_after_many_batches_is_named_by_its_row(tmp_path, pgdb, jobs):
    """COPY's data goes in batches (with workers, from several rowid ranges in the order
    they come): a value PostgreSQL rejects after several megabytes still names its own
    row (COPY's line number), and nothing is committed."""
    source = orchestra_db(tmp_path / "orchestra.db", sessions=20, messages=1000)
    bad = guid(1000 + 17 * 1000 + 345)
    with connect(source) as c:
        c.execute("UPDATE ChatMessages SET Content = Content || printf('%.1000c', 'x')")
        c.execute("UPDATE ChatMessages SET CreatedAt = '2025-02-30 10:00:00' WHERE Id = ?", (bad,))
    result = copy(source, pgdb, jobs=jobs)
    assert result.exit_code == 5, result.stderr
    assert f"ChatMessages.CreatedAt row Id='{bad}': malformed date" in result.stderr
    assert_untouched(pgdb)


def test_a_bad_value_is_named_by_its_row_whatever_order_the_ranges_arrive_in(tmp_path, pgdb):
    """Workers send rowid ranges in the order they finish them: COPY's line number is
    mapped back through the piece that held the line. Here the ranges go in reverse."""
    from orchestra_schema.copy_to import lines as copy_lines, values as pg_values
    from orchestra_schema.address import parse
    from orchestra_schema.copy_to.transfer import _stream, _target_columns
    from orchestra_schema.engines.sqlite.database import Database
    from orchestra_schema.engines.postgresql.driver import PgDriver
    from orchestra_schema.errors import Refused

    source = orchestra_db(tmp_path / "orchestra.db", sessions=3, messages=3000)
    bad = guid(1000 + 1 * 3000 + 500)  # rowid 3501: in the middle range of three
    with connect(source) as c:
        c.execute("UPDATE ChatMessages SET CreatedAt = '2025-13-01 10:00:00' WHERE Id = ?", (bad,))
    assert cli("--database", pgdb.url, "apply").exit_code == 0
    with Database.open(source, readonly=True) as src, \
            PgDriver.connect(parse(pgdb.url), timeout=10) as driver:
        pg_values.register(src.connection)
        cols = _target_columns(driver, "ChatMessages")
        statement = copy_lines.select("ChatMessages", cols, False)
        ranges = [(5001, copy_lines.HIGHEST), (3001, 5000), (1, 3000)]
        pieces = [p for lo, hi in ranges
                  for p in copy_lines.Lines(src.connection, statement, lo, hi)]
        assert len(pieces) >= 3 and pieces[0].start == 5001
        with driver.conn.transaction(), pytest.raises(Refused) as refused:
            _stream(src, driver, "ChatMessages", cols, False, pieces, None)
    assert f"ChatMessages.CreatedAt row Id='{bad}': malformed date" in str(refused.value)


def test_the_first_bad_value_stops_the_copy_and_says_how_to_keep_long_text(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    with connect(source) as c:
        c.execute("UPDATE ChatMessages SET Content = printf('%.4001c', 'y')")
    result = copy(source, pgdb)
    assert result.exit_code == 5
    assert "4001 characters, over the limit" in result.stderr
    assert "the copy stops at the first such value" in result.stderr
    assert "--truncate-long-text" in result.stderr
    assert_untouched(pgdb)


def test_truncate_long_text_keeps_the_rows_and_lists_every_cut(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    long_id = guid(1001)
    with connect(source) as c:
        c.execute("UPDATE ChatMessages SET Content = printf('%.4000c', 'a') || 'tail past the limit' "
                  "WHERE Id = ?", (long_id,))
    result = copy(source, pgdb, "--truncate-long-text")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["truncated"] == [{"table": "ChatMessages", "column": "Content", "id": long_id,
                                    "length": 4019, "limit": 4000}]
    assert f"truncated ChatMessages.Content row Id='{long_id}': 4019 characters cut to 4000" \
        in result.stderr
    kept = pgdb.rows('SELECT "Content" FROM "ChatMessages" WHERE "Id" = %s', (long_id,))
    assert kept == [("a" * 4000,)]
    assert pgdb.rows('SELECT count(*) FROM "ChatMessages"')[0][0] == 12


@JOBS
def test_every_cut_is_listed_in_row_order_across_rowid_ranges(tmp_path, pgdb, jobs):
    """Cuts are found range by range (by the workers, with --jobs): the report still lists
    them all, in row order, each column of a row in the table's order."""
    source = orchestra_db(tmp_path / "orchestra.db", sessions=4, messages=3000)
    ids = [guid(1000 + n) for n in (5, 4500, 9000, 11999)]  # rowids in three ranges
    with connect(source) as c:
        c.executemany("UPDATE ChatMessages SET Content = printf('%.4001c', 'b') WHERE Id = ?",
                      [(i,) for i in ids])
        c.execute("UPDATE ChatMessages SET Author = printf('%.300c', 'a'), "
                  "Metadata = printf('%.2001c', 'm') WHERE Id = ?", (ids[2],))
    result = copy(source, pgdb, "--truncate-long-text", jobs=jobs)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["jobs"] == jobs
    assert [(t["id"], t["column"], t["length"], t["limit"]) for t in report["truncated"]] == [
        (ids[0], "Content", 4001, 4000), (ids[1], "Content", 4001, 4000),
        (ids[2], "Author", 300, 255), (ids[2], "Content", 4001, 4000),
        (ids[2], "Metadata", 2001, 2000), (ids[3], "Content", 4001, 4000)]
    assert pgdb.rows('SELECT count(*) FROM "ChatMessages" WHERE length("Content") = 4000')[0][0] == 4


def test_each_character_copy_escapes_arrives_alone(tmp_path, pgdb):
    """Each of the text format's four special characters (copy-to sends the binary format,
    where they are plain bytes), alone in a value, at the start, the end, and twice."""
    source = orchestra_db(tmp_path / "orchestra.db")
    specials = ["\\", "\t", "\n", "\r"]
    with connect(source) as c:
        for n, char in enumerate(specials):
            c.execute("UPDATE ChatMessages SET Content = ?, Metadata = ? WHERE Id = ?",
                      (f"{char}only {char}{char} this{char}", char, guid(1000 + n)))
    result = copy(source, pgdb, "--truncate-long-text")
    assert result.exit_code == 0, result.stderr
    assert assert_every_value(source, pgdb) == 22


def test_truncate_long_text_counts_characters_not_bytes(tmp_path, pgdb, pg_cluster):
    """4000 four-byte characters fit character varying(4000) and are kept whole; 4001 are
    cut to 4000, and a tab the cut keeps arrives. A long text holding a NUL is refused,
    not cut (the report of cuts counts characters only up to a NUL)."""
    source = orchestra_db(tmp_path / "orchestra.db")
    fits, cut, tabbed = guid(1000), guid(1001), guid(1002)
    with connect(source) as c:
        for row_id, text in ((fits, "🤖" * 4000), (cut, "🤖" * 4001),
                             (tabbed, "a" * 3998 + "\t" + "é" * 10)):
            c.execute("UPDATE ChatMessages SET Content = ? WHERE Id = ?", (text, row_id))
    result = copy(source, pgdb, "--truncate-long-text")
    assert result.exit_code == 0, result.stderr
    assert [(t["id"], t["length"]) for t in json.loads(result.stdout)["truncated"]] == \
        [(cut, 4001), (tabbed, 4009)]
    kept = dict(pgdb.rows('SELECT "Id"::text, "Content" FROM "ChatMessages" WHERE "Id" = ANY(%s)',
                          ([fits, cut, tabbed],)))
    assert kept == {fits.lower(): "🤖" * 4000, cut.lower(): "🤖" * 4000,
                    tabbed.lower(): "a" * 3998 + "\t" + "é"}
    with connect(source) as c:
        c.execute("UPDATE ChatMessages SET Content = printf('%.4100c', 'n') || char(0) || 'x' "
                  "WHERE Id = ?", (fits,))
    other = pg_cluster.new_database("nul")
    refused = copy(source, other, "--truncate-long-text")
    assert refused.exit_code == 5 and "NUL character" in refused.stderr, refused.stderr
    assert_untouched(other)
    pg_cluster.drop_database(other)


def test_a_target_holding_rows_is_refused(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    assert copy(source, pgdb).exit_code == 0
    again = copy(source, pgdb)
    assert again.exit_code == 5
    assert "ChatMessages, ChatSessions" in again.stderr and "already hold rows" in again.stderr
    assert pgdb.rows('SELECT count(*) FROM "ChatMessages"')[0][0] == 12
    assert len(pgdb.rows("SELECT * FROM _yoyo_migration")) == 3


def test_an_applied_empty_target_is_filled(tmp_path, pgdb):
    assert cli("--database", pgdb.url, "apply").exit_code == 0
    source = orchestra_db(tmp_path / "orchestra.db")
    result = copy(source, pgdb)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["applied"] == []
    assert assert_every_value(source, pgdb) == 22


def test_a_source_that_is_not_orchestra_is_refused(tmp_path, pgdb):
    other = tmp_path / "other.db"
    with connect(other) as c:
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    result = copy(other, pgdb)
    assert result.exit_code == 5 and "not an Orchestra database" in result.stderr
    assert_untouched(pgdb)


def test_a_source_storing_text_as_utf16_is_refused(tmp_path, pgdb):
    """COPY gets each text's stored bytes: UTF-16 ones would be misread (CJK text as other
    characters, not always an error), so such a source is refused before anything."""
    source = tmp_path / "orchestra.db"
    with connect(source) as c:
        c.execute("PRAGMA encoding = 'UTF-16le'")
        c.execute("CREATE TABLE made (x)")  # the encoding is fixed when the file is made
        c.execute("DROP TABLE made")
    orchestra_db(source)
    result = copy(source, pgdb)
    assert result.exit_code == 5, result.stderr
    assert "stores text as UTF-16le; nothing changed" in result.stderr
    assert_untouched(pgdb)


def test_a_source_whose_schema_differs_is_refused_naming_each_difference(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    with connect(source) as c:
        c.execute('DROP INDEX "IX_ChatMessages_CreatedAt"')
        c.execute('ALTER TABLE "Agents" ADD COLUMN "Extra" TEXT')
    result = copy(source, pgdb)
    assert result.exit_code == 5
    assert "2 way(s)" in result.stderr
    assert "index IX_ChatMessages_CreatedAt on ChatMessages: missing" in result.stderr
    assert "column Agents.Extra: not expected" in result.stderr
    assert_untouched(pgdb)


def test_bad_arguments(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    not_pg = cli("--database", source, "copy-to", str(tmp_path / "other.db"))
    assert not_pg.exit_code == 2 and "not a PostgreSQL address" in not_pg.stderr
    from_pg = cli("--database", pgdb.url, "copy-to", pgdb.url)
    assert from_pg.exit_code == 2 and "reads an SQLite orchestra.db" in from_pg.stderr
    wrong = pgdb.url.replace("s3cret", "wrong")
    refused = cli("--database", source, "copy-to", wrong)
    assert refused.exit_code == 6 and "wrong password" in refused.stderr
    assert PASSWORD not in refused.stderr
    missing = cli("--database", tmp_path / "absent.db", "copy-to", pgdb.url)
    assert missing.exit_code == 6
    assert_untouched(pgdb)


@JOBS
def test_a_digest_mismatch_rolls_everything_back_naming_the_table(tmp_path, pgdb, jobs):
    """What PostgreSQL stored differs from what was sent (here a trigger changes it):
    the proof catches it and nothing is committed."""
    assert cli("--database", pgdb.url, "apply").exit_code == 0
    pgdb.run_sql("""CREATE FUNCTION meddle() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW."Content" := NEW."Content" || '!'; RETURN NEW; END $$;
        CREATE TRIGGER meddle BEFORE INSERT ON "ChatMessages" FOR EACH ROW EXECUTE FUNCTION meddle()""")
    source = orchestra_db(tmp_path / "orchestra.db")
    result = copy(source, pgdb, jobs=jobs)
    assert result.exit_code == 4, result.stderr
    assert "ChatMessages does not hold what was read from the source" in result.stderr
    assert "12 row(s) sent, 12 found; digests differ" in result.stderr
    assert pgdb.rows('SELECT count(*) FROM "ChatMessages"')[0][0] == 0
    assert pgdb.rows('SELECT count(*) FROM "ChatSessions"')[0][0] == 0


def test_an_index_the_rebuild_loses_is_refused_by_the_proof(tmp_path, pgdb, pg_cluster):
    """The keys and indexes are dropped for the load and rebuilt after it; here an event
    trigger drops one again as it is rebuilt (the table then holds rows, unlike when the
    migration made it): the proof's schema comparison names it and nothing is committed."""
    pg_cluster.admin("""CREATE FUNCTION lose_index() RETURNS event_trigger LANGUAGE plpgsql AS $$
        DECLARE made record;
        BEGIN
          FOR made IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
            IF made.object_identity = 'public."IX_ChatMessages_CreatedAt"' THEN
              IF EXISTS (SELECT 1 FROM public."ChatMessages") THEN
                EXECUTE 'DROP INDEX ' || made.object_identity;
              END IF;
            END IF;
          END LOOP;
        END $$;
        CREATE EVENT TRIGGER lose_index ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
            EXECUTE FUNCTION lose_index()""", dbname=pgdb.name)
    result = copy(orchestra_db(tmp_path / "orchestra.db"), pgdb)
    assert result.exit_code == 4, result.stderr
    assert "after the load the schema differs from the migrations'" in result.stderr
    assert "IX_ChatMessages_CreatedAt" in result.stderr and "nothing committed" in result.stderr
    assert_untouched(pgdb)


def test_guids_equal_but_for_case_are_refused_by_the_key(tmp_path, pgdb):
    source = orchestra_db(tmp_path / "orchestra.db")
    with connect(source) as c:
        c.execute("INSERT INTO ChatSessions SELECT lower(Id), UserId, InstanceId, Title, CreatedAt, "
                  "LastMessageAt FROM ChatSessions WHERE Id = ?", (guid(1),))
    result = copy(source, pgdb)
    assert result.exit_code == 5 and "PK_ChatSessions" in result.stderr
    assert "differ only in case" in result.stderr
    assert_untouched(pgdb)


WRITER = """
import sys, time, uuid, apsw
path, stop = sys.argv[1], sys.argv[2]
c = apsw.Connection(path)
c.setbusytimeout(60_000)
n = 0
while not __import__("os").path.exists(stop):
    n += 1
    with c:  # one commit: the oldest message goes, a new one comes (the count stays)
        c.execute('DELETE FROM ChatMessages WHERE rowid = (SELECT min(rowid) FROM ChatMessages)')
        c.execute("INSERT INTO ChatMessages SELECT ?, SessionId, Author, Content, MessageType, "
                  "CreatedAt, Metadata FROM ChatMessages LIMIT 1", (str(uuid.uuid4()).upper(),))
print(n)
"""


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_workers_copy_one_snapshot_while_the_app_commits(tmp_path, pgdb, mode):
    """The app commits all the while (a real process moving messages: the count stays
    12,000): the workers and the main process read one snapshot, so the target holds
    exactly 12,000 messages, each one once."""
    source = orchestra_db(tmp_path / "orchestra.db", sessions=4, messages=3000)
    with connect(source) as c:
        c.execute(f"PRAGMA journal_mode = {mode}")
    stop = tmp_path / "stop"
    app = subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(stop)],
                           stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # the app is committing
        result = copy(source, pgdb, jobs=2)
    finally:
        stop.touch()
        commits = int(app.communicate(timeout=60)[0])
    assert result.exit_code == 0, result.stderr
    assert commits > 1
    assert json.loads(result.stdout)["jobs"] in (0, 2)  # 0: no quiet moment came (5 tries)
    assert pgdb.rows('SELECT count(*), count(DISTINCT "Id") FROM "ChatMessages"') == [
        (12_000, 12_000)]


# ---- kill -9 at any instant: no partial copy; the rerun completes

def _copy_process(source, target, jobs=0):
    return subprocess.Popen([sys.executable, "-m", "orchestra_schema", "--database", str(source),
                             "copy-to", target.url, "--jobs", str(jobs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _gone(target, deadline=30.0) -> None:
    """Wait until the server has noticed the dead client and rolled its transaction back."""
    end = time.monotonic() + deadline
    while pg_text(target, "SELECT count(*) FROM pg_stat_activity "
                          "WHERE application_name = 'orchestra-schema'")[0][0]:
        assert time.monotonic() < end, "the killed client's session never ended"
        time.sleep(0.05)


def _wait_for(target, state_sql: str, proc, deadline=60.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end and proc.poll() is None:
        if pg_text(target, state_sql)[0][0]:
            return True
        time.sleep(0.005)
    return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (this sandbox's init may not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@JOBS
def test_kill_9_mid_copy_leaves_nothing_and_a_rerun_completes(tmp_path, pg_cluster, jobs):
    source = orchestra_db(tmp_path / "orchestra.db", sessions=40, messages=1500)
    moments = {  # where the kill lands, seen from the server
        "during COPY": "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'orchestra-schema' AND query LIKE 'COPY%' AND state = 'active'",
        "rebuilding indexes": "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                              "'orchestra-schema' AND query LIKE 'CREATE INDEX%'",
        "during the proof": "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                            "'orchestra-schema' AND query LIKE '%left(md5(%'",
    }
    landed = []
    for name, state_sql in moments.items():
        target = pg_cluster.new_database("kill")
        proc = _copy_process(source, target, jobs)
        hit = _wait_for(target, state_sql, proc)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _gone(target)
        end = time.monotonic() + 10  # a worker ends at its next write, or at once if idle
        while any(map(_running, workers)) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(map(_running, workers)), (name, workers)
        if hit and name == "during COPY":
            assert len(workers) == jobs, workers
        if hit:
            landed.append(name)
            assert target.tables() == set(), name  # no schema, no history, no rows
        rerun = copy(source, target, jobs=jobs)
        assert rerun.exit_code == 0, rerun.stderr
        assert target.rows('SELECT count(*) FROM "ChatMessages"')[0][0] == 60_000
        assert len(target.rows("SELECT * FROM _yoyo_migration")) == 3
        pg_cluster.drop_database(target)
    assert "during COPY" in landed, landed


@pytest.mark.slow
def test_kill_9_at_random_instants_with_workers(tmp_path, pg_cluster):
    """30 kills spread over a whole copy with two workers (pytest -m slow): every time, no
    table on the target, no worker left running, and a rerun that completes."""
    import random
    source = orchestra_db(tmp_path / "orchestra.db", sessions=40, messages=1500)
    target = pg_cluster.new_database("killw")
    began = time.monotonic()
    assert copy(source, target, jobs=2).exit_code == 0
    whole = time.monotonic() - began
    pg_cluster.drop_database(target)
    rng = random.Random(11)
    interrupted = 0
    for trial in range(30):
        target = pg_cluster.new_database("killw")
        proc = _copy_process(source, target, jobs=2)
        deadline = time.monotonic() + rng.uniform(0.1, whole)
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            workers.update(_children(proc.pid))
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _gone(target)
        end = time.monotonic() + 10
        while any(map(_running, workers)) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(map(_running, workers)), (trial, workers)
        if not target.tables():  # else the commit landed before the kill: the whole copy
            interrupted += 1
            rerun = copy(source, target, jobs=2)
            assert rerun.exit_code == 0, rerun.stderr
        assert target.rows('SELECT count(*) FROM "ChatMessages"')[0][0] == 60_000
        assert len(target.rows("SELECT * FROM _yoyo_migration")) == 3
        pg_cluster.drop_database(target)
    assert interrupted >= 10, interrupted  # most kills must land mid-copy, or this proves little


# ---- the conversions themselves, against the server, many values

def _field(conn, pg_type: str, field: bytes, read: str = "v"):
    """What COPY in binary format makes of one field (its length prefix included) in a
    column of pg_type: `read` of the stored value (e.g. its send bytes), or the error."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"CREATE TEMP TABLE one (v {pg_type})")
        with conn.cursor().copy("COPY one FROM STDIN (FORMAT binary)") as copy:
            copy.write(SIGNATURE + b"\x00\x01" + field + TRAILER)
        return conn.execute(f"SELECT {read} FROM one").fetchone()[0]


def test_what_does_not_convert_is_rejected_by_every_type(pgdb):
    """The field pg_values sends for a value it cannot convert makes the column type's
    receive function stop COPY with a data error (boolrecv reads any byte, so one byte
    more than the width is what fails, not the byte's value)."""
    from orchestra_schema.copy_to.values import KINDS, invalid_field

    with pgdb.connect() as conn:
        for pg_type, kind in [*KINDS.items(), ("character varying(5)", "varchar")]:
            with pytest.raises(psycopg.errors.DataError):
                _field(conn, pg_type, invalid_field(kind))


def test_doubles_arrive_bit_for_bit(pgdb):
    from hypothesis import given, settings, strategies as st
    from orchestra_schema.copy_to.values import float8_field

    with pgdb.connect() as conn:
        @settings(max_examples=200, deadline=None)
        @given(st.floats() | st.integers(-2**63, 2**63 - 1))
        def same(value):
            field = float8_field(value)
            assert field == b"\x00\x00\x00\x08" + struct.pack(">d", float(value))
            assert _field(conn, "double precision", field, "float8send(v)") == field[4:]
        same()


def test_integers_and_booleans_arrive_as_they_were(pgdb):
    """Every int4 (negatives through the 32-bit mask), int8 and 0/1, through a real binary
    COPY; an int4 out of range, a real, a text or 2 is the invalid field and is named."""
    from hypothesis import given, settings, strategies as st
    from orchestra_schema.copy_to.values import Column, invalid_field

    cols = {k: Column("x", t, True) for k, t in
            (("int4", "integer"), ("int8", "bigint"), ("bool", "boolean"))}

    def sent(kind, value):
        return _sent(cols[kind], value)

    with pgdb.connect() as conn:
        @settings(max_examples=200, deadline=None)
        @given(st.sampled_from(["int4", "int8", "bool"]), st.integers(-2**63, 2**63 - 1))
        def same(kind, value):
            value = {"int4": value >> 32, "int8": value, "bool": value & 1}[kind]
            problem, field = sent(kind, value)
            assert problem is None
            assert _field(conn, cols[kind].pg_type, field, "v") == (
                bool(value) if kind == "bool" else value)
        same()
    for kind, value in [("int4", 2**31), ("int4", -2**31 - 1), ("int4", 1.5), ("int4", "7"),
                        ("int8", 1.5), ("int8", "7"), ("bool", 2), ("bool", -1), ("bool", "t")]:
        problem, field = sent(kind, value)
        assert field == invalid_field(kind) and problem is not None, (kind, value)


def _sent(col, value):
    """(problem_sql, the field source_sql sends) for one value in column col, by SQLite."""
    from orchestra_schema.copy_to import values as pg_values
    scratch = apsw.Connection(":memory:")
    pg_values.register(scratch)
    x = pg_values.q(col.name)
    return scratch.execute(f"SELECT {pg_values.problem_sql(col)}, "
                           f"CAST({pg_values.source_sql(col)} AS BLOB) FROM (SELECT ? AS {x})",
                           (value,)).fetchone()


def _date_field(text):
    from orchestra_schema.copy_to.values import Column
    return _sent(Column("d", "timestamp with time zone", True), text)


def test_dates_round_as_postgresql_stores_them(pgdb):
    """Every date shape (EF Core's, by SQLite arithmetic, and the others, in Python) gives
    the bytes timestamptz_send gives for the value rounded half up to microseconds."""
    from hypothesis import given, settings, strategies as st
    with pgdb.connect() as conn:
        @settings(max_examples=400, deadline=None)
        @given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
               st.integers(0, 9_999_999), st.integers(0, 7), st.sampled_from([" ", "T"]))
        def same(moment, ticks, digits, between):
            fraction = f"{ticks:07d}"[:digits]
            text = f"{moment.year:04d}-" + moment.strftime(f"%m-%d{between}%H:%M:%S") + (
                f".{fraction}" if digits else "")
            problem, field = _date_field(text)
            assert problem is None
            micros = (int((fraction + "0000000")[:7]) + 5) // 10
            exact = moment.replace(microsecond=0) + timedelta(microseconds=micros)
            stored = conn.execute("SELECT timestamptz_send(%s)",
                                  (exact.replace(tzinfo=timezone.utc),)).fetchone()[0]
            assert field == b"\x00\x00\x00\x08" + stored, text
        same()
        for text, meant in [("0001-01-01 00:00:00", "-infinity"),
                            ("9999-12-31 23:59:59.9999999", "infinity"),
                            ("2024-02-29 23:59:59.9999995", "2024-03-01 00:00:00"),
                            ("1999-12-31 23:59:59.9999996", "2000-01-01 00:00:00"),
                            ("2025-04-30 12:00:00.5", "2025-04-30 12:00:00.5"),
                            ("2025-09-23", "2025-09-23 00:00:00")]:
            stored = conn.execute("SELECT timestamptz_send(%s::timestamptz)",
                                  (meant if "inf" in meant else meant + "+00",)).fetchone()[0]
            assert _date_field(text) == (None, b"\x00\x00\x00\x08" + stored), text


def test_every_date_postgresql_would_misread_is_named_not_sent():
    """unixepoch() moves 2025-02-30 to March and reads hour 24: such dates must become the
    invalid field, and problem_sql must name them, on the fast path and off it."""
    from orchestra_schema.copy_to import values as pg_values

    invalid = pg_values.invalid_field("timestamptz")
    for text in ["2025-02-30 10:00:00.1234567", "2023-02-29 10:00:00.1", "2025-04-31 10:00:00.5",
                 "2025-01-01 24:00:00.0000000", "2025-13-01 10:00:00.1", "2025-00-10 10:00:00.1",
                 "2025-13-05 10:00:00.1234567", "2025-00-05 10:00:00.1234567",
                 "2025-01-00 10:00:00.1", "2025-01-01 10:60:00.1", "2025-01-01 10:00:60.1",
                 "0000-01-01 10:00:00.1", "9999-12-31 23:59:59.9999995", "2025-01-01 10:00:00.",
                 "2025-01-01 10:00:00.12345678", "2025-01-01 10:00:00.12a", "2025-02-30",
                 "2025-01-01 10:00", "yesterday", "", 20250101, 1.5, b"2025-01-01"]:
        problem, field = _date_field(text)
        assert field == invalid and problem is not None, text


@JOBS
def test_progress_counts_every_row_once(tmp_path, pgdb, jobs):
    from orchestra_schema.address import parse
    from orchestra_schema.copy_to.transfer import copy_to

    source = orchestra_db(tmp_path / "orchestra.db", sessions=2, messages=3000)
    seen = []
    result = copy_to(source, parse(pgdb.url), timeout=10, progress=lambda d, t: seen.append((d, t)),
                     jobs=jobs)
    assert result.rows_copied == 1 + 1 + 3 + 2 + 2 + 6000
    assert seen[-1] == (result.rows_copied, result.rows_copied)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 2


def test_every_guid_that_is_not_one_is_named_not_sent(pgdb):
    """unhex(x, '-') skips dashes between digit pairs: a GUID with two digits replaced by
    dashes would give 15 bytes and shift every field after it. Such values, and any other
    malformed one, become the invalid field; good ones give uuid_send's bytes."""
    from orchestra_schema.copy_to.values import Column, invalid_field

    col = Column("g", "uuid", True)

    def field(value):
        return _sent(col, value)

    for bad in ["01234567-89ab-cdef-0123-4567--abcdef", "01234567-89ab-cdef-0123-45678-abcdef",
                "01234567-89ab-cdef-0123-456789abcdeg", "0123456789abcdef0123456789abcdef0123",
                "{1234567-89ab-cdef-0123-456789abcdef}", "01234567-89ab-cdef-0123-456789abcde",
                "01234567-89ab-cdef-0123-456789abcdef0", "", 42, b"\x01" * 16]:
        problem, sent = field(bad)
        assert sent == invalid_field("uuid") and problem is not None, bad
    with pgdb.connect() as conn:
        for good in ["51462F0A-EF08-4C51-AAF2-89FC4E821DB8", "51462f0a-ef08-4c51-aaf2-89fc4e821db8",
                     "00000000-0000-0000-0000-000000000000"]:
            stored = conn.execute("SELECT uuid_send(%s::uuid)", (good,)).fetchone()[0]
            assert field(good) == (None, b"\x00\x00\x00\x10" + stored), good
