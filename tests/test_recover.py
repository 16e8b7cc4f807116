"""recover: a damaged database rebuilt from the migrations, its rows salvaged or from a backup."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from backup_helpers import WAL_HOLDER, files_in, leaf_pages, overwrite_pages, spawn
from helpers import CHAT, CHAT_TABLES, CORE, CORE_TABLES, cli, connect, count, file_state, history, tables
from orchestra_schema.engines.sqlite import backup as backups
from orchestra_schema.engines.sqlite import files as sqlitefile
from orchestra_schema.files import staging
from orchestra_schema.context import Context

ALL_TABLES = CORE_TABLES | CHAT_TABLES | {"HangFire.Job"}


def recover(db, *args):
    return cli("--database", db, "--json", "recover", *args)


def add_messages(db, sessions=20, per_session=50):
    """Enough chat rows to fill many b-tree pages."""
    with connect(db) as c:
        with c:
            for s in range(sessions):
                c.execute("INSERT INTO ChatSessions VALUES (?, 'u1', 'i1', 'title', '2025-01-01', "
                          "'2025-01-02')", (f"bulk{s}",))
                c.executemany("INSERT INTO ChatMessages VALUES (?, ?, 'user', ?, 0, '2025-01-01', NULL)",
                              [(f"bulk{s}m{m}", f"bulk{s}", "x" * 300) for m in range(per_session)])


def counts(path) -> dict[str, int]:
    return {t: count(path, t) for t in ALL_TABLES}


def by_table(out) -> dict[str, dict]:
    return {t["table"]: t for t in out["tables"]}


def test_recover_salvages_every_row_outside_the_damaged_pages(db):
    add_messages(db)
    before = counts(db)
    leaves = leaf_pages(db, "ChatMessages")
    damaged = leaves[len(leaves) // 2: len(leaves) // 2 + 2]
    overwrite_pages(db, [page for page, _ in damaged], fill=b"\x00")
    damaged_bytes = hashlib.sha256(db.read_bytes()).hexdigest()

    result = recover(db)
    lost = sum(cells for _, cells in damaged)
    assert result.exit_code == 1 and f"ChatMessages: {lost} row(s) lost" in result.stderr
    out = json.loads(result.stdout)
    messages = by_table(out)["ChatMessages"]
    assert (messages["copied"], messages["lost"], messages["lost_exact"]) == (
        before["ChatMessages"] - lost, lost, True)
    assert counts(db) == {**before, "ChatMessages": before["ChatMessages"] - lost}
    for table in ALL_TABLES - {"ChatMessages"}:
        assert by_table(out)[table]["lost"] == 0
    assert out["integrity"] == "ok" and out["rows_lost"] == lost
    assert history(db) == {CORE, CHAT} and out["applied_migrations"] == [CORE, CHAT]
    aside = Path(out["backup"])
    assert re.fullmatch(r"orchestra\.db\.corrupted_\d{8}_\d{6}", aside.name)
    assert hashlib.sha256(aside.read_bytes()).hexdigest() == damaged_bytes
    assert out["source"] == str(aside) and out["from_backup"] is False
    assert set(out) == {"database", "source", "from_backup", "live_integrity", "backup",
                        "moved_aside", "applied_migrations", "tables", "rows_copied", "rows_lost",
                        "rows_lost_at_most", "foreign_key_violations", "integrity", "warnings",
                        "rows_in_lost_and_found", "incomplete", "wal_ignored"}
    assert set(out["tables"][0]) == {"table", "copied", "lost", "lost_exact", "lost_at_most", "note",
                                     "lost_and_found"}


def test_a_table_without_indexes_gets_an_upper_bound_from_rowid_gaps(db):
    with connect(db) as c:
        with c:
            c.executemany("INSERT INTO [HangFire.Job] (State) VALUES (?)",
                          [("Succeeded" * 20,) for _ in range(3000)])
    leaves = leaf_pages(db, "HangFire.Job")
    damaged = leaves[len(leaves) // 2: len(leaves) // 2 + 3]
    overwrite_pages(db, [page for page, _ in damaged], fill=b"\x00")
    result = cli("--database", db, "--json", "recover")
    jobs = by_table(json.loads(result.stdout))["HangFire.Job"]
    lost = sum(cells for _, cells in damaged)  # the ids are dense, so the gap is the loss
    # at least one row per unreadable leaf (SQLite frees a leaf it empties), at most the gap
    assert (jobs["copied"], jobs["lost"], jobs["lost_exact"], jobs["lost_at_most"]) == (
        3002 - lost, len(damaged), False, lost)
    assert f"{len(damaged)} to {lost} lost" in result.stderr and result.exit_code == 1


def test_recover_after_overwriting_pages_in_the_middle_of_the_file(db):
    add_messages(db)
    before = counts(db)
    with connect(db) as c:
        ids_before = {r[0] for r in c.execute("SELECT Id FROM ChatMessages")}
    pages = db.stat().st_size // 4096
    overwrite_pages(db, range(pages // 2 - 3, pages // 2 + 3))

    result = cli("--database", db, "recover")
    assert result.exit_code == 1 and "row(s) lost" in result.stderr, result.stderr
    assert "recovered" in result.stderr and "ChatMessages" in result.stdout
    after = counts(db)
    assert all(after[t] <= before[t] for t in ALL_TABLES) and sum(after.values()) > 0
    with connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert {r[0] for r in c.execute("SELECT Id FROM ChatMessages")} <= ids_before
    assert ALL_TABLES <= tables(db)


def test_recover_from_a_backup(db):
    backup = backups.backup(Context(db)).path
    overwrite_pages(db, [page for page, _ in leaf_pages(db, "ChatMessages")])
    out = json.loads(recover(db, "--from", backup).stdout)
    assert out["from_backup"] is True and out["source"] == str(backup)
    assert counts(db) == counts(backup) and history(db) == {CORE, CHAT}
    assert all(t["lost"] == 0 for t in out["tables"])
    assert Path(out["backup"]).exists() and out["integrity"] == "ok"


def test_recover_from_a_backup_when_the_database_is_gone(db):
    backup = backups.backup(Context(db)).path
    db.unlink()
    out = json.loads(recover(db, "--from", backup).stdout)
    assert out["live_integrity"] == "missing" and out["moved_aside"] == [] and out["backup"] is None
    assert counts(db) == counts(backup)


def test_a_healthy_database_is_refused_without_yes(db):
    before, names = file_state(db), files_in(db.parent)
    result = recover(db)
    assert result.exit_code == 5 and "nothing to recover" in result.stderr
    assert file_state(db) == before and files_in(db.parent) == names


def test_yes_rebuilds_a_healthy_wal_database_keeping_everything(db):
    with connect(db) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()
    os.chmod(db, 0o640)
    before = counts(db)
    out = json.loads(recover(db, "--yes").stdout)
    assert re.fullmatch(r"orchestra\.db\.pre-recover_\d{8}_\d{6}", Path(out["backup"]).name)
    assert counts(db) == before and out["rows_lost"] == 0
    assert sqlitefile.journal_mode(db) == "wal" and stat.S_IMODE(db.stat().st_mode) == 0o640


@pytest.mark.parametrize("spoil, code", [
    (lambda b: overwrite_pages(b, [2, 3]), 5),
    (lambda b: b.unlink(), 2),
])
def test_a_bad_backup_is_refused(db, spoil, code):
    backup = backups.backup(Context(db)).path
    spoil(backup)
    overwrite_pages(db, [page for page, _ in leaf_pages(db, "ChatMessages")])
    before, names = file_state(db), files_in(db.parent)
    result = recover(db, "--from", backup)
    assert result.exit_code == code and len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(db.parent) == names


def test_a_database_in_use_is_refused(db):
    with connect(db) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()
    holder = spawn(WAL_HOLDER, db)
    try:
        before, names = file_state(db), files_in(db.parent)
        result = recover(db, "--yes")
        assert result.exit_code == 3 and "stop the Orchestra API" in result.stderr
        assert file_state(db) == before and files_in(db.parent) == names
    finally:
        holder.communicate("done\n", timeout=30)


def test_missing_database_without_a_backup(tmp_path):
    result = recover(tmp_path / "orchestra.db")
    assert result.exit_code == 6 and "--from" in result.stderr


def test_foreign_tables_keep_indexes_triggers_and_autoincrement(db):
    with connect(db) as c:
        c.execute("""
            CREATE TABLE [HangFire.Counter] (Id INTEGER PRIMARY KEY AUTOINCREMENT, Key TEXT NOT NULL);
            CREATE INDEX [IX_HangFire_Counter_Key] ON [HangFire.Counter] (Key);
            CREATE TABLE audit (what TEXT);
            CREATE TRIGGER counted AFTER INSERT ON [HangFire.Counter] BEGIN
                INSERT INTO audit VALUES (new.Key); END;
            INSERT INTO [HangFire.Counter] (Key) VALUES ('a'), ('b'), ('c');
            DELETE FROM [HangFire.Counter] WHERE Key = 'c';""")
    out = json.loads(recover(db, "--yes").stdout)
    assert out["integrity"] == "ok"
    with connect(db) as c:
        assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == 3  # the copy fired nothing
        assert c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'HangFire.Counter'"
                         ).fetchone()[0] == 3  # id 3 is never handed out again
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_schema")}
        assert {"IX_HangFire_Counter_Key", "counted"} <= names
        c.execute("INSERT INTO [HangFire.Counter] (Key) VALUES ('d')")
        assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == 4  # the trigger is back


def test_a_damaged_page_1_loses_no_row(db):
    """Page 1 (header and sqlite_master's root) overwritten: the schema comes back from the
    surviving sqlite_master records and every row from its intact leaf page."""
    add_messages(db)
    before = counts(db)
    overwrite_pages(db, [1])
    result = recover(db)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert counts(db) == before and history(db) == {CORE, CHAT}
    assert out["integrity"] == "ok" and out["rows_lost"] == out["rows_lost_at_most"] == 0
    assert any("sqlite_master is damaged" in w for w in out["warnings"])


def test_a_file_with_no_sqlite_left_in_it_exits_1_with_the_migrations_tables(db):
    db.write_bytes(os.urandom(64 * 1024))
    result = recover(db)
    assert result.exit_code == 1 and "no sqlite_master record survived" in result.stderr
    out = json.loads(result.stdout)
    assert out["integrity"] == "ok" and out["rows_copied"] == 0 and ".corrupted_" in out["backup"]
    assert CORE_TABLES | CHAT_TABLES <= tables(db) and history(db) == {CORE, CHAT}
    assert all((t["lost_exact"], t["lost_at_most"]) == (False, None) for t in out["tables"])


def test_a_crash_just_before_the_swap_leaves_the_old_file_at_the_live_name(db, monkeypatch):
    """The live name is never empty: the old file gets its second name before the new one arrives."""
    add_messages(db)
    overwrite_pages(db, [page for page, _ in leaf_pages(db, "ChatMessages")[:1]])
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    def crash(*args):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(staging.os, "replace", crash)
    result = cli("--database", db, "recover")
    assert result.exit_code != 0 and "simulated crash" in result.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # still the old file
    asides = [n for n in files_in(db.parent) if ".corrupted_" in n]
    assert asides and hashlib.sha256((db.parent / asides[0]).read_bytes()).hexdigest() == before


def test_cleanup_spares_a_temporary_file_whose_writer_lives_under_another_pid(tmp_path):
    """pids repeat across containers: only the writer's flock says it is alive."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)\n"),
        str(tmp_path / ".orchestra.db.orchestra-tmp-999999-0123abcd")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / ".orchestra.db.orchestra-tmp-999998-4567cdef").write_bytes(b"left by a killed run")
        cleaned = staging.clean_stale(tmp_path)
        assert [p.name for p in cleaned] == [".orchestra.db.orchestra-tmp-999998-4567cdef"]
        assert (tmp_path / ".orchestra.db.orchestra-tmp-999999-0123abcd").exists()
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in staging.clean_stale(tmp_path)] == [".orchestra.db.orchestra-tmp-999999-0123abcd"]


def test_recover_keeps_the_databases_rows_not_what_a_migration_seeded(tmp_path):
    """A migration may seed rows (EF Core's HasData) that the application later changes
    or deletes: the rebuilt database holds the source's rows, not the seed again."""
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0001_settings.sql").write_text(
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);\n"
        "INSERT INTO settings VALUES ('theme', 'light'), ('lang', 'en');\n")
    (sql / "0001_settings.rollback.sql").write_text("DROP TABLE settings;\n")
    db = tmp_path / "orchestra.db"
    assert cli("-d", db, "--sql-dir", sql, "apply").exit_code == 0
    with connect(db) as c:
        c.execute("UPDATE settings SET value = 'dark' WHERE key = 'theme'; "
                  "DELETE FROM settings WHERE key = 'lang'")
    result = cli("-d", db, "--sql-dir", sql, "--json", "recover", "--yes")
    assert result.exit_code == 0, result.stderr
    with connect(db) as c:
        assert c.execute("SELECT key, value FROM settings").fetchall() == [("theme", "dark")]
    out = json.loads(result.stdout)
    assert (out["rows_lost"], by_table(out)["settings"]["copied"]) == (0, 1)


def test_a_history_that_lacks_a_dependency_is_made_whole(db):
    """A history listing a migration without what it depends on (edited by hand, or left by
    concurrent runs before they checked dependencies under the lock) still recovers."""
    assert cli("--database", db, "history", "forget", CORE, "--yes", "--no-backup").exit_code == 0
    before = counts(db)
    result = recover(db, "--yes")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["applied_migrations"] == [CORE, CHAT] and counts(db) == before
    assert any(w.startswith(f"{CORE}: not in the source's history") for w in out["warnings"])


def test_a_without_rowid_table_of_a_damaged_file_is_named_not_dropped(db):
    with connect(db) as c:
        c.execute("CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID; "
                  "INSERT INTO settings VALUES ('a', 'b')")
    add_messages(db)
    overwrite_pages(db, [page for page, _ in leaf_pages(db, "ChatMessages")[:1]])
    result = recover(db)
    assert result.exit_code == 1 and "settings: a WITHOUT ROWID" in result.stderr
    assert by_table(json.loads(result.stdout))["settings"]["lost_at_most"] is None


def _checks_of_new_files_fail(monkeypatch, *inputs):
    """Every integrity or quick check run on a file other than `inputs` (the rebuilt
    database, wherever recover builds it) reports damage, as on a disk that garbled it."""
    known = {os.path.realpath(p) for p in inputs}

    def hook(conn):
        if os.path.realpath(conn.filename or ":memory:") in known:
            return
        def garble(cursor, row):
            names = [d[0] for d in cursor.get_description()]
            return ("row 1 missing from index X",) if names in (["integrity_check"], ["quick_check"]) else row
        conn.row_trace = garble

    monkeypatch.setattr(apsw, "connection_hooks", [*apsw.connection_hooks, hook])


@pytest.mark.parametrize("from_backup", [False, True], ids=["salvage", "from-backup"])
def test_a_rebuilt_database_that_fails_its_check_is_not_swapped_in(db, monkeypatch, from_backup):
    """recover's promise: only a result that passes integrity_check replaces the damaged file."""
    backup = Path(json.loads(cli("--database", db, "--json", "backup").stdout)["path"])
    overwrite_pages(db, [page for page, _ in leaf_pages(db, "ChatMessages")[:1]], fill=b"\x00")
    before, names = file_state(db), files_in(db.parent)
    _checks_of_new_files_fail(monkeypatch, db, backup)
    result = recover(db, *(["--from", backup] if from_backup else []))
    assert result.exit_code == 1, result.output
    assert "integrity" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert file_state(db) == before and files_in(db.parent) == names  # not moved aside, no leftovers


@pytest.mark.parametrize("source", ["the file itself", "a backup"])
def test_text_that_is_not_utf8_is_copied_as_stored(ef_db, source):
    """SQLite stores text that is not UTF-8 and returns it as it is: recover copies its bytes
    (it exited 70 on UnicodeDecodeError from a backup, and from a file that passes its check)."""
    with connect(ef_db) as c:
        rowid = c.execute("SELECT min(rowid) FROM ChatMessages").fetchone()[0]
        c.execute("UPDATE ChatMessages SET Content = CAST(x'41ff42' AS TEXT) WHERE rowid = ?", (rowid,))
    before = counts(ef_db)
    args = ["--yes"]
    if source == "a backup":
        args += ["--from", json.loads(cli("--database", ef_db, "--json", "backup").stdout)["path"]]
    result = recover(ef_db, *args)
    assert result.exit_code == 0, result.stderr
    assert counts(ef_db) == before
    with connect(ef_db) as c:
        assert c.execute("SELECT hex(Content), typeof(Content) FROM ChatMessages WHERE rowid = ?",
                         (rowid,)).fetchall() == [("41FF42", "text")]


def test_a_utf16_database_keeps_its_text(tmp_path):
    """Text goes across as its stored bytes, so the new file keeps the source's encoding."""
    db = tmp_path / "orchestra.db"
    with connect(db) as c:  # the encoding is fixed when the first table is written
        c.execute("PRAGMA encoding = 'UTF-16le'")
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        c.execute("INSERT INTO notes (body) VALUES ('café 漢字 🚀')")
    assert cli("--database", db, "apply").exit_code == 0
    result = recover(db, "--yes")
    assert result.exit_code == 0 and json.loads(result.stdout)["warnings"] == [], result.output
    with connect(db) as c:
        assert c.execute("SELECT body FROM notes").fetchall() == [("café 漢字 🚀",)]
        assert c.execute("SELECT sql FROM sqlite_schema WHERE name = 'notes'").fetchall() == [
            ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",)]
        assert c.execute("PRAGMA encoding").fetchone()[0] == "UTF-16le"


def test_a_schema_statement_that_is_not_utf8_is_named_not_a_crash(db):
    """A flipped bit in sqlite_master's text: SQLite still opens the file and passes its check,
    but the statement is not UTF-8 (recover exited 70 on UnicodeDecodeError)."""
    data = bytearray(db.read_bytes())
    at = data.find(b'"Content" TEXT')
    assert at > 0 and data.find(b'"Content" TEXT', at + 1) < 0
    data[at + 2] ^= 0x80
    db.write_bytes(bytes(data))
    result = recover(db, "--yes")
    assert result.exit_code == 1, result.stderr
    assert "ChatMessages: its schema record is not UTF-8" in result.stderr
    assert json.loads(result.stdout)["integrity"] == "ok"
