"""A file's statements exactly as yoyo splits them (sqlparse.split), in time linear in the file.

sqlparse reads every token through up to 80 regular expressions in Python: about 2.5 s per MB,
too slow to lint or apply a data migration (both read their statements here). Most statements
are plain: words, numbers, strings, quoted names, comments, commas, parentheses. For those sqlparse ends the statement at the first `;`
outside parentheses and keeps the spaces and `--` comments after it on the same line; a few
regex matches per statement find that end (`_plain_end`). What the plain scan cannot vouch
for (a BEGIN ... END body, GO, $$ quotes, operators sqlparse reads other than SQLite: `+--`,
`||`, `::` ...) is read by sqlparse's own lexer and splitter from that statement's start
(`_sqlparse_end`), so the split is sqlparse's in every case (tests/test_lint_scale.py compares
them; pyproject pins the sqlparse version they were compared with).
"""

from __future__ import annotations

import re
from functools import lru_cache

# What sqlparse lexes into tokens that cannot end or nest a statement, each alternative with
# sqlparse's own pattern where it has one (same flags), so each ends where sqlparse's token does.
# Left out on purpose (the scan stops there): the words BEGIN END DECLARE GO (blocks, GO
# splits), ZONE and WITH' (AT TIME ZONE 'x' is one token to sqlparse), words starting with a
# digit (0x1GO is two) or holding $ or #, and every character sqlparse may glue to a comment or quote.
_PLAIN = re.compile(
    # sqlparse's '(''|\\'|[^'])*', the same match unrolled (no nested repeat to backtrack in)
    r"""(?:'[^'\\]*(?:(?:''|\\'|\\)[^'\\]*)*'"""
    r'''|"[^"\\]*(?:(?:""|\\"|\\)[^"\\]*)*"|(?:""|".*?[^\\]")'''
    r"""|[\s,.=*<>!~]+"""
    r"""|(?!WITH')(?!(?:BEGIN|END|DECLARE|GO|ZONE)\b)[^\W\d]\w*(?![\w$#])"""  # sqlparse: \w[$#\w]*
    r"""|\d+(?!\w)"""
    r"""|(?:--|\# ).*?(?:\r\n|\r|\n|$)"""  # -- comment, to the end of its line
    r"""|/\*[\s\S]*?\*/"""
    r"""|-|\+(?![+/@\#%^&|-])|/(?![*+/@\#%^&|-])"""
    r""")*""", re.IGNORECASE | re.UNICODE)
# After the `;`: sqlparse keeps spaces and `--` comments (not hints: `--+`) in the statement;
# a newline or anything else starts the next one.
_TRAILING = re.compile(r"(?:[^\S\r\n]|(?:--|\# )(?!\+).*?(?:\r\n|\r|\n|$))*",
                       re.IGNORECASE | re.UNICODE)


class Split:
    """Statements of one text, as (offset where the statement starts, blanks before it
    included; its text stripped), and how much of the text each way of reading it took."""

    def __init__(self, text: str):
        self.text = text
        self.plain_chars = 0  # read by the plain scan
        self.sqlparse_chars = 0  # read by sqlparse's lexer
        self._spans = None
        self.statements = list(self._split())

    def _split(self):
        text, pos, n = self.text, 0, len(self.text)
        while pos < n:
            end = _plain_end(text, pos)
            if end is None:
                end = self._sqlparse_end(pos)
                self.sqlparse_chars += end - pos
            else:
                self.plain_chars += end - pos
            body = text[pos:end].strip()
            if body:
                yield pos, body
            pos = end

    def _sqlparse_end(self, pos: int) -> int:
        """Where sqlparse ends the statement starting at pos (its state is new at a start)."""
        from sqlparse.engine.statement_splitter import StatementSplitter
        from sqlparse.keywords import find_delimited_spans
        if self._spans is None:
            self._spans = find_delimited_spans(self.text)
        first = next(StatementSplitter().process(_tokens(self.text, pos, self._spans)))
        return pos + sum(len(t.value) for t in first.tokens)


def split(text: str) -> list[tuple[int, str]]:
    return Split(text).statements


def _plain_end(text: str, pos: int) -> int | None:
    """The end of the statement at pos if it is plain (None if not): after its first `;`
    outside parentheses and what sqlparse keeps with it, or the end of the text."""
    level, n = 0, len(text)
    while True:
        pos = _PLAIN.match(text, pos).end()
        if pos >= n:
            return n
        c = text[pos]
        pos += 1
        if c == "(":
            level += 1
        elif c == ")":
            level -= 1  # as sqlparse counts: never below what it started at
        elif c == ";" and level <= 0:
            return _TRAILING.match(text, pos).end()
        elif c != ";":
            return None


def _tokens(text: str, pos: int, spans):
    """sqlparse's lexer (sqlparse.lexer.Lexer.get_tokens) from pos instead of 0, its regular
    expressions tried in one match: the first alternative that matches is the one its loop
    would take."""
    from sqlparse import tokens
    combined, actions, is_keyword = _lexer()
    n = len(text)
    while pos < n:
        if pos in spans.openers and (resolved := spans.resolve(pos)) is not None:
            end, ttype = resolved
            yield ttype, text[pos:end]
            pos = end
            continue
        m = combined.match(text, pos)
        if m is None:
            yield tokens.Error, text[pos]
            pos += 1
            continue
        action = actions[m.lastgroup]
        yield (action, m.group()) if action is not None else is_keyword(m.group())
        pos = max(m.end(), pos + 1)


@lru_cache(maxsize=1)
def _lexer():
    """sqlparse's expressions as one (each its own named group, in its order), what each
    yields (None: a word looked up in the keywords), and the keyword lookup."""
    from sqlparse import keywords, tokens
    from sqlparse.lexer import Lexer
    lexer = Lexer.get_default_instance()
    parts, actions = [], {}
    for i, (rexmatch, action) in enumerate(lexer._SQL_REGEX):
        parts.append(f"(?P<t{i}>{rexmatch.__self__.pattern})")
        actions[f"t{i}"] = action if isinstance(action, tokens._TokenType) else None
        assert action is keywords.PROCESS_AS_KEYWORD or actions[f"t{i}"] is not None
    return re.compile("|".join(parts), re.IGNORECASE | re.UNICODE), actions, lexer.is_keyword
