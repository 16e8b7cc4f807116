"""migrations.py: reading pairs, ordering, plans and new ids, on real files."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from orchestra_schema import migrations as mig
from orchestra_schema.errors import UsageError


def write(sql, name, text, rollback=None):
    (sql / f"{name}.sql").write_text(text)
    if rollback is not None:
        (sql / f"{name}.rollback.sql").write_text(rollback)


@pytest.fixture
def sql(tmp_path):
    d = tmp_path / "sql"
    d.mkdir()
    write(d, "0003_c", "-- c\n-- depends: 0001_a\nCREATE TABLE c(x);\n", "DROP TABLE c;\n")
    write(d, "0001_a", "-- makes a\nCREATE TABLE a(x);\nCREATE INDEX ia ON a(x);\n", "DROP TABLE a;\n")
    write(d, "0002_b", "-- depends: 0001_a\nCREATE TABLE b(x);\n")
    return d


def test_load_reads_pairs_in_dependency_order(sql):
    loaded = mig.load(sql)
    assert [m.id for m in loaded] == ["0001_a", "0002_b", "0003_c"]
    a = loaded[0]
    assert a.statements == ("CREATE TABLE a(x);", "CREATE INDEX ia ON a(x);")
    assert a.rollback_statements == ("DROP TABLE a;",) and a.has_rollback
    assert not loaded[1].has_rollback and loaded[1].rollback_sha256 is None
    assert loaded[2].depends == ("0001_a",)
    assert a.forward_sha256 == mig.sha256_file(sql / "0001_a.sql")


def test_plans_follow_the_target(sql):
    loaded = mig.load(sql)
    assert [m.id for m in mig.plan_apply(loaded, set(), "0003_c")] == ["0001_a", "0003_c"]
    assert [m.id for m in mig.plan_apply(loaded, {"0001_a"}, None)] == ["0002_b", "0003_c"]
    applied = {"0001_a", "0002_b", "0003_c"}
    assert [m.id for m in mig.plan_rollback(loaded, applied, "0002_b")] == ["0003_c"]
    assert [m.id for m in mig.plan_rollback(loaded, applied, "0")] == ["0003_c", "0002_b", "0001_a"]
    with pytest.raises(UsageError, match="unknown migration 'nope'"):
        mig.resolve_target("nope", loaded)


def test_dry_run_sql_names_each_file_and_ends_statements(sql):
    loaded = mig.load(sql)
    text = mig.dry_run_sql(mig.plan_rollback(loaded, {"0001_a", "0003_c"}, "0"), "rollback")
    assert text.splitlines() == [f"-- rollback 0003_c ({sql / '0003_c.rollback.sql'})", "DROP TABLE c;", "",
                                 f"-- rollback 0001_a ({sql / '0001_a.rollback.sql'})", "DROP TABLE a;"]


def test_new_ids_come_after_the_newest_and_depend_on_the_heads(sql):
    write(sql, "20991231235959_late", "-- depends: 0002_b 0003_c\nSELECT 1;\n")
    when = datetime(2025, 9, 27, 10, 0, 0, tzinfo=timezone.utc)
    forward, rollback = mig.new_pair(sql, "next", now=when)
    assert forward.name == "21000101000000_next.sql"  # a real time, one second on: not ...235960
    assert "-- depends: 20991231235959_late" in forward.read_text()
    assert rollback.name == "21000101000000_next.rollback.sql"
    with pytest.raises(UsageError, match="letters, digits"):
        mig.new_pair(sql, "bad name")
