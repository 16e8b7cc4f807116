"""The DBA's whole procedure on a PostgreSQL database EF Core made, through the real CLI as
a process: every step exits 0, and EF Core's history is exactly what EF Core would have
written after each (ids and ProductVersions). The server is conftest's pg_cluster (a
missing one fails under CI=true).

The database is made by the SQL EF Core's Npgsql provider emits for the upstream C#
migrations (`dotnet ef migrations script`), built here from the C# files in
tests/data/ef-postgresql by test_pg_schema's parser, not from this tool's SQL files:
CREATE TABLE with the key and foreign keys inline, then CREATE INDEX, then EF's history row,
one transaction per migration after EF's history table.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run
from pgserver import PASSWORD
from test_pg_commands import AGENT, CHAT, CORE, EF_HISTORY_DDL, EF_INITIAL, ef_rows
from test_pg_schema import AGENT_SESSIONS, INITIAL, ef_schema

EF_ROWS = {EF_INITIAL: "9.0.9", AGENT: "9.0.9"}  # as EF Core 9.0.9 (Npgsql) writes them
ON_DELETE = {"c": " ON DELETE CASCADE", "n": " ON DELETE SET NULL", "r": " ON DELETE RESTRICT",
             "a": ""}


def _columns(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def npgsql_script(cs_file, migration_id: str) -> str:
    """One migration as EF's Npgsql provider scripts it, with its history row."""
    schema = ef_schema(cs_file)
    statements = []
    for table, t in schema.items():
        lines = [f'    "{name}" {kind}{" NOT NULL" if not_null else ""}'
                 for name, kind, not_null in t["columns"]]
        lines.append(f'    CONSTRAINT "{t["pk"][0]}" PRIMARY KEY ({_columns(t["pk"][1])})')
        lines += [f'    CONSTRAINT "{name}" FOREIGN KEY ({_columns(cols)}) REFERENCES "{parent}" '
                  f'({_columns(parent_cols)}){ON_DELETE[action]}'
                  for name, (cols, parent, parent_cols, action) in t["fks"].items()]
        statements.append(f'CREATE TABLE "{table}" (\n' + ",\n".join(lines) + "\n);")
    statements += [f'CREATE {"UNIQUE " if unique else ""}INDEX "{name}" ON "{table}" '
                   f"({_columns(cols)});"
                   for table, t in schema.items() for name, (cols, unique) in t["indexes"].items()]
    statements.append('INSERT INTO "__EFMigrationsHistory" ("MigrationId", "ProductVersion")\n'
                      f"VALUES ('{migration_id}', '9.0.9');")
    return "START TRANSACTION;\n\n" + "\n\n".join(statements) + "\n\nCOMMIT;\n"


def ef_core_made(database) -> None:
    """`dotnet ef database update` on an empty database, then a few of the app's rows."""
    database.run_sql(EF_HISTORY_DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS") + ";")
    database.run_sql(npgsql_script(INITIAL, EF_INITIAL))
    database.run_sql(npgsql_script(AGENT_SESSIONS, AGENT))
    from test_pg_commands import add_rows
    add_rows(database)


def test_the_whole_procedure_on_a_database_ef_core_made(pgdb, pg_cluster, tmp_path):
    ef_core_made(pgdb)
    assert ef_rows(pgdb) == EF_ROWS
    backups = tmp_path / "backups"
    backups.mkdir()

    def step(database, *args, rows=EF_ROWS):
        done = run("--database", database.url, "--backup-dir", backups, "--json", *args,
                   timeout=120)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert PASSWORD not in done.stdout + done.stderr
        assert ef_rows(database) == rows, args
        return json.loads(done.stdout) if done.stdout.strip() else None

    assert step(pgdb, "adopt")["recorded"] == [CORE, CHAT, AGENT]
    assert step(pgdb, "verify")["ok"] is True
    assert step(pgdb, "rehearse")["ok"] is True
    rolled = step(pgdb, "rollback", "--only", CHAT, "--yes", rows={AGENT: "9.0.9"})
    assert rolled["rolled_back"] == [CHAT] and rolled["ef_history"] == [f"removed {EF_INITIAL}"]
    assert Path(rolled["backup"]).is_file()  # taken before the rollback
    assert step(pgdb, "checklist", rows={AGENT: "9.0.9"})["ok"] is True
    applied = step(pgdb, "apply")
    assert applied["applied"] == [CHAT]
    assert applied["ef_history"] == [f"added {EF_INITIAL} (ProductVersion 9.0.9)"]
    assert step(pgdb, "verify")["ok"] is True
    backup = step(pgdb, "backup")["path"]

    empty = pg_cluster.new_database("restored")
    try:
        step(empty, "restore", backup)
        assert step(empty, "verify")["ok"] is True
    finally:
        pg_cluster.drop_database(empty)
