"""Read-only commands import only what they use; the yoyo-free readings agree with yoyo's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yoyo.migrations import default_migration_table, parse_metadata_from_sql_comments, read_sql_migration
from yoyo.topologicalsort import topological_sort

from helpers import CHAT, CORE
from orchestra_schema import migrations
from orchestra_schema.engines import base

LOADED = """import runpy, sys
sys.argv = ["orchestra-schema", *sys.argv[1:]]
try:
    runpy.run_module("orchestra_schema", run_name="__main__")
except SystemExit as done:
    assert not done.code, done.code
print(" ".join(sorted(m for m in sys.modules
                     if m.split(".")[0] in ("yoyo", "orchestra_schema", "apsw", "sqlparse"))))
"""


def modules_loaded(*args, env=None) -> set[str]:
    """The yoyo, apsw and orchestra_schema modules a real run of the command imported."""
    out = subprocess.run([sys.executable, "-c", LOADED, *map(str, args)], capture_output=True,
                         text=True, check=True, env={**os.environ, **(env or {})}).stdout
    return set(out.split("\n")[-2].split())


@pytest.mark.parametrize("command", [["status"], ["backup"], ["--help"], ["status", "--help"]])
def test_read_only_commands_do_not_import_yoyo_or_other_commands(db, command):
    loaded = modules_loaded("-q", "-d", db, *command)
    assert not {m for m in loaded if m.startswith("yoyo")}
    # engines/runner.py is the engine-neutral rules; yoyo's side of SQLite is engines/sqlite/yoyo_apsw.py
    assert not loaded & {"orchestra_schema.engines.sqlite.yoyo_apsw",
                         "orchestra_schema.commands.recover", "orchestra_schema.engines.sqlite.recover",
                         "orchestra_schema.commands.rehearse",
                         "orchestra_schema.engines.sqlite.rehearsal",
                         "orchestra_schema.engines.sqlite.overlay",
                         "orchestra_schema.commands.restore", "orchestra_schema.engines.sqlite.restore",
                         "orchestra_schema.commands.verify"}


def test_status_on_postgresql_imports_neither_yoyo_nor_sqlites_modules(pgdb):
    """status reads the history through psycopg alone: yoyo (and sqlparse) come with the
    first migration transaction, apsw with an SQLite file."""
    from pgserver import PASSWORD
    loaded = modules_loaded("-q", "-d", pgdb.url_no_password, "status",
                            env={"PGPASSWORD": PASSWORD})
    assert "orchestra_schema.engines.postgresql.driver" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("yoyo", "apsw", "sqlparse")}
    assert not loaded & {"orchestra_schema.engines.runner", "orchestra_schema.commands.backup",
                         "orchestra_schema.schema", "orchestra_schema.engines.sqlite.database"}


GC_SEEN = """import gc, sys
import orchestra_schema.cli
from orchestra_schema.commands import migrate as commands
seen = [gc.isenabled()]  # a library import leaves the collector alone
from orchestra_schema import entry
seen.append(gc.isenabled())  # the program's start: off
status = commands.status
commands.status = lambda ctx: (seen.append(gc.isenabled()), status(ctx))[1]
sys.argv = ["orchestra-schema", "-q", "-d", sys.argv[1], "status"]
try:
    entry.run()
except SystemExit as done:
    assert not done.code, done.code
print(seen, file=sys.stderr)
"""


def test_the_program_loads_without_the_gc_and_runs_the_command_with_it(db):
    """entry.py turns the cyclic GC off for start-up only; importing the package does not."""
    done = subprocess.run([sys.executable, "-c", GC_SEEN, str(db)], capture_output=True,
                          text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[True, False, True]"


def test_apply_still_runs_through_yoyo(tmp_path):
    assert "yoyo.backends.base" in modules_loaded("-q", "-d", tmp_path / "new.db", "apply")


def test_the_history_table_name_is_yoyos():
    assert base.MIGRATION_TABLE == default_migration_table


def test_the_shipped_files_read_as_yoyo_reads_them():
    for m in migrations.load():
        directives, comment, statements = read_sql_migration(str(m.path))
        assert m.depends == tuple(directives.get("depends", "").split())
        assert m.comment == comment.strip() and m.statements == tuple(statements)
        assert m.rollback_statements == tuple(read_sql_migration(str(m.rollback_path))[2])
    assert [m.id for m in migrations.load()] == [CORE, CHAT]


LINE = st.sampled_from([
    "-- depends: a b", "--depends:c", "  -- depends :  d", "-- transactional: false",
    "-- a note", "--", "", "   ", "-- depends: e -- not a comment", "\t-- indented note",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_leading_comments_and_directives_as_yoyo_reads_them(lines, ending):
    text = ending.join([*lines, "CREATE TABLE t (x);", "-- depends: not this one", ""])
    ours = migrations._leading_comment(text)
    first = text.strip()  # sqlparse.split strips each statement
    directives, comment, _ = parse_metadata_from_sql_comments(first)
    assert ours == (directives, comment)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=12))))
def test_dependency_order_is_yoyos(graph):
    n, edges = graph
    ids = [f"m{i}" for i in range(n)]
    depends = {i: tuple(sorted({f"m{b}" for a, b in edges if f"m{a}" == i and b < a})) for i in ids}
    files = {i: migrations.MigrationFile(i, None, None, depends[i], "", "", None) for i in ids}
    expected = list(topological_sort(sorted(ids), depends))
    assert [m.id for m in migrations._ordered(files)] == expected


def test_a_depends_line_read_differently_is_refused_not_guessed(tmp_path):
    text = "-- depends: a\nCREATE TABLE t (x);\n"
    with pytest.raises(Exception, match="reads differently to yoyo"):
        migrations._statements(migrations._split(text), tmp_path / "x.sql", ("b",))
