"""SQL text as a reviewer sees it: where statements start, the review header, tokens.

Positions are character offsets; lines count from 1. The tokenizer is the
SQLite rules' parser: comments dropped, strings kept apart from names, quoted
names ("x", [x], `x`) unquoted, so `DROP TABLE "Chat"` and `drop table chat`
read alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_BLANK = re.compile(r"(?:\s+|--[^\n]*|/\*.*?(?:\*/|\Z))*", re.S)
_DIRECTIVE = re.compile(r"^--\s*(depends|transactional)\s*:", re.I)
_ALLOW = re.compile(r"^--\s*lint\s*:\s*allow\s+(.*)$", re.I)


def skip_blank(text: str, pos: int) -> int:
    """The first position at or after pos that is not whitespace or a comment."""
    return _BLANK.match(text, pos).end()


def line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # where the statement starts in its file


@dataclass
class Header:
    """The comment block before the first statement: what the reviewer reads first."""

    text: str = ""  # the comment lines, directives left out
    has_depends: bool = False
    allowed: frozenset[str] = frozenset()  # rules a `-- lint: allow RULE ...` line waives

    def declares_loss_of(self, table: str) -> bool:
        """A `LOSES` line, and the table named in the header: the loss is intended."""
        named = re.search(rf"(?<![\w\"]){re.escape(table)}(?![\w\"])", self.text, re.I)
        return "LOSES" in self.text and named is not None


def read_header(text: str) -> Header:
    comments, depends, allowed = [], False, set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        if _DIRECTIVE.match(stripped):
            depends = depends or stripped.lower().lstrip("- ").startswith("depends")
        elif allow := _ALLOW.match(stripped):
            allowed.update(r.strip() for r in re.split(r"[\s,]+", allow.group(1)) if r.strip())
        elif stripped.lstrip("-").strip():
            comments.append(stripped.lstrip("-").strip())
    return Header("\n".join(comments), depends, frozenset(allowed))


def locate(text: str, statements) -> list[Statement]:
    """Each statement (as yoyo split it) with the line it starts on in text."""
    found, cursor = [], 0
    for sql in statements:
        body = sql.strip()
        pos, length = text.find(body, cursor), len(body)
        if pos < 0:  # yoyo took the header off the first statement: find its first line
            body = next((ln.strip() for ln in body.splitlines() if ln.strip()), "")
            pos, length = text.find(body, cursor), len(body)
        if pos < 0:
            pos, length = cursor, 0
        cursor = pos + length
        found.append(Statement(sql, line_at(text, skip_blank(text, pos))))
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

    @classmethod
    def read(cls, path: Path, kind: str, migration_id: str, statements=()) -> "SqlFile":
        text = Path(path).read_text(encoding="utf-8")
        return cls(Path(path), kind, migration_id, text, read_header(text), locate(text, statements))


# ---- tokens (for the SQLite rules)

_TOKEN = re.compile(r"""
    (?P<blank>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<str>'(?:[^']|'')*'?)
  | (?P<qname>"(?:[^"]|"")*"?|\[[^\]]*\]?|`(?:[^`]|``)*`?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>\d+(?:\.\d*)?)
  | (?P<punct>\S)
""", re.S | re.X)


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


def tokens(sql: str) -> list[Token]:
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
