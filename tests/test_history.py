"""history.py called directly on real databases: the adoption plan's refusals, forget's races."""

from __future__ import annotations

import shutil

import pytest

from helpers import CHAT, CORE, build_ef_database, connect, ef_history, history
from orchestra_schema import ef
from orchestra_schema.context import Context
from orchestra_schema.engines.sqlite.database import Database
from orchestra_schema.errors import Refused, UsageError
from orchestra_schema.commands.history import EF, YOYO, adopt, adoption_plan, forget
from orchestra_schema.migrations import default_sql_dir, load


def plan_of(path, sql_dir=None):
    with Database.open(path, readonly=True) as db:
        return [m.id for m in adoption_plan(db, load(sql_dir))]


def test_the_plan_is_both_migrations_then_nothing(tmp_path):
    path = build_ef_database(tmp_path / "ef.db", with_rows=False)
    assert plan_of(path) == [CORE, CHAT]
    assert adopt(Context(path)).recorded == [CORE, CHAT]
    assert plan_of(path) == []


def test_the_plan_refuses_what_ef_did_not_make_or_lists_beyond(tmp_path):
    path = build_ef_database(tmp_path / "ef.db", with_rows=False)
    with connect(path) as c:
        c.execute(f'INSERT INTO "{ef.TABLE}" VALUES (?, ?)', ("20990101000000_Later", "9.0.6"))
    with pytest.raises(Refused, match="20990101000000_Later"):
        plan_of(path)
    with connect(path) as c:
        c.execute(f'DELETE FROM "{ef.TABLE}"')
    with pytest.raises(Refused, match="EF Core did not make this schema"):
        plan_of(path)


def test_the_plan_needs_both_files(tmp_path):
    path = build_ef_database(tmp_path / "ef.db", with_rows=False)
    sql = shutil.copytree(default_sql_dir(), tmp_path / "sql")
    for f in sql.glob(f"{CHAT}*"):
        f.unlink()
    with pytest.raises(UsageError, match=f"lacks {CHAT}"):
        plan_of(path, sql)


def test_forget_says_so_when_the_entry_left_meanwhile(tmp_path):
    path = build_ef_database(tmp_path / "ef.db", with_rows=False)

    def another_run_forgets_it_first():
        with connect(path) as c:
            c.execute(f'DELETE FROM "{ef.TABLE}" WHERE "MigrationId" = ?', (CHAT,))
        return None
    with pytest.raises(UsageError, match="meanwhile"):
        forget(Context(path), CHAT, source=EF, yes=True, backup=another_run_forgets_it_first)
    assert CHAT not in (ef_history(path) or {})


def test_forget_removes_only_the_one_entry(tmp_path):
    path = build_ef_database(tmp_path / "ef.db", with_rows=False)
    adopt(Context(path))
    result = forget(Context(path), CHAT, source=YOYO, yes=True)
    assert (result.history, history(path)) == (YOYO, {CORE})
    assert CHAT in ef_history(path)
