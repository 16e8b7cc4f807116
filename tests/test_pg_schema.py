"""sql/postgresql/ creates exactly the schema EF Core's Npgsql provider creates from the
upstream C# migrations: read from the C# files here (a parser of their own, not the SQL
files), compared with PostgreSQL's catalogs after the SQL files ran on a real server.
The server is conftest's pg_cluster: without one these tests skip, and under CI=true they
fail (pgserver.missing).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import EF_PG_DIR
from orchestra_schema.migrations import default_sql_dir, load

EF_DIR = EF_PG_DIR
INITIAL = EF_DIR / "20250927103132_InitialPostgreSQLMigration.cs"
AGENT_SESSIONS = EF_DIR / "20251109091141_AddAgentSessionsTable.cs"
ACTIONS = {"Cascade": "c", "SetNull": "n", "Restrict": "r", "NoAction": "a", "SetDefault": "d"}


# ---- EF's side: the calls of Up(), read from the C# source

def _balanced(source: str, opening: int) -> str:
    """The text inside the parenthesis at `opening` and its match, skipping "strings"."""
    depth, quoted = 0, False
    for i in range(opening, len(source)):
        char = source[i]
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
            if depth == 0:
                return source[opening + 1:i]
    raise ValueError("unbalanced parentheses")


def _calls(source: str, name: str) -> list[str]:
    """The argument text of every `name(...)` call."""
    return [_balanced(source, m.end() - 1) for m in re.finditer(re.escape(name + "("), source)]


def _arg(call: str, key: str) -> str | None:
    found = re.search(rf"\b{key}:\s*(\"[^\"]*\"|new\[\]\s*\{{[^}}]*\}}|x => x\.\w+|[\w.]+)", call)
    if not found:
        return None
    value = found.group(1)
    if value.startswith("new"):
        return value
    return value.strip('"').removeprefix("x => x.")


def _names(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r'"(\w+)"', text))


def ef_schema(path: Path) -> dict:
    up = path.read_text().split("protected override void Down")[0]
    schema = {}
    for call in _calls(up, "migrationBuilder.CreateTable"):
        table = _arg(call, "name")
        columns_part, constraints_part = call.split("constraints:")
        columns = []
        for col in re.finditer(r"(\w+) = table\.Column<", columns_part):
            # past the generic type (List<string>>) to the call's parenthesis
            body = _balanced(columns_part, columns_part.index("(", col.end()))
            columns.append((col.group(1), _arg(body, "type"), _arg(body, "nullable") == "false"))
        pk_call = _calls(constraints_part, "table.PrimaryKey")[0]
        pk_name, pk_col = re.match(r'\s*"(\w+)",\s*x => x\.(\w+)', pk_call).groups()
        fks = {}
        for fk in _calls(constraints_part, "table.ForeignKey"):
            fks[_arg(fk, "name")] = ((_arg(fk, "column"),), _arg(fk, "principalTable"),
                                     (_arg(fk, "principalColumn"),),
                                     ACTIONS[_arg(fk, "onDelete").split(".")[-1]])
        schema[table] = {"columns": columns, "pk": (pk_name, (pk_col,)), "fks": fks, "indexes": {}}
    for call in _calls(up, "migrationBuilder.CreateIndex"):
        columns = (_arg(call, "column"),) if _arg(call, "column") else _names(_arg(call, "columns"))
        schema[_arg(call, "table")]["indexes"][_arg(call, "name")] = (
            columns, _arg(call, "unique") == "true")
    return schema


# ---- PostgreSQL's side: the catalogs

CATALOG_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum"""

CATALOG_CONSTRAINTS = """
SELECT c.relname, k.conname, k.contype,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       p.relname,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
       k.confdeltype
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class p ON p.oid = k.confrelid
WHERE n.nspname = 'public'"""

CATALOG_INDEXES = """
SELECT t.relname, i.relname, x.indisunique, x.indisprimary,
       ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY u(n, o)
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n ORDER BY u.o),
       x.indpred IS NOT NULL, x.indexprs IS NOT NULL, am.amname
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = i.relam
WHERE n.nspname = 'public'"""


def catalog_schema(database, skip=("_yoyo", "yoyo_", "_orchestra", "__EF")) -> dict:
    schema: dict = {}

    def table(name):
        return schema.setdefault(name, {"columns": [], "pk": None, "fks": {}, "indexes": {}})

    keep = [r for r in database.rows(CATALOG_COLUMNS) if not r[0].startswith(skip)]
    for rel, col, typ, notnull, has_default in keep:
        assert not has_default, f"{rel}.{col} has a default; EF's columns have none"
        table(rel)["columns"].append((col, typ, notnull))
    for rel, name, kind, cols, parent, parent_cols, on_delete in database.rows(CATALOG_CONSTRAINTS):
        if rel.startswith(skip):
            continue
        if kind == "p":
            table(rel)["pk"] = (name, tuple(cols))
        elif kind == "f":
            table(rel)["fks"][name] = (tuple(cols), parent, tuple(parent_cols), on_delete)
        else:
            pytest.fail(f"unexpected constraint {name} ({kind}) on {rel}")
    for rel, name, unique, primary, cols, partial, expr, method in database.rows(CATALOG_INDEXES):
        if rel.startswith(skip) or primary:
            continue
        assert (partial, expr, method) == (False, False, "btree"), name
        table(rel)["indexes"][name] = (tuple(cols), unique)
    return schema


def run_files(database, migrations) -> None:
    with database.connect() as conn:
        for m in migrations:
            conn.execute(m.path.read_text())


def test_the_c_sharp_parser_reads_what_the_reference_says():
    initial, agent = ef_schema(INITIAL), ef_schema(AGENT_SESSIONS)
    assert len(initial) == 10
    assert sum(len(t["indexes"]) for t in initial.values()) == 44
    assert sum(len(t["fks"]) for t in initial.values()) == 11
    assert initial["Repositories"]["columns"][-1] == ("AllowedOperations", "text[]", True)
    assert initial["ChatMessages"]["columns"][3] == ("Content", "character varying(4000)", True)
    assert initial["Tasks"]["fks"]["FK_Tasks_Tasks_ParentTaskId"] == (
        ("ParentTaskId",), "Tasks", ("Id",), "r")
    assert list(agent) == ["AgentSessions"]
    assert agent["AgentSessions"]["indexes"]["IX_AgentSessions_SessionId"] == (("SessionId",), True)


def test_sql_files_make_what_ef_core_makes_on_postgresql(pgdb):
    run_files(pgdb, load(default_sql_dir("postgresql")))
    expected = {**ef_schema(INITIAL), **ef_schema(AGENT_SESSIONS)}
    assert catalog_schema(pgdb) == expected


def test_each_migration_creates_its_own_tables(pgdb):
    by_id = {m.id: m for m in load(default_sql_dir("postgresql"))}
    initial = ef_schema(INITIAL)
    chat = {"ChatSessions", "ChatMessages"}
    run_files(pgdb, [by_id["20250927103131_OrchestraCore"]])
    assert catalog_schema(pgdb) == {t: v for t, v in initial.items() if t not in chat}
    run_files(pgdb, [by_id["20251109091141_AddAgentSessionsTable"]])
    run_files(pgdb, [by_id["20250927103132_AddChatTables"]])
    assert catalog_schema(pgdb) == {**initial, **ef_schema(AGENT_SESSIONS)}


def test_rollback_files_drop_exactly_their_tables(pgdb):
    migrations = load(default_sql_dir("postgresql"))
    run_files(pgdb, migrations)
    with pgdb.connect() as conn:
        for m in reversed(migrations):
            before = pgdb.tables()
            conn.execute(m.rollback_path.read_text())
            created = set(ef_schema(AGENT_SESSIONS) if "Agent" in m.id else
                          {t: 1 for t in ef_schema(INITIAL)
                           if (t.startswith("Chat")) == ("Chat" in m.id)})
            assert before - pgdb.tables() == created
    assert pgdb.tables() == set()


def test_dependencies_are_as_the_issue_says():
    deps = {m.id: m.depends for m in load(default_sql_dir("postgresql"))}
    assert deps == {"20250927103131_OrchestraCore": (),
                    "20250927103132_AddChatTables": ("20250927103131_OrchestraCore",),
                    "20251109091141_AddAgentSessionsTable": ("20250927103131_OrchestraCore",)}

