"""The schema model every engine's snapshot fills in (engines/), and the difference of two.

Compared: tables (WITHOUT ROWID, STRICT), columns in order (type, NOT NULL,
default, primary key position), indexes (name, uniqueness, key columns with
order and collation, partial or not), foreign keys (columns and actions), and
views and triggers by their SQL. Not compared: the CREATE text itself, so a
reformatted but equivalent statement is no difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field



@dataclass(frozen=True)
class Column:
    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int
    hidden: int


@dataclass(frozen=True)
class Index:
    name: str
    unique: bool
    origin: str  # c: CREATE INDEX, u: UNIQUE constraint, pk: PRIMARY KEY
    partial: bool
    columns: tuple[tuple[str | None, bool, str], ...]  # (name, desc, collation)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str | None, ...]
    on_update: str
    on_delete: str
    match: str

    def describe(self, table: str) -> str:
        return (f"{table}({', '.join(self.columns)}) -> {self.parent}"
                f"({', '.join(c or '<pk>' for c in self.parent_columns)}) ON DELETE {self.on_delete}")


@dataclass
class Table:
    name: str
    without_rowid: bool = False
    strict: bool = False
    columns: list[Column] = field(default_factory=list)
    indexes: dict[str, Index] = field(default_factory=dict)
    foreign_keys: frozenset[ForeignKey] = frozenset()


@dataclass
class Schema:
    tables: dict[str, Table] = field(default_factory=dict)
    others: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # (kind, sql, table)

    def restricted_to(self, tables) -> "Schema":
        """Only these tables, and the triggers and views on them."""
        keep = set(tables)
        return Schema(
            {n: t for n, t in self.tables.items() if n in keep},
            {n: o for n, o in self.others.items() if o[2] in keep or n in keep},
        )


MISSING, EXTRA, DIFFERS = "missing", "extra", "differs"


@dataclass(frozen=True)
class Difference:
    """One structural difference; `render` words it from either side."""

    kind: str  # table, column, index, foreign key, view, trigger
    name: str  # "Tasks", "Tasks.Title", "IX_Tasks_Status on Tasks"
    state: str  # MISSING (only in expected), EXTRA (only in actual), DIFFERS
    what: str = ""  # for DIFFERS: the attribute ("type"), or the whole finding ("column order differs")
    # for DIFFERS, the two values where they can be shown
    expected: str | None = None
    found: str | None = None


@dataclass(frozen=True)
class Sides:
    """How a report names the two schemas compared."""

    missing: str = "missing"
    extra: str = "not expected (extra)"
    expected: str = "expected"
    found: str = "found"


EXPECTED_VS_FOUND = Sides()


def render(d: Difference, sides: Sides = EXPECTED_VS_FOUND) -> str:
    head = f"{d.kind} {d.name}"
    if d.state == MISSING:  # a changed foreign key shows as missing + extra: it has no name to pair on
        return f"{head}: {sides.missing}" + (" or different" if d.kind == "foreign key" else "")
    if d.state == EXTRA:
        return f"{head}: {sides.extra}"
    if d.expected is None:
        return f"{head}: {d.what}"
    values = f"{d.expected} {sides.expected}, {d.found} {sides.found}"
    return f"{head}: {d.what} {values}" if d.what else f"{head}: differs ({values})"


def changed(before: Schema, after: Schema) -> set[str]:
    """The tables, views and triggers defined differently in the two (made, dropped or
    altered: what one migration changes), for restricted_to."""
    def differing(old: dict, new: dict) -> set[str]:
        return {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}
    return differing(before.tables, after.tables) | differing(before.others, after.others)


def diff(expected: Schema, actual: Schema) -> list[str]:
    """Every difference, one readable line each; empty when structurally equal."""
    return [render(d) for d in differences(expected, actual)]


def differences(expected: Schema, actual: Schema) -> list[Difference]:
    """Every difference, tables first, in a fixed order; empty when structurally equal."""
    out = _named("table", expected.tables, actual.tables)
    for name in sorted(expected.tables.keys() & actual.tables.keys()):
        out += _table_diff(expected.tables[name], actual.tables[name])
    for name in sorted(expected.others.keys() | actual.others.keys()):
        e, a = expected.others.get(name), actual.others.get(name)
        if e != a:
            state = MISSING if a is None else EXTRA if e is None else DIFFERS
            out.append(Difference((e or a)[0], name, state, "differs" if state == DIFFERS else ""))
    return out


def _named(kind: str, expected: dict, actual: dict, suffix: str = "") -> list[Difference]:
    """What is only on one side, by name (dicts keep the order they were read in)."""
    return ([Difference(kind, n + suffix, MISSING) for n in expected if n not in actual]
            + [Difference(kind, n + suffix, EXTRA) for n in actual if n not in expected])


def _table_diff(e: Table, a: Table) -> list[Difference]:
    out = []
    if (e.without_rowid, e.strict) != (a.without_rowid, a.strict):
        out.append(Difference("table", e.name, DIFFERS, "WITHOUT ROWID/STRICT differ"))
    out += _column_diff(e, a)
    on = f" on {e.name}"
    out += _named("index", dict(sorted(e.indexes.items())), dict(sorted(a.indexes.items())), on)
    for name in sorted(e.indexes.keys() & a.indexes.keys()):
        if e.indexes[name] != a.indexes[name]:
            out.append(Difference("index", name + on, DIFFERS, "",
                                  _index_text(e.indexes[name]), _index_text(a.indexes[name])))
    for fk in sorted(e.foreign_keys - a.foreign_keys, key=repr):
        out.append(Difference("foreign key", fk.describe(e.name), MISSING))
    for fk in sorted(a.foreign_keys - e.foreign_keys, key=repr):
        out.append(Difference("foreign key", fk.describe(a.name), EXTRA))
    return out


def _column_diff(e: Table, a: Table) -> list[Difference]:
    e_cols, a_cols = {c.name: c for c in e.columns}, {c.name: c for c in a.columns}
    out = _named("column", {f"{e.name}.{n}": c for n, c in e_cols.items()},
                 {f"{a.name}.{n}": c for n, c in a_cols.items()})
    for name in [n for n in e_cols if n in a_cols]:
        ec, ac = e_cols[name], a_cols[name]
        for attr in ("type", "notnull", "default", "pk", "hidden"):
            if getattr(ec, attr) != getattr(ac, attr):
                out.append(Difference("column", f"{e.name}.{name}", DIFFERS, attr,
                                      repr(getattr(ec, attr)), repr(getattr(ac, attr))))
    shared = [c for c in e_cols if c in a_cols]
    if not out and shared != [c for c in a_cols if c in e_cols]:
        out.append(Difference("table", e.name, DIFFERS, "column order differs"))
    return out


def _index_text(ix: Index) -> str:
    cols = ", ".join(f"{c}{' DESC' if d else ''}" for c, d, _ in ix.columns)
    return f"{'UNIQUE ' if ix.unique else ''}({cols}){' partial' if ix.partial else ''}"
