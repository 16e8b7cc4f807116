"""SQLite values as PostgreSQL holds them: checks, conversion, and the bytes both sides hash.

Each target column gets, from its PostgreSQL type (read from the catalog once the
migrations ran):
- `problem_sql`: an SQLite expression that is NULL when the value converts, else a
  text saying why not (malformed GUID or date, over a varchar limit, not a JSON array...);
- `source_sql`: an SQLite expression giving the value as one field of COPY's binary
  format, already converted (uuid as its 16 bytes, dates as microseconds since 2000 in
  UTC, rounded, 0/1 as a boolean byte, JSON arrays as text[]): no text for the server to
  parse, nothing to escape;
- `target_sql`: a PostgreSQL expression giving the same field from the stored value (the
  type's send function).
A row's fields are both what COPY loads and what the proof hashes on each side
(copy_to.py), so a value PostgreSQL stored differently from what was meant shows up as a
digest mismatch.

Dates: EF Core wrote DateTime as `yyyy-MM-dd HH:mm:ss.FFFFFFF` (UTC, up to 7 fractional
digits; `T` for the space and a bare `yyyy-MM-dd` are read too); `timestamp with time
zone` keeps 6, so the 7th rounds half up (a carry may reach the next second).
DateTime.MinValue and MaxValue become -infinity and infinity, as Npgsql writes and reads
them.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import Refused

INT4 = (-2**31, 2**31 - 1)
MIN_VALUE, MAX_VALUE = "0001-01-01 00:00:00", "9999-12-31 23:59:59.9999999"
_HEX = "[0-9A-Fa-f]"
GUID_GLOB = "-".join(_HEX * n for n in (8, 4, 4, 4, 12))
_DIGIT = "[0-9]"
DATE_GLOB = f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2}[ T]{_DIGIT * 2}:{_DIGIT * 2}:{_DIGIT * 2}*"
# Functions registered on the source connection (register()): the two rare types, and
# the date shapes EF Core does not write.
FLOAT_FUNCTION, ARRAY_FUNCTION = "orchestra_pg_float8", "orchestra_pg_text_array"
DATE_FUNCTION = "orchestra_pg_timestamptz"


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
        return (f"{wrong_type('text')} WHEN octet_length({x}) <> 36 OR {x} NOT GLOB "
                f"'{GUID_GLOB}' THEN 'malformed GUID (8-4-4-4-12 hex digits expected)'")
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
                f"THEN 'JSON array holds something other than strings' "
                f"WHEN {ARRAY_FUNCTION}({_text_bytes(x)}) = {_blob(invalid_field(kind))} "
                f"THEN 'JSON array holds a string that is not text (a lone \\uD800-\\uDFFF "
                "escape)'")
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
    return (f"({x} NOT GLOB '{DATE_GLOB}' OR instr(CAST({x} AS BLOB), x'00') > 0"
            f" OR strftime('%Y-%m-%d %H:%M:%S', {head}) IS NOT {head}"
            f" OR NOT ({fraction} = '' OR ({fraction} GLOB '.[0-9]*' AND length({fraction}) <= 8"
            f" AND substr({fraction}, 2) NOT GLOB '*[^0-9]*')))")


def _with_time(x: str) -> str:
    """A date without its time (yyyy-MM-dd, as hand-written rows have) is midnight."""
    return f"(CASE WHEN length({x}) = 10 THEN {x} || ' 00:00:00' ELSE {x} END)"


def _normal_date(x: str) -> str:
    return f"(substr({x}, 1, 10) || ' ' || substr({x}, 12))"


# ---- the source side: each value as one field of COPY's binary format, converted

NULL_FIELD = "x'FFFFFFFF'"  # length -1
WIDTH = {"uuid": 16, "timestamptz": 8, "bool": 1, "int4": 4, "int8": 8, "float8": 8}
TEXT_OID = 25  # text[]'s element type, as array_recv checks it
EPOCH_2000 = 946684800  # PostgreSQL's timestamps count microseconds from 2000-01-01 UTC
MINUS_INFINITY, INFINITY = -2**63, 2**63 - 1  # as timestamptz_send gives them
# EF Core's shape with all 7 fractional digits; the ranges no GLOB can say are checked
# apart (_date_field). Every other shape goes to Python (timestamptz_field).
EF_DATE = ("[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9]"
           ".[0-9][0-9][0-9][0-9][0-9][0-9][0-9]")


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def invalid_field(kind: str) -> bytes:
    """A field the column type's receive function rejects with a data error, so COPY stops
    on it and copy_to names the row (problem_sql): one byte more than a fixed-width type
    reads, a NUL in text (no encoding holds it), an array of -1 dimensions."""
    if kind in WIDTH:
        return _field(bytes(WIDTH[kind] + 1))
    if kind == "text[]":
        return _field(struct.pack(">iii", -1, 0, TEXT_OID))
    return _field(b"\x00")


def _blob(data: bytes) -> str:
    return f"x'{data.hex()}'"


def source_row(cols: list[Column], truncate: bool = False) -> str:
    """A row of COPY's binary format as one SQLite blob: the field count (int16), then each
    field (|| joins blobs byte for byte)."""
    fields = [_blob(len(cols).to_bytes(2, "big")), *(source_sql(c, truncate) for c in cols)]
    return f"CAST({' || '.join(fields)} AS BLOB)"


def source_sql(col: Column, truncate: bool = False) -> str:
    """The column's COPY field (length, then the bytes the type's send function gives),
    as an SQLite blob; never NULL. A value that does not convert becomes invalid_field."""
    x = q(col.name)
    kind = col.kind
    bad = _blob(invalid_field(kind))
    if kind == "uuid":
        value = (f"CASE WHEN {_guid_shape(x)} THEN coalesce(x'00000010' || unhex({x}, '-'), {bad}) "
                 f"ELSE {bad} END")  # unhex: NULL for a character that is not hex
    elif kind == "timestamptz":
        value = _date_field(x)
    elif kind == "bool":
        value = f"CASE {x} WHEN 1 THEN x'0000000101' WHEN 0 THEN x'0000000100' ELSE {bad} END"
    elif kind == "int4":
        value = (f"CASE WHEN typeof({x}) = 'integer' AND {x} BETWEEN {INT4[0]} AND {INT4[1]} "
                 f"THEN unhex(printf('00000004%08x', {x} & 4294967295)) ELSE {bad} END")
    elif kind == "int8":
        value = (f"CASE typeof({x}) WHEN 'integer' THEN unhex(printf('00000008%016x', {x})) "
                 f"ELSE {bad} END")
    elif kind == "float8":
        value = f"CASE WHEN typeof({x}) IN ('integer', 'real') THEN {FLOAT_FUNCTION}({x}) ELSE {bad} END"
    elif kind == "text[]":
        value = f"{ARRAY_FUNCTION}({_text_bytes(x)})"
    else:  # PostgreSQL checks the encoding (a NUL, bytes that are not UTF-8)
        text = x if not (truncate and col.limit) else _cut_sql(x, col.limit)
        value = f"unhex(printf('%08x', octet_length({text}))) || CAST({text} AS BLOB)"
        if col.limit and not truncate:  # over it: else varchar_input would drop trailing spaces
            value = (f"CASE WHEN octet_length({x}) > {col.limit} AND length({x}) > {col.limit} "
                     f"THEN {bad} ELSE {value} END")
    return f"CASE WHEN {x} IS NULL THEN {NULL_FIELD} ELSE {value} END"


def _guid_shape(x: str) -> str:
    """36 bytes, dashes where a GUID has them, and 32 other characters: unhex() then gives
    16 bytes, or NULL for a character that is not hex. (GLOB, length() and unhex() stop at
    a NUL, octet_length() does not; unhex(x, '-') skips any dash between digit pairs, so
    without the count a dash for two digits would make a 15-byte uuid. A GLOB of 32 hex
    classes costs 0.4 us more per value.)"""
    return (f"octet_length({x}) = 36 AND {x} GLOB '????????-????-????-????-????????????' "
            f"AND length(replace({x}, '-', '')) = 32")


def _text_bytes(x: str) -> str:
    """A text value's bytes for a Python converter (apsw would fail decoding text that is
    not UTF-8 before the converter runs); NULL for any other storage class."""
    return f"CASE typeof({x}) WHEN 'text' THEN CAST({x} AS BLOB) END"


def _cut_sql(x: str, limit: int) -> str:
    """The first `limit` characters. Counting characters scans the text; its byte length
    (octet_length, no scan) at most `limit` already proves it fits, as nearly all do. A
    text holding a NUL is sent whole, for PostgreSQL to refuse (length() stops at the NUL,
    so the report of cuts would miss the part cut)."""
    return (f"CASE WHEN octet_length({x}) <= {limit} OR instr(CAST({x} AS BLOB), x'00') > 0 "
            f"THEN {x} ELSE substr({x}, 1, {limit}) END")


def _date_field(x: str) -> str:
    """EF Core's dates by SQLite arithmetic: seconds from unixepoch(), the fraction rounded
    half up to microseconds (a carry is just addition). unixepoch() would quietly move
    2025-02-30 to March and read hour 24, so the day and hour are checked first (a day
    past 28 by date(), which gives back only a real day). Everything else, rare, goes to
    timestamptz_field."""
    micros = (f"(unixepoch(substr({x}, 1, 19)) - {EPOCH_2000}) * 1000000 "
              f"+ (substr({x}, 21) + 5) / 10")
    day = f"substr({x}, 9, 2)"
    ef = (f"{x} GLOB '{EF_DATE}' AND octet_length({x}) = 27 AND {x} BETWEEN '0001' AND '9999' "
          f"AND substr({x}, 6, 2) BETWEEN '01' AND '12' AND substr({x}, 12, 2) < '24' "
          f"AND ({day} BETWEEN '01' AND '28' OR "
          f"date(substr({x}, 1, 10)) = substr({x}, 1, 10))")
    return (f"CASE WHEN {ef} THEN unhex(printf('00000008%016x', {micros})) "
            f"ELSE {DATE_FUNCTION}({_text_bytes(x)}) END")


_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
                   r"(?:[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,7}))?)?")


def timestamptz_field(data: bytes | None) -> bytes:
    """Any date shape problem_sql accepts (yyyy-MM-dd, `T` for the space, 0 to 7 fractional
    digits; `data` is its UTF-8, _text_bytes), as timestamptz_send gives it;
    DateTime.MinValue and MaxValue as -infinity and infinity; else invalid_field."""
    found = _DATE.fullmatch(data.decode("utf-8", "replace")) if data is not None else None
    if not found:
        return invalid_field("timestamptz")
    year, month, day, hour, minute, second, fraction = found.groups()
    normal = f"{year}-{month}-{day} {hour or '00'}:{minute or '00'}:{second or '00'}" + (
        f".{fraction}" if fraction else "")
    if normal in (MIN_VALUE, MAX_VALUE):
        micros = MINUS_INFINITY if normal == MIN_VALUE else INFINITY
    else:
        try:
            moment = datetime(*map(int, (year, month, day, hour or 0, minute or 0, second or 0)))
            moment += timedelta(microseconds=(int((fraction or "").ljust(7, "0")) + 5) // 10)
        except (ValueError, OverflowError):  # no such day or time, year 0, past 9999
            return invalid_field("timestamptz")
        micros = (moment - datetime(2000, 1, 1)) // timedelta(microseconds=1)
    return _field(micros.to_bytes(8, "big", signed=True))


def float8_field(value) -> bytes:
    """A double as float8send gives it: the same 8 bytes, so no rounding on the way."""
    if not isinstance(value, (int, float)):
        return invalid_field("float8")
    return _field(struct.pack(">d", float(value)))


def text_array_field(data: bytes | None) -> bytes:
    """A JSON array of strings (`data`: its UTF-8, _text_bytes) as array_send gives a
    text[]: dimensions, null flag, element type, then each element (else invalid_field)."""
    try:
        values = json.loads(data) if data is not None else None
    except ValueError:  # UnicodeDecodeError too
        values = None
    if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
        return invalid_field("text[]")
    try:
        items = [b"\xff\xff\xff\xff" if v is None else _field(v.encode()) for v in values]
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape
        return invalid_field("text[]")
    if not values:
        return _field(struct.pack(">iii", 0, 0, TEXT_OID))
    head = struct.pack(">iiiii", 1, None in values, TEXT_OID, len(values), 1)
    return _field(head + b"".join(items))


def register(connection) -> None:
    """The converters done in Python, on the source's apsw connection."""
    connection.create_scalar_function(FLOAT_FUNCTION, float8_field, 1, deterministic=True)
    connection.create_scalar_function(ARRAY_FUNCTION, text_array_field, 1, deterministic=True)
    connection.create_scalar_function(DATE_FUNCTION, timestamptz_field, 1, deterministic=True)


# ---- the target side: the same field, from what PostgreSQL stored

SEND = {"uuid": "uuid_send", "timestamptz": "timestamptz_send", "bool": "boolsend",
        "int4": "int4send", "int8": "int8send", "float8": "float8send"}


def target_row(cols: list[Column]) -> str:
    """The same row as source_row, as a PostgreSQL bytea from the stored values."""
    count = f"'\\x{len(cols).to_bytes(2, 'big').hex()}'::bytea"
    return " || ".join([count, *(target_sql(c) for c in cols)])


def target_sql(col: Column) -> str:
    """The field PostgreSQL would send back for the stored value (the session's
    client_encoding is UTF8): the bytes the source sent, if it stored what was meant."""
    x = q(col.name)
    kind = col.kind
    if kind in SEND:
        value = f"'\\x{WIDTH[kind]:08x}'::bytea || {SEND[kind]}({x})"
    elif kind == "text[]":
        value = f"int4send(length(array_send({x}))) || array_send({x})"
    else:
        value = f"int4send(octet_length({x})) || textsend({x})"
    return f"CASE WHEN {x} IS NULL THEN '\\xffffffff'::bytea ELSE {value} END"

