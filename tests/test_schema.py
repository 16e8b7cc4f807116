"""The SQL files reproduce EF Core's schema; the structural diff names what differs."""

import pytest

from helpers import CHAT_TABLES, CORE_TABLES, build_ef_database, cli, connect
from orchestra_schema import schema
from orchestra_schema.engines.sqlite.database import Database
from orchestra_schema.engines.sqlite.snapshot import snapshot

EF_TABLES = CORE_TABLES | CHAT_TABLES


def snap(path, only=EF_TABLES):
    with Database.open(path, readonly=True) as db:
        return snapshot(db).restricted_to(only)


def test_applied_schema_equals_ef_core(tmp_path):
    ef = build_ef_database(tmp_path / "ef.db", with_rows=False)
    ours = tmp_path / "ours.db"
    assert cli("-d", ours, "apply").exit_code == 0
    expected, actual = snap(ef), snap(ours)
    assert set(expected.tables) == EF_TABLES
    assert schema.diff(expected, actual) == []
    # Not vacuous: the snapshot holds every index and foreign key EF made.
    assert sum(len(t.indexes) for t in actual.tables.values()) == 44 + len(EF_TABLES)
    assert sum(len(t.foreign_keys) for t in actual.tables.values()) == 11


@pytest.mark.parametrize("change, expected_line", [
    ('DROP INDEX "IX_Tasks_Status"', "index IX_Tasks_Status on Tasks: missing"),
    ('CREATE INDEX "IX_Extra" ON "Tasks" ("Command")', "index IX_Extra on Tasks: not expected (extra)"),
    ('ALTER TABLE "Agents" ADD COLUMN "Note" TEXT', "column Agents.Note: not expected (extra)"),
    ('DROP TABLE "ChatMessages"', "table ChatMessages: missing"),
])
def test_diff_names_each_change(tmp_path, change, expected_line):
    ef = build_ef_database(tmp_path / "ef.db", with_rows=False)
    expected = snap(ef)
    with connect(ef) as c:
        c.execute(change)
    assert expected_line in schema.diff(expected, snap(ef))


def test_diff_sees_column_type_nullability_and_fk_action(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with connect(a) as c:
        c.execute("CREATE TABLE p(id TEXT PRIMARY KEY); "
                  "CREATE TABLE t(id TEXT NOT NULL, v INTEGER, pid TEXT REFERENCES p(id) ON DELETE CASCADE)")
    with connect(b) as c:
        c.execute("CREATE TABLE p(id TEXT PRIMARY KEY); "
                  "CREATE TABLE t(id TEXT, v TEXT, pid TEXT REFERENCES p(id) ON DELETE SET NULL)")
    lines = schema.diff(snap(a, {"p", "t"}), snap(b, {"p", "t"}))
    assert "column t.id: notnull True expected, False found" in lines
    assert "column t.v: type 'INTEGER' expected, 'TEXT' found" in lines
    assert any(line.startswith("foreign key t(pid) -> p(id) ON DELETE CASCADE: missing") for line in lines)


def test_column_order_is_part_of_the_schema(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with connect(a) as c:
        c.execute("CREATE TABLE t(x, y)")
    with connect(b) as c:
        c.execute("CREATE TABLE t(y, x)")
    assert schema.diff(snap(a, {"t"}), snap(b, {"t"})) == ["table t: column order differs"]


def test_differences_are_data_and_each_side_words_them(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with connect(a) as c:
        c.execute("CREATE TABLE t(id TEXT, v INTEGER); CREATE INDEX ix ON t(v); CREATE TABLE gone(x)")
    with connect(b) as c:
        c.execute("CREATE TABLE t(id TEXT, v TEXT); CREATE INDEX ix ON t(id, v); CREATE TABLE new(x)")
    found = schema.differences(snap(a, {"t", "gone"}), snap(b, {"t", "new"}))
    assert [(d.kind, d.name, d.state) for d in found] == [
        ("table", "gone", schema.MISSING), ("table", "new", schema.EXTRA),
        ("column", "t.v", schema.DIFFERS), ("index", "ix on t", schema.DIFFERS)]
    theirs = schema.Sides(missing="only here", extra="only there", expected="here", found="there")
    assert [schema.render(d, theirs) for d in found] == [
        "table gone: only here", "table new: only there",
        "column t.v: type 'INTEGER' here, 'TEXT' there", "index ix on t: differs ((v) here, (id, v) there)"]
