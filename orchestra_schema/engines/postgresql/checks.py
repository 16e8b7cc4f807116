"""verify's integrity and foreign-key checks on PostgreSQL, for the managed tables only.

Integrity is amcheck's: verify_heapam per table, bt_index_check per B-tree index
(--full: with heapallindexed, every heap tuple found in each index). amcheck is an
extension whose CREATE needs a superuser. Where it is installed it is used; where it
is not, it is created inside a transaction that is always rolled back (so verify
still changes nothing); where this user cannot create it, the check is "n/a" and
says why and what a superuser runs. Both checks take ACCESS SHARE locks only, the
lock of a plain SELECT: the app's reads and writes go on.

Foreign keys: PostgreSQL checks them at every statement, so a violation can only be
in a constraint added NOT VALID (never checked against the rows already there) or one
whose triggers were disabled. Those are named, with the rows that break them.
"""

from __future__ import annotations

from ..base import Integrity

MAX_LINES = 10


def integrity(conn, schema: str, tables, full: bool = False) -> Integrity:
    """INVALID indexes, then amcheck on `tables` of `schema`; conn is left as it was found."""
    method = "amcheck heapallindexed" if full else "amcheck"
    invalid = _invalid_indexes(conn, schema, sorted(tables))
    found = _amchecked(conn, schema, tables, full, method)
    found.problems[:0] = invalid
    return found


_INVALID = """
SELECT i.relname, t.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s AND t.relname = ANY(%s) AND NOT x.indisvalid ORDER BY t.relname, i.relname"""


def _invalid_indexes(conn, schema: str, tables: list[str]) -> list[str]:
    """Indexes a CREATE INDEX CONCURRENTLY left unfinished: writes maintain them, no query
    uses them, and the catalog lists them as if they were there."""
    return [f"index {index} on {table} is INVALID (a CREATE INDEX CONCURRENTLY that did not "
            f"finish): queries do not use it; run `orchestra-schema apply` again if a "
            f"migration builds it (it is dropped and built again), else DROP INDEX "
            f"CONCURRENTLY and create it again"
            for index, table in conn.execute(_INVALID, (schema, tables)).fetchall()]


def _amchecked(conn, schema: str, tables, full: bool, method: str) -> Integrity:
    import psycopg
    from psycopg import errors
    with conn.transaction(force_rollback=True):
        installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone()
        if not installed:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION amcheck")
            except (errors.InsufficientPrivilege, errors.UndefinedFile,
                    errors.FeatureNotSupported) as err:
                return Integrity("n/a", note=_unavailable(err))
        try:
            return Integrity(method, _amcheck(conn, schema, sorted(tables), full))
        except errors.InsufficientPrivilege as err:
            return Integrity("n/a", note=f"amcheck is installed but this user may not run it "
                             f"({_first_line(err)}); a superuser can GRANT EXECUTE ON FUNCTION "
                             "verify_heapam, bt_index_check TO this user")
        except psycopg.errors.UndefinedFunction as err:
            return Integrity("n/a", note=f"amcheck lacks a function ({_first_line(err)}); "
                             "verify_heapam needs amcheck 1.3 (PostgreSQL 14+)")


def _unavailable(err) -> str:
    from psycopg import errors
    if isinstance(err, errors.InsufficientPrivilege):
        return ("amcheck is not installed and this user cannot create it (needs a superuser): "
                "a superuser runs CREATE EXTENSION amcheck, then GRANT EXECUTE ON FUNCTION "
                "verify_heapam, bt_index_check TO this user")
    return (f"amcheck is not available on this server ({_first_line(err)}); install "
            "postgresql-contrib")


_HEAP = """SELECT blkno, offnum, attnum, msg FROM {}.verify_heapam(%s::regclass) LIMIT {}"""
_INDEXES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(i.relname), t.relname
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = i.relam
WHERE n.nspname = %s AND t.relname = ANY(%s) AND am.amname = 'btree' AND x.indisvalid
ORDER BY t.relname, i.relname"""


def _amcheck(conn, schema: str, tables: list[str], full: bool) -> list[str]:
    from psycopg import errors, sql
    ext = conn.execute("SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n "
                       "ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'").fetchone()[0]
    problems = []
    for table in tables:
        name = sql.Identifier(schema, table).as_string(conn)
        rows = conn.execute(_HEAP.format(ext, MAX_LINES + 1), (name,)).fetchall()
        problems += [f"table {table}: block {b}, item {o}"
                     f"{f', column {a}' if a is not None else ''}: {msg}"
                     for b, o, a, msg in rows[:MAX_LINES]]
    for index, table in conn.execute(_INDEXES, (schema, tables)).fetchall():
        try:
            with conn.transaction():
                conn.execute(f"SELECT {ext}.bt_index_check(%s::regclass, %s)", (index, full))
        except (errors.IndexCorrupted, errors.DataCorrupted) as err:
            problems.append(f"index {index} on {table}: {_first_line(err)}; REINDEX it")
    return problems


_FOREIGN_KEYS = """
SELECT c.oid, r.relname, c.conname, c.convalidated,
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgconstraint = c.oid AND t.tgenabled = 'D')
FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
JOIN pg_namespace n ON n.oid = r.relnamespace
WHERE c.contype = 'f' AND n.nspname = %s AND r.relname = ANY(%s)
ORDER BY r.relname, c.conname"""

# The rows of a foreign key's table whose key has no parent row (MATCH SIMPLE: a key
# with a NULL in it references nothing).
_ORPHANS = """
SELECT format('SELECT count(*) FROM %%I.%%I c WHERE %%s AND NOT EXISTS (SELECT 1 FROM %%I.%%I p '
              'WHERE %%s)', cn.nspname, cr.relname,
              string_agg(format('c.%%I IS NOT NULL', ca.attname), ' AND '),
              pn.nspname, pr.relname,
              string_agg(format('p.%%I = c.%%I', pa.attname, ca.attname), ' AND '))
FROM pg_constraint k
JOIN pg_class cr ON cr.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cr.relnamespace
JOIN pg_class pr ON pr.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pr.relnamespace
CROSS JOIN LATERAL unnest(k.conkey, k.confkey) AS u(c, p)
JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.c
JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.p
WHERE k.oid = %s
GROUP BY cn.nspname, cr.relname, pn.nspname, pr.relname"""


def foreign_key_problems(conn, schema: str, tables) -> list[str]:
    """Foreign keys of `tables` that PostgreSQL has not checked against every row."""
    problems = []
    for oid, table, name, validated, disabled in conn.execute(
            _FOREIGN_KEYS, (schema, sorted(tables))).fetchall():
        if validated and not disabled:
            continue
        why = ("is NOT VALID: rows older than the constraint were never checked" if not validated
               else "has its triggers disabled: rows written meanwhile were never checked")
        query = conn.execute(_ORPHANS, (oid,)).fetchone()[0]
        orphans = conn.execute(query).fetchone()[0]
        fix = (f"fix the rows, then ALTER TABLE ... VALIDATE CONSTRAINT {name}" if not validated
               else "fix the rows, then ALTER TABLE ... ENABLE TRIGGER ALL")
        problems.append(f"{table}: foreign key {name} {why}; {orphans} row(s) reference "
                        f"missing rows; {fix}")
    return problems


def _first_line(err) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
