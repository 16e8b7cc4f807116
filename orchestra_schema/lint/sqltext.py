"""SQL text as a reviewer sees it: where statements start, the review header, tokens.

Positions are character offsets; lines count from 1. The tokenizer is the
SQLite rules' parser: comments dropped, strings kept apart from names, quoted
names ("x", [x], `x`) unquoted, so `DROP TABLE "Chat"` and `drop table chat`
read alike.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..sqlsplit import Split

# Characters each reading of the text took (split, lines, tokens) and statements run on a
# scratch database (replayed): lint's work, which must grow with the file, not faster.
READ: Counter[str] = Counter()

_BLANK = re.compile(r"(?:\s+|--[^\n]*|/\*.*?(?:\*/|\Z))*", re.S)
_DIRECTIVE = re.compile(r"^--\s*(depends|transactional)\s*:(.*)$", re.I)
_ALLOW = re.compile(r"^--\s*lint\s*:\s*allow\s+(.*)$", re.I)


def skip_blank(text: str, pos: int) -> int:
    """The first position at or after pos that is not whitespace or a comment."""
    return _BLANK.match(text, pos).end()


def line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


class Lines:
    """Line numbers of positions met in order: each stretch of text is counted once
    (line_at for every statement of a file counts from the start each time)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            self.pos, self.line = 0, 1
        READ["lines"] += pos - self.pos
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


class Statement(NamedTuple):  # a tuple: a data migration makes one per row
    sql: str
    line: int  # where the statement starts in its file
    word: str = ""  # its first word, upper-cased (first_word)


@dataclass
class Header:
    """The comment block before the first statement: what the reviewer reads first."""

    text: str = ""  # the comment lines, directives left out
    has_depends: bool = False
    allowed: frozenset[str] = frozenset()  # rules a `-- lint: allow RULE ...` line waives
    not_transactional: int = 0  # the line of a `-- transactional: false` directive, else 0

    def declares_loss_of(self, table: str) -> bool:
        """A `LOSES` line, and the table named in the header: the loss is intended."""
        named = re.search(rf"(?<![\w\"]){re.escape(table)}(?![\w\"])", self.text, re.I)
        return "LOSES" in self.text and named is not None


def read_header(text: str) -> Header:
    comments, depends, allowed, autocommit = [], False, set(), 0
    for number, line in enumerate(text[:skip_blank(text, 0)].splitlines(), 1):  # the header's
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        if directive := _DIRECTIVE.match(stripped):
            name, value = directive.group(1).lower(), directive.group(2).strip().lower()
            depends = depends or name == "depends"
            if name == "transactional" and value == "false":  # yoyo's spelling: true or false
                autocommit = autocommit or number
        elif allow := _ALLOW.match(stripped):
            allowed.update(r.strip() for r in re.split(r"[\s,]+", allow.group(1)) if r.strip())
        elif stripped.lstrip("-").strip():
            comments.append(stripped.lstrip("-").strip())
    return Header("\n".join(comments), depends, frozenset(allowed), autocommit)


def split(text: str, first=lambda sql: sql, parts=None) -> list[Statement]:
    """The statements of text as yoyo splits it (first: what yoyo makes of the first one:
    migrations.without_directives), each with the line it starts on. parts: the Split
    already made of text (a MigrationFile's, the statements apply runs).

    One loop, its lookups bound once: apply lints every statement of a data migration
    before it runs them, so each costs a regular expression match, a count and a tuple."""
    parts = parts or Split(text)
    READ["split"] += parts.plain_chars + parts.sqlparse_chars
    statements = parts.statements
    if statements and not (head := first(statements[0][1])).strip():
        statements = statements[1:]
    elif statements:
        statements = [(statements[0][0], head), *statements[1:]]
    found, line, last = [], 1, 0
    match, count, add, make = _FIRST.match, text.count, found.append, tuple.__new__
    for pos, sql in statements:
        m = match(text, pos)  # the blanks before its first token, that token if a word
        start, end = m.span(1)
        if start < 0:  # not a word
            start = end = m.end()
        line += count("\n", last, start)
        last = start
        add(make(Statement, (sql, line, text[start:end].upper())))
    READ["lines"] += last
    return found


@dataclass
class SqlFile:
    """One migration file: forward or rollback, its header and statements."""

    path: Path
    kind: str  # "forward" or "rollback"
    migration_id: str
    text: str
    header: Header
    statements: list[Statement] = field(default_factory=list)
    # The file whose header says `-- transactional: false`, so that this one runs statement by
    # statement, each in its own transaction: this file, or (a rollback) its forward file, whose
    # directive governs the migration as in yoyo; None: one transaction for the whole file.
    directive: Path | None = None

    @property
    def transactional(self) -> bool:
        return self.directive is None

    @classmethod
    def forward(cls, m) -> "SqlFile":
        """m's forward file (a MigrationFile) as loaded; its statements are m.statements
        (the same split, made once)."""
        return cls._of(m.path, "forward", m.id, m.text, m.depends, m.split)

    @classmethod
    def rollback(cls, m) -> "SqlFile":
        f = cls._of(m.rollback_path, "rollback", m.id, m.rollback_text, None, m.rollback_split)
        if read_header(m.text).not_transactional:  # the forward file's header: cheap, read alone
            f.directive = Path(m.path)
        return f

    @classmethod
    def _of(cls, path: Path, kind: str, migration_id: str, text: str, depends,
            parts) -> "SqlFile":
        from ..migrations import without_directives
        statements = split(text, lambda sql: without_directives(sql, path, depends), parts)
        header = read_header(text)
        return cls(Path(path), kind, migration_id, text, header, statements,
                   Path(path) if header.not_transactional else None)


# ---- tokens (for the SQLite rules)

_TOKEN = re.compile(r"""
    (?P<blank>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<str>'(?:[^']|'')*'?)
  | (?P<qname>"(?:[^"]|"")*"?|\[[^\]]*\]?|`(?:[^`]|``)*`?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>\d+(?:\.\d*)?)
  | (?P<punct>\S)
""", re.S | re.X)


_FIRST = re.compile(_BLANK.pattern + r"([A-Za-z_][A-Za-z0-9_$]*)?", re.S)  # as in _TOKEN


@dataclass(frozen=True)
class Token:
    kind: str  # word, name (quoted), str, num, punct
    value: str

    @property
    def word(self) -> str:
        """Upper-cased keyword, or '' for anything that cannot be one."""
        return self.value.upper() if self.kind == "word" else ""

    @property
    def is_name(self) -> bool:
        return self.kind in ("word", "name")


def first_word(sql: str) -> str:
    """tokens(sql)[0].word, without reading the rest of the statement."""
    return (_FIRST.match(sql).group(1) or "").upper()


def tokens(sql: str) -> list[Token]:
    READ["tokens"] += len(sql)
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind == "blank":
            continue
        value = m.group()
        if kind == "qname":
            kind, value = "name", _unquote(value)
        out.append(Token(kind, value))
    return out


def _unquote(value: str) -> str:
    if value[0] == "[":
        return value[1:-1]
    quote = value[0]
    return value[1:-1].replace(quote * 2, quote)
