"""SQLite values as PostgreSQL holds them: checks, conversion, and one canonical text.

Each target column gets, from its PostgreSQL type (read from the catalog once the
migrations ran):
- `problem_sql`: an SQLite expression that is NULL when the value converts, else a
  text saying why not (malformed GUID or date, over a varchar limit, not a JSON array...);
- `source_sql`: an SQLite expression giving the value as one field of COPY's text
  format, already converted (uuid lowercased, dates rounded to microseconds in UTC,
  0/1 as t/f, JSON arrays as array literals) and escaped for COPY;
- `target_sql`: a PostgreSQL expression giving the same field from the stored value.
The row's fields joined by tabs are both the line COPY loads and the text the proof
hashes on each side (copy_to.py), so a value PostgreSQL stored differently from what
was meant shows up as a digest mismatch. Doubles are the one exception: they travel as
Python's shortest text and are hashed as their 8 bytes (`digest_sql`), since the two
sides' shortest texts differ in rare ties.

Dates: EF Core wrote DateTime as `yyyy-MM-dd HH:mm:ss.FFFFFFF` (UTC, up to 7 fractional
digits; `T` for the space and a bare `yyyy-MM-dd` are read too); `timestamp with time zone` keeps 6, so the 7th rounds half up (a carry may reach
the next second). DateTime.MinValue and MaxValue become -infinity and infinity, as
Npgsql writes and reads them.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

from .errors import Refused

INT4 = (-2**31, 2**31 - 1)
MIN_VALUE, MAX_VALUE = "0001-01-01 00:00:00", "9999-12-31 23:59:59.9999999"
_HEX = "[0-9A-Fa-f]"
GUID_GLOB = "-".join(_HEX * n for n in (8, 4, 4, 4, 12))
_DIGIT = "[0-9]"
DATE_GLOB = f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2}[ T]{_DIGIT * 2}:{_DIGIT * 2}:{_DIGIT * 2}*"
# Functions registered on the source connection (register()) for the two rare types.
FLOAT_FUNCTION, ARRAY_FUNCTION = "orchestra_pg_float8", "orchestra_pg_text_array"
BITS_FUNCTION = "orchestra_float8_bits"


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # format_type(): uuid, character varying(4000), timestamp with time zone ...
    notnull: bool

    @property
    def limit(self) -> int | None:
        found = re.fullmatch(r"character varying\((\d+)\)", self.pg_type)
        return int(found.group(1)) if found else None

    @property
    def kind(self) -> str:
        if self.limit is not None:
            return "varchar"
        if self.pg_type not in KINDS:
            raise Refused(f"column {self.name}: no conversion from SQLite to {self.pg_type}; "
                          "nothing changed; copy-to knows the types of the Orchestra schema only")
        return KINDS[self.pg_type]


KINDS = {"uuid": "uuid", "timestamp with time zone": "timestamptz", "boolean": "bool",
         "integer": "int4", "bigint": "int8", "double precision": "float8", "text": "text",
         "text[]": "text[]"}


def q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- checks (SQLite): NULL when the value converts, else why it does not

def problem_sql(col: Column, truncate: bool = False) -> str:
    x = q(col.name)
    null = f"WHEN {x} IS NULL THEN {_lit('NULL in a NOT NULL column') if col.notnull else 'NULL'}"
    return f"CASE {null} {_type_problem(col, x, truncate)} ELSE NULL END"


def _type_problem(col: Column, x: str, truncate: bool) -> str:
    kind = col.kind
    wrong_type = (lambda *ok: f"WHEN typeof({x}) NOT IN ({', '.join(map(_lit, ok))}) "
                              f"THEN 'holds ' || typeof({x}) || ', not {'/'.join(ok)}'")
    has_nul = f"WHEN instr(CAST({x} AS BLOB), x'00') > 0 THEN 'text holds a NUL character'"
    if kind == "uuid":
        return (f"{wrong_type('text')} WHEN {x} NOT GLOB '{GUID_GLOB}' "
                f"THEN 'malformed GUID (8-4-4-4-12 hex digits expected)'")
    if kind == "timestamptz":
        return f"{wrong_type('text')} {_date_problem(_with_time(x))}"
    if kind == "bool":
        return f"{wrong_type('integer')} WHEN {x} NOT IN (0, 1) THEN 'boolean must be 0 or 1'"
    if kind == "int4":
        return (f"{wrong_type('integer')} WHEN {x} NOT BETWEEN {INT4[0]} AND {INT4[1]} "
                f"THEN 'out of range for integer ({INT4[0]}..{INT4[1]})'")
    if kind == "int8":
        return wrong_type("integer")
    if kind == "float8":
        return wrong_type("real", "integer")
    if kind == "text[]":
        return (f"{wrong_type('text')} {has_nul} WHEN NOT json_valid({x}) OR "
                f"json_type({x}) <> 'array' THEN 'not a JSON array' "
                f"WHEN EXISTS (SELECT 1 FROM json_each({x}) WHERE type NOT IN ('text', 'null') "
                f"OR instr(CAST(value AS BLOB), x'00') > 0) "
                f"THEN 'JSON array holds something other than strings'")
    over = ("" if truncate or col.limit is None else
            f"WHEN length({x}) > {col.limit} THEN length({x}) || ' characters, "
            f"over the limit of {col.pg_type}'")
    return f"{wrong_type('text')} {has_nul} {over}"


def _date_problem(x: str) -> str:
    return (f"WHEN {_malformed_date(x)} THEN 'malformed date (yyyy-MM-dd HH:mm:ss with up to "
            "7 fractional digits expected)'"
            f" WHEN substr({x}, 1, 4) = '0000' THEN 'year 0 does not exist in PostgreSQL'"
            f" WHEN {_normal_date(x)} <> {_lit(MAX_VALUE)} AND {_normal_date(x)} >= "
            f"'9999-12-31 23:59:59.9999995' THEN 'rounds past 9999-12-31 23:59:59.999999'")


def _malformed_date(x: str) -> str:
    head = f"substr({x}, 1, 10) || ' ' || substr({x}, 12, 8)"
    fraction = f"substr({x}, 20)"
    return (f"({x} NOT GLOB '{DATE_GLOB}' OR strftime('%Y-%m-%d %H:%M:%S', {head}) IS NOT {head}"
            f" OR NOT ({fraction} = '' OR ({fraction} GLOB '.[0-9]*' AND length({fraction}) <= 8"
            f" AND substr({fraction}, 2) NOT GLOB '*[^0-9]*')))")


def _with_time(x: str) -> str:
    """A date without its time (yyyy-MM-dd, as hand-written rows have) is midnight."""
    return f"(CASE WHEN length({x}) = 10 THEN {x} || ' 00:00:00' ELSE {x} END)"


def _normal_date(x: str) -> str:
    return f"(substr({x}, 1, 10) || ' ' || substr({x}, 12))"


# ---- the source side: one COPY text field per value, converted

def source_sql(col: Column, truncate: bool = False) -> str:
    """The COPY field. A value that does not convert is sent as `rejected:value`, which
    PostgreSQL's input function rejects, so COPY stops on it (copy_to names the row with
    problem_sql)."""
    x = q(col.name)
    kind = col.kind
    if kind == "uuid":
        value = f"CASE WHEN length({x}) = 36 THEN lower({x}) ELSE {REJECT} || {x} END"
    elif kind == "timestamptz":
        value = _date_sql(x)
    elif kind == "bool":
        value = f"CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' ELSE {REJECT} || {x} END"
    elif kind in ("int4", "int8"):
        value = f"CASE typeof({x}) WHEN 'integer' THEN CAST({x} AS TEXT) ELSE {REJECT} || {x} END"
    elif kind == "float8":
        value = f"{FLOAT_FUNCTION}({x})"
    elif kind == "text[]":
        value = _escape_sqlite(f"{ARRAY_FUNCTION}({x})")
    else:
        cut = x if not (truncate and col.limit) else _cut_sql(x, col.limit)
        value = _escape_sqlite(cut, scan=x)  # the uncut value holds whatever its cut holds
    return f"CASE WHEN {x} IS NULL THEN '\\N' ELSE {value} END"


def _cut_sql(x: str, limit: int) -> str:
    """The first `limit` characters. Counting characters scans the text; its byte length
    (octet_length, no scan) at most `limit` already proves it fits, as nearly all do."""
    return f"CASE WHEN octet_length({x}) <= {limit} THEN {x} ELSE substr({x}, 1, {limit}) END"


REJECT = "'rejected:'"  # no input function of these types reads it (tests check)
_D = "[0-9]"
# EF Core's own shape, 7 fractional digits: rounding needs no date arithmetic unless the
# first six are all 9 (then the slow path carries into the next second).
EF_SHAPE = f"{_D * 4}-{_D * 2}-{_D * 2} {_D * 2}:{_D * 2}:{_D * 2}.{_D * 6}"


def _date_sql(x: str) -> str:
    """PostgreSQL's text of the timestamptz in UTC: 'yyyy-mm-dd hh:mm:ss[.ffffff]+00', the
    fraction rounded half up to 6 digits, its trailing zeros dropped."""
    down = f"rtrim(rtrim(substr({x}, 1, 26), '0'), '.') || '+00'"
    up = (f"rtrim(rtrim(substr({x}, 1, 20) || printf('%06d', substr({x}, 21, 6) + 1), '0'), '.')"
          " || '+00'")
    other = _any_date_sql(_with_time(x), x)
    # One GLOB for EF's shape, then the 7th digit picks the way (two GLOBs, one per way,
    # cost 0.1 s more per 400k dates).
    return (f"CASE WHEN {x} GLOB '{EF_SHAPE}[0-9]' THEN CASE WHEN substr({x}, 27) < '5' "
            f"THEN {down} WHEN substr({x}, 21, 6) <> '999999' THEN {up} ELSE {other} END "
            f"ELSE {other} END")


def _any_date_sql(x: str, raw: str) -> str:
    """Every other shape: checked (a bad one is rejected), carried, or +-infinity."""
    head = f"(substr({x}, 1, 10) || ' ' || substr({x}, 12, 8))"
    micros = f"((CAST(substr(substr({x}, 21) || '0000000', 1, 7) AS INTEGER) + 5) / 10)"
    carried = f"strftime('%Y-%m-%d %H:%M:%S', {head}, '+1 second')"
    rounded = (f"CASE WHEN {micros} = 1000000 THEN {carried} ELSE {head} || "
               f"rtrim(rtrim('.' || printf('%06d', {micros}), '0'), '.') END")
    return (f"CASE WHEN {_malformed_date(x)} THEN {REJECT} || {raw} "
            f"WHEN {_normal_date(x)} = {_lit(MIN_VALUE)} THEN '-infinity' "
            f"WHEN {_normal_date(x)} = {_lit(MAX_VALUE)} THEN 'infinity' "
            f"ELSE coalesce({rounded} || '+00', {REJECT} || {raw}) END")


def digest_sql(col: Column, truncate: bool = False) -> str:
    """The field as the proof hashes it: the COPY field, but a double's bits for float8."""
    if col.kind != "float8":
        return source_sql(col, truncate)
    x = q(col.name)
    return f"CASE WHEN {x} IS NULL THEN '\\N' ELSE {BITS_FUNCTION}({x}) END"


def _escape_sqlite(x: str, scan: str | None = None) -> str:
    """COPY text format: backslash, tab, newline and carriage return escaped. Four instr()
    scans first, since most values hold none of them (instr is a byte loop: over twice as
    fast as one GLOB '*[...]*', whose per-character class match cost chat text 0.25 s per
    400k rows; four replace() calls would each copy the value). `scan`: a simpler
    expression to scan whose text holds x's (the value before its cut: the cut's CASE is
    then not evaluated four more times, 0.09 s less per 400k chat rows)."""
    escaped = x
    for char, code in (("\\\\", 92), ("\\t", 9), ("\\n", 10), ("\\r", 13)):
        escaped = f"replace({escaped}, char({code}), '{char}')"
    found = " OR ".join(f"instr({scan or x}, char({code}))" for code in (92, 9, 10, 13))
    return f"CASE WHEN {found} THEN {escaped} ELSE {x} END"


def float_text(value) -> str:
    """A double as text PostgreSQL reads back to the same double: Python's shortest repr
    (anything else is sent as `rejected:value`, for COPY to reject)."""
    if not isinstance(value, (int, float)):
        return f"rejected:{value}"
    return repr(float(value))


def float_bits(value) -> str:
    """The double's 8 bytes in hex, as encode(float8send(x), 'hex') gives them: the proof
    compares floats by their bits (the two sides' shortest texts differ in rare ties)."""
    return struct.pack(">d", float(value)).hex() if isinstance(value, (int, float)) else ""


def pg_text_array(text) -> str:
    """A JSON array of strings as PostgreSQL's text[] output: {a,"b c",NULL}
    (anything else is sent as `rejected:value`, for COPY to reject)."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        values = None
    if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
        return f"rejected:{text}"
    return "{" + ",".join(_array_element(v) for v in values) + "}"


def _array_element(value) -> str:
    if value is None:
        return "NULL"
    if value == "" or value.upper() == "NULL" or re.search(r'[{},"\\\s]', value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def register(connection) -> None:
    """The converters done in Python, on the source's apsw connection."""
    connection.create_scalar_function(FLOAT_FUNCTION, float_text, 1, deterministic=True)
    connection.create_scalar_function(BITS_FUNCTION, float_bits, 1, deterministic=True)
    connection.create_scalar_function(ARRAY_FUNCTION, pg_text_array, 1, deterministic=True)


# ---- the target side: the same field, from what PostgreSQL stored

def target_sql(col: Column) -> str:
    x = q(col.name)
    kind = col.kind
    if kind == "bool":
        value = f"CASE WHEN {x} THEN 't' ELSE 'f' END"
    elif kind in ("varchar", "text", "text[]"):
        value = _escape_pg(f"{x}::text")
    elif kind == "float8":
        value = f"encode(float8send({x}), 'hex')"
    else:  # uuid, timestamptz (session in UTC), integers: their text output
        value = f"{x}::text"
    return f"CASE WHEN {x} IS NULL THEN '\\N' ELSE {value} END"


def _escape_pg(x: str) -> str:
    for char, raw in (("\\\\", "'\\'"), ("\\t", "E'\\t'"), ("\\n", "E'\\n'"), ("\\r", "E'\\r'")):
        x = f"replace({x}, {raw}, '{char}')"
    return x
