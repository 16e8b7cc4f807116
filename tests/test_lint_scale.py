"""lint on big files: the statements are yoyo's (sqlparse's split, found by a faster scan), and
lint's work grows with the file, not faster (counted, not timed: sqltext.READ counts the
characters each reading of the text took and the statements replayed)."""

from __future__ import annotations

from pathlib import Path

import sqlparse
from hypothesis import example, given, settings, strategies as st

from orchestra_schema import lint as linting
from orchestra_schema import migrations as mig
from orchestra_schema.sqlsplit import split
from orchestra_schema.lint.sqltext import READ, SqlFile

REPO = Path(__file__).resolve().parent.parent

# What sqlparse reads other than the plain scan would, each next to the others in any order:
# blocks, GO, quotes and their escapes, comments and hints, $$, operators that swallow `--`.
FRAGMENTS = [
    " ", "\n", "\r\n", "\r", "\t", "\u00a0", ";", "(", ")", ",", ".", "'", "''", "\\", '"', '""',
    "--", "-- c\n", "--+h\n", "# ", "#", "/*", "*/", "/*+", "$", "$$", "$a$", "x", "abc", "_",
    "é", "Ж", "1", "0x1", "1e5", "1.5", ".5", "SELECT", "INSERT INTO t VALUES", "CREATE",
    "CREATE TRIGGER tr AFTER INSERT ON t", "BEGIN", "begin", "END", "end", "END IF", "IF",
    "CASE", "DECLARE", "GO", "go", "GO 2", "TRANSACTION", "LOOP", "FOR", "WHILE", "DO", "ZONE",
    "AT TIME ZONE 'x'", "WITH'", "x.END", "E'a\\'b'", "X'00'", "+", "-", "/", "*", "=", "<",
    ">", "!", "~", "@", "%", "^", "&", "|", "||", "?", ":", "::", "[", "]", "`", "´", "->>",
]


@settings(max_examples=600, deadline=None)
@example("LOOP# GO 2;x")  # sqlparse's words hold # and $: no comment here
@example("x +-- y;\nz;")  # +-- is one operator to sqlparse
@example("SELECT 0x1GO x;")  # hex 0x1, then GO ends the statement
@example("SELECT WITH' TIME ZONE 'a'; b';")  # one token to sqlparse, up to 'a'
@example("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END; x;")
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_statements_are_sqlparses(text):
    assert [sql for _, sql in split(text)] == sqlparse.split(text)


def test_statements_of_the_shipped_migrations_are_yoyos():
    for sql_dir in (REPO / "sql" / "sqlite", REPO / "sql" / "postgresql"):
        for m in mig.load(sql_dir):
            assert [s.sql for s in SqlFile.forward(m).statements] == list(m.statements)
            assert [s.sql for s in SqlFile.rollback(m).statements] == list(m.rollback_statements)


def data_migration(d: Path, rows: int) -> Path:
    """The shipped migrations and a data migration of `rows` chat messages, with a trigger (read
    by sqlparse's lexer), an UPDATE, and a DELETE without WHERE last (a finding)."""
    d.mkdir()
    for p in (REPO / "sql" / "sqlite").glob("*.sql"):
        (d / p.name).write_text(p.read_text())
    lines = ["-- Seeds chat messages.", "-- depends: 20250922204129_AddChatTables", "",
             "INSERT INTO \"ChatSessions\" VALUES ('s', NULL, 'i', 'T; it''s', 'x', 'x');",
             "CREATE TABLE \"Seen\" (\"Id\" TEXT);",
             "CREATE TRIGGER \"TR_Seen\" AFTER INSERT ON \"ChatMessages\" BEGIN",
             "    INSERT INTO \"Seen\" VALUES (NEW.\"Id\");", "END;"]
    lines += [f"INSERT INTO \"ChatMessages\" VALUES ('m{i}', 's', 'agent', 'reply {i}; -- not "
              f"a comment', 1, '2025-01-01', NULL);" for i in range(rows)]
    lines += ["UPDATE \"ChatSessions\" SET \"Title\" = 'T' WHERE \"Id\" = 's';",
              "DELETE FROM \"Seen\";"]
    (d / "20251201000000_Seed.sql").write_text("\n".join(lines) + "\n")
    (d / "20251201000000_Seed.rollback.sql").write_text(
        "-- Removes the seeded rows.\n-- LOSES: the seeded ChatMessages, ChatSessions, Seen\n\n"
        "DROP TRIGGER \"TR_Seen\";\nDROP TABLE \"Seen\";\nDELETE FROM \"ChatMessages\";\n"
        "DELETE FROM \"ChatSessions\";\n")
    return d


def work(d: Path):
    READ.clear()
    report = linting.lint(d, "sqlite")
    return dict(READ), [(Path(f.file).name, f.line, f.rule) for f in report.findings]


def test_lint_work_grows_linearly_with_the_file(tmp_path):
    small, small_found = work(data_migration(tmp_path / "small", 300))
    large, large_found = work(data_migration(tmp_path / "large", 3000))
    assert small_found == [("20251201000000_Seed.sql", 310, "data-loss")]
    assert large_found == [("20251201000000_Seed.sql", 3010, "data-loss")]
    assert set(large) == {"split", "lines", "tokens", "replayed"}
    for what, count in large.items():  # 10 times the rows: about 10 times the work, not 100
        assert count <= 11 * small[what], (what, small[what], count)
    statements = 3000 + 5 + 45 + 8 + 9 + 2 + 4  # rows, the seed's others, the shipped files
    # Each file runs once: a rollback that gives back the state exactly is undone, not followed
    # by the forward file again (a data migration's rows would run twice).
    assert large["replayed"] <= statements
    seed = (tmp_path / "large" / "20251201000000_Seed.sql").stat().st_size
    assert large["split"] <= 2 * seed + 20_000  # each character read at most twice


def test_apply_lint_reads_every_statement_but_replays_only_the_schema(tmp_path):
    """apply's lint (schema_only): every rule still reads the rows (the data-loss finding is
    there), the replay runs none of them (apply runs them next, all or nothing)."""
    d = data_migration(tmp_path / "d", 3000)
    migrations = mig.load(d)
    READ.clear()
    report = linting.lint_migrations(migrations, migrations, "sqlite", schema_only=True)
    assert [(Path(f.file).name, f.line, f.rule) for f in report.findings] == [
        ("20251201000000_Seed.sql", 3010, "data-loss")]
    assert READ["replayed"] <= 45 + 8 + 9 + 2 + 3 + 3  # the shipped files, the seed's DDL


def test_apply_lint_still_replays_the_schema(tmp_path):
    d = data_migration(tmp_path / "d", 30)
    rollback = d / "20251201000000_Seed.rollback.sql"
    rollback.write_text(rollback.read_text().replace('DROP TABLE "Seen";\n', ""))
    migrations = mig.load(d)
    report = linting.lint_migrations(migrations, migrations, "sqlite", schema_only=True)
    assert any(f.rule == "round-trip" and "Seen" in f.message for f in report.findings)
