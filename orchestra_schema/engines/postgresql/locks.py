"""Which lock a statement holds on PostgreSQL while it runs, in words, for the plan that
--dry-run prints of a `-- transactional: false` migration (PostgreSQL's "Explicit Locking"
table). Read from the statement's text alone: no server is needed."""

from __future__ import annotations

import re

from .driver import _OUTSIDE, _QUALIFIED, LOCK_TIMEOUT_MS, _strip_comments, _unquote

_ON = re.compile(rf"\bON\s+(?:ONLY\s+)?({_QUALIFIED})", re.IGNORECASE)
_TABLE = re.compile(rf"\bTABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?:ONLY\s+)?({_QUALIFIED})",
                    re.IGNORECASE)
_GOES_ON = "the app's reads and writes go on"
# (pattern on the statement's start, the lock, what it means for the app)
_LOCKS = [
    (r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY", "SHARE UPDATE EXCLUSIVE", _GOES_ON +
     "; it waits for the transactions older than it"),
    (r"(?:DROP\s+INDEX|REINDEX\b.*)\s+CONCURRENTLY", "SHARE UPDATE EXCLUSIVE", _GOES_ON),
    (r"CREATE\s+(?:UNIQUE\s+)?INDEX", "SHARE", "every INSERT, UPDATE and DELETE waits for "
     "the whole build"),
    (r"VACUUM\s+FULL", "ACCESS EXCLUSIVE", "every read and write waits"),
    (r"VACUUM|ANALYZE", "SHARE UPDATE EXCLUSIVE", _GOES_ON),
    (r"ALTER\s+TYPE", "none on tables", _GOES_ON),
    (r"CREATE\s+TABLE", "none on existing tables", _GOES_ON),
    (r"INSERT|UPDATE|DELETE", "ROW EXCLUSIVE", _GOES_ON + " (other writes to the same rows wait)"),
    (r"DROP\s+INDEX|DROP\s+TABLE|ALTER\s+TABLE|TRUNCATE|REINDEX",
     "ACCESS EXCLUSIVE (most forms)", "every read and write waits until it ends"),
]


def lock_taken(statement: str) -> str:
    text = _strip_comments(statement).strip()
    where = _on_table(text)
    how = ("outside a transaction (PostgreSQL refuses it inside one)" if _OUTSIDE.match(text)
           else "in a transaction of its own")
    for pattern, lock, meaning in _LOCKS:
        if re.match(pattern, text, re.IGNORECASE | re.DOTALL):
            return (f"{how}; lock {lock}{where}: {meaning}; it waits for that lock at most "
                    f"{LOCK_TIMEOUT_MS} ms at a time (lock_timeout), tried again until --timeout")
    return f"{how}; see PostgreSQL's table of the locks each command takes"


def _on_table(text: str) -> str:
    match = _ON.search(text) if re.match(r"CREATE", text, re.I) else _TABLE.search(text)
    return f" on {_unquote(match.group(1))}" if match else ""
