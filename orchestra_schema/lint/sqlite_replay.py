"""SQLite rules that need the schema: each migration is run, forward, rollback,
forward again, on an in-memory database built from the migrations before it.

round-trip: the rollback must give back the schema before, forward again the
same schema as the first time. rebuild-loses and implicit-delete read the
schema before a file runs, which only the replay knows.
"""

from __future__ import annotations

import apsw

from ..database import Database
from ..schema import Schema, Table, diff, snapshot
from .findings import ERROR, WARNING, Finding, finding, first_line
from .sqlite_rules import dropped_table, is_not_transactional, rebuilt_tables
from .sqltext import SqlFile, tokens

_CASCADING = {"CASCADE", "SET NULL", "SET DEFAULT"}


def check(migrations, files: dict[tuple[str, str], SqlFile]) -> list[Finding]:
    """Replay every migration up to the last one linted; report on the linted ones."""
    linted = [i for i, m in enumerate(migrations) if (m.id, "forward") in files]
    out: list[Finding] = []
    with Database.in_memory() as db:
        for m in migrations[: max(linted, default=-1) + 1]:
            forward, rollback = files.get((m.id, "forward")), files.get((m.id, "rollback"))
            if forward is None:  # only a scratch step towards the migrations linted
                if _run(db, m.statements) is not None:
                    break
                continue
            problems = _round_trip(db, forward, rollback)
            out += problems
            if any(p.rule == "round-trip" for p in problems):
                break  # the scratch database no longer matches the files; later ones would mislead
    return out


def _round_trip(db: Database, forward: SqlFile, rollback: SqlFile | None) -> list[Finding]:
    before = snapshot(db)
    if (failed := _run_file(db, forward, "applying it")) is not None:
        return [failed]
    after = snapshot(db)
    out = _rebuild_loses(forward, before, after) + _implicit_delete(forward, before, after)
    if rollback is None:
        return out
    if (failed := _run_file(db, rollback, "rolling it back")) is not None:
        return out + [failed]
    back = snapshot(db)
    out += _implicit_delete(rollback, after, back)
    if (left := diff(before, back)):
        out.append(finding(rollback, first_line(rollback), "round-trip", ERROR,
                           f"rolling back does not give back the schema before "
                           f"{forward.migration_id}: {_say(left)}; make the rollback undo "
                           f"exactly what {forward.path.name} does"))
        return out  # applying again on what was left over would only fail on it
    if (failed := _run_file(db, forward, "applying it again after its rollback")) is not None:
        return out + [failed]
    if (changed := diff(after, snapshot(db))):
        out.append(finding(forward, first_line(forward), "round-trip", ERROR,
                           f"applied again after its rollback it gives another schema: "
                           f"{_say(changed)}; make the rollback undo exactly what it does"))
    return out


def _say(lines: list[str]) -> str:
    """schema.diff's words, as a reviewer of a rollback reads them."""
    return "; ".join(line.replace("not expected (extra)", "left over") for line in lines)


def _run(db: Database, statements) -> tuple[int, str] | None:
    """Run statements in one transaction, as a migration runs; (index, error) on failure."""
    db.execute("BEGIN")
    for i, sql in enumerate(statements):
        if is_not_transactional(tokens(sql)):
            continue  # its own rule reports it; here it would only end the replay early
        try:
            db.execute(sql)
        except apsw.Error as err:
            db.execute("ROLLBACK")
            return i, str(err)
    db.execute("COMMIT")
    return None


def _run_file(db: Database, f: SqlFile, doing: str) -> Finding | None:
    failed = _run(db, [st.sql for st in f.statements])
    if failed is None:
        return None
    i, error = failed
    return finding(f, f.statements[i].line, "round-trip", ERROR,
                   f"fails when {doing} on a database built from the migrations before it: "
                   f"{error}; fix the statement")


def _table(schema: Schema, name: str) -> Table | None:
    return next((t for n, t in schema.tables.items() if n.lower() == name.lower()), None)


def _drops(f: SqlFile):
    for st in f.statements:
        if (table := dropped_table(tokens(st.sql))):
            yield st, table


def _rebuild_loses(f: SqlFile, before: Schema, after: Schema) -> list[Finding]:
    """A table dropped and replaced by a renamed copy must get its indexes and triggers back."""
    out = []
    rebuilt = rebuilt_tables(f.statements)
    for st, name in _drops(f):
        old, new = _table(before, name), _table(after, name)
        if name.lower() not in rebuilt or old is None or new is None:
            continue
        shapes = {(ix.unique, ix.partial, ix.columns) for ix in new.indexes.values()}
        lost = [f"index {ix.name}" for ix in old.indexes.values()
                if ix.origin == "c" and ix.name not in new.indexes
                and (ix.unique, ix.partial, ix.columns) not in shapes]
        lost += [f"trigger {n}" for n, (kind, _, tbl) in sorted(before.others.items())
                 if kind == "trigger" and tbl.lower() == name.lower() and n not in after.others]
        if lost:
            out.append(finding(f, st.line, "rebuild-loses", ERROR,
                               f"the rebuild of {old.name} loses {', '.join(lost)} (dropped with "
                               f"the old table); create each again on the new table"))
    return out


def _implicit_delete(f: SqlFile, before: Schema, after: Schema) -> list[Finding]:
    """DROP TABLE deletes the rows first: ON DELETE CASCADE / SET NULL reach other tables."""
    out = []
    dropped = {name.lower() for _, name in _drops(f)}
    for st, name in _drops(f):
        children = sorted(
            f"{t.name} (ON DELETE {fk.on_delete})"
            for t in before.tables.values() if t.name.lower() not in dropped
            for fk in t.foreign_keys
            if fk.parent.lower() == name.lower() and fk.on_delete in _CASCADING)
        if not children:
            continue
        if _table(after, name) is not None:  # rebuilt: safe only with foreign keys off
            out.append(finding(
                f, st.line, "implicit-delete", WARNING,
                f"DROP TABLE {name} deletes its rows first; with foreign keys on (stock yoyo, "
                f"the sqlite3 shell) that reaches {', '.join(children)}; orchestra-schema runs "
                "migrations with foreign keys off, so run this file only with orchestra-schema"))
        else:
            out.append(finding(
                f, st.line, "implicit-delete", ERROR,
                f"DROP TABLE {name} deletes its rows first, which reaches {', '.join(children)} "
                "through their foreign keys (or leaves them dangling with foreign keys off); "
                "drop or rebuild those tables in this file too, or keep the table"))
    return out
