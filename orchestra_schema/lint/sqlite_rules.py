"""SQLite rules read from the statements' text: pragma-in-transaction,
not-transactional, transactional-directive and the data-loss statements.

The shapes a rule needs are found by the small tokenizer in sqltext; the
rules that need the schema (round-trip, rebuild-loses, implicit-delete) are in
sqlite_replay, which runs the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from .findings import ERROR, WARNING, Finding, finding, loss
from .sqltext import SqlFile, Statement, Token, first_word, tokens

_PRAGMAS = {
    "foreign_keys": "does nothing inside the migration's transaction (orchestra-schema already "
                    "runs every migration with foreign keys off and checks them before commit)",
    "journal_mode": "cannot change inside the migration's transaction; it belongs to the "
                    "database file: set it once, outside any migration",
    "legacy_alter_table": "changes how every later RENAME on the connection rewrites references, "
                          "beyond this migration; rebuild the dependent objects explicitly instead",
}
NOT_TRANSACTIONAL = {"VACUUM", "ATTACH", "DETACH", "BEGIN", "COMMIT", "END", "ROLLBACK"}
# The first words of the statements a rule reads further: no rule reports an INSERT, so a data
# migration's rows are not tokenized.
RULE_WORDS = NOT_TRANSACTIONAL | {"PRAGMA", "DROP", "ALTER", "CREATE", "WITH", "DELETE", "UPDATE"}
SCHEMA_WORDS = {"DROP", "ALTER", "CREATE"}  # rebuilds


def _first(toks: list[Token]) -> str:
    return toks[0].word if toks else ""


def not_transactional(sql: str) -> bool:
    return first_word(sql) in NOT_TRANSACTIONAL and is_not_transactional(tokens(sql))


def is_not_transactional(toks: list[Token]) -> bool:
    """VACUUM, ATTACH, BEGIN/COMMIT...: cannot run inside the migration's transaction."""
    word = _first(toks)
    if word == "ROLLBACK":  # ROLLBACK [TRANSACTION] TO savepoint is fine
        return not any(t.word == "TO" for t in toks[1:3])
    return word in NOT_TRANSACTIONAL


def _name_at(toks: list[Token], i: int) -> str | None:
    """The (last part of a schema-qualified) name starting at toks[i]."""
    if i >= len(toks) or not toks[i].is_name:
        return None
    if i + 2 < len(toks) and toks[i + 1].value == "." and toks[i + 2].is_name:
        return toks[i + 2].value
    return toks[i].value


def _after(toks: list[Token], i: int, *words: str) -> int:
    """Index past the optional keywords at i (IF EXISTS, COLUMN...)."""
    for w in words:
        if i < len(toks) and toks[i].word == w:
            i += 1
    return i


def _skip_name(toks: list[Token], i: int) -> int:
    return i + 3 if i + 1 < len(toks) and toks[i + 1].value == "." else i + 1


def dropped_table(toks: list[Token]) -> str | None:
    if [t.word for t in toks[:2]] == ["DROP", "TABLE"]:
        return _name_at(toks, _after(toks, 2, "IF", "EXISTS"))
    return None


def altered(toks: list[Token]) -> tuple[str | None, list[Token]]:
    """ALTER TABLE name REST: (name, REST)."""
    if [t.word for t in toks[:2]] != ["ALTER", "TABLE"]:
        return None, []
    return _name_at(toks, 2), toks[_skip_name(toks, 2):]


def renamed(toks: list[Token]) -> tuple[str, str] | None:
    """ALTER TABLE old RENAME TO new: (old, new)."""
    table, rest = altered(toks)
    if table and [t.word for t in rest[:2]] == ["RENAME", "TO"] and (new := _name_at(rest, 2)):
        return table, new
    return None


def created_table(toks: list[Token]) -> str | None:
    words = [t.word for t in toks[:3]]
    if words[:1] != ["CREATE"] or "TABLE" not in words:
        return None
    return _name_at(toks, _after(toks, words.index("TABLE") + 1, "IF", "NOT", "EXISTS"))


def _top_level(toks: list[Token]):
    depth = 0
    for i, t in enumerate(toks):
        if t.value == "(":
            depth += 1
        elif t.value == ")":
            depth -= 1
        elif depth == 0:
            yield i, t


def _dml_start(toks: list[Token]) -> int:
    """Past a leading WITH clause: where DELETE/UPDATE/INSERT/SELECT begins."""
    if _first(toks) != "WITH":
        return 0
    for i, t in _top_level(toks):
        if i and t.word in ("DELETE", "UPDATE", "INSERT", "REPLACE", "SELECT"):
            return i
    return 0


def losses(toks: list[Token], rebuilt: set[str]) -> list[tuple[str, str]]:
    # rebuilt: lower-case names of the old copies the file's rebuilds drop
    """(table, what) for each way the statement loses rows. A rebuilt table's drop keeps them."""
    table = dropped_table(toks)
    if table:
        rows_kept = table.lower() in rebuilt
        return [] if rows_kept else [(table, f"DROP TABLE {table} deletes every row of it")]
    table, rest = altered(toks)
    if table and rest and rest[0].word == "DROP":
        column = _name_at(rest, _after(rest, 1, "COLUMN"))
        return [(table, f"DROP COLUMN {column} deletes its value in every row of {table}")]
    start = _dml_start(toks)
    dml, where = toks[start:], any(t.word == "WHERE" for _, t in _top_level(toks[start:]))
    if _first(dml) == "DELETE" and not where:
        table = _name_at(dml, _after(dml, 1, "FROM"))
        return [(table, f"DELETE without WHERE deletes every row of {table}")]
    if _first(dml) == "UPDATE" and not where:
        i = 1 + (2 if len(dml) > 2 and dml[1].word == "OR" else 0)
        table = _name_at(dml, i)
        return [(table, f"UPDATE without WHERE overwrites every row of {table}")]
    return []


@dataclass(frozen=True)
class Rebuild:
    """A table replaced by a new copy in one file; its rows are copied, not lost."""

    table: str  # its name, before and after
    dropped: str  # the name its old copy is dropped under: its own, or the one it was renamed to
    line: int  # that DROP TABLE


def rebuilds(statements: list[Statement]) -> list[Rebuild]:
    """Both ways of rebuilding: new, copy, DROP T, RENAME new TO T (SQLite's documented one,
    EF Core's) and RENAME T TO old, new T, copy, DROP old."""
    dropped, renamed_from, created, found = {}, {}, set(), []
    for st in statements:
        if st.word not in SCHEMA_WORDS:
            continue
        toks = tokens(st.sql)
        if (table := dropped_table(toks)):
            origin = renamed_from.get(table.lower())
            if origin and origin.lower() in created:
                found.append(Rebuild(origin, table, st.line))
            dropped[table.lower()] = (table, st.line)
        elif (table := created_table(toks)):
            created.add(table.lower())
        elif (pair := renamed(toks)):
            old, new = pair
            if new.lower() in dropped:
                found.append(Rebuild(new, *dropped[new.lower()]))
            renamed_from[new.lower()] = old
    return found


def check_file(f: SqlFile) -> list[Finding]:
    out = _directive(f)
    rebuilt = {r.dropped.lower() for r in rebuilds(f.statements)}
    for st in f.statements:
        if st.word not in RULE_WORDS:
            continue
        toks = tokens(st.sql)
        out += _pragma(f, st, toks) + _transaction(f, st, toks)
        out += [x for table, what in losses(toks, rebuilt) if (x := loss(f, st.line, table, what))]
    return out


def _pragma(f: SqlFile, st: Statement, toks: list[Token]) -> list[Finding]:
    name = (_name_at(toks, 1) or "").lower() if _first(toks) == "PRAGMA" else ""
    if name not in _PRAGMAS:
        return []
    return [finding(f, st.line, "pragma-in-transaction", ERROR,
                    f"PRAGMA {name} {_PRAGMAS[name]}; remove it")]


def _transaction(f: SqlFile, st: Statement, toks: list[Token]) -> list[Finding]:
    if not is_not_transactional(toks):
        return []
    word = _first(toks)
    vacuum = "; VACUUM the database outside migrations" if word == "VACUUM" else ""
    each = "" if f.transactional else " (with `-- transactional: false` too: each statement's own)"
    return [finding(f, st.line, "not-transactional", ERROR,
                    f"{word} cannot run inside the transaction orchestra-schema runs each migration "
                    f"in{each} (it would fail, or end that transaction early); remove it{vacuum}")]


def _directive(f: SqlFile) -> list[Finding]:
    """transactional-directive: said once a migration, where the directive is written (the
    forward file's governs its rollback too, which may repeat it)."""
    if f.directive != f.path:
        return []
    return [finding(f, f.header.not_transactional, "transactional-directive", WARNING,
                    "on SQLite every statement is transactional: `-- transactional: false` only "
                    "makes each statement its own transaction, and a kill leaves the statements "
                    "before it done; remove the line")]
