"""PostgreSQL rules, read with PostgreSQL's own parser (pglast): locks a
statement takes on a table the running app uses, and the data-loss statements.

A table created earlier in the same file is new and empty: nothing waits on it,
so the lock rules leave it alone. Every other table is taken to be live.
Each message says which lock the statement takes and the safer pattern.

A file whose header says `-- transactional: false` (or whose forward file's does) runs
statement by statement in autocommit: there CONCURRENTLY, VACUUM and a new enum value used
later in the file are fine, and non-transactional-mix warns of what should stay atomic.
"""

from __future__ import annotations

import pglast
from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, ObjectType

from .findings import ERROR, WARNING, Finding, finding, loss
from .sqltext import Lines, SqlFile, line_at, skip_blank

# Functions whose default makes ADD COLUMN write every row (volatile); now() and
# constants are stored once in the catalog since PostgreSQL 11.
VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
            "uuid_generate_v4", "clock_timestamp", "timeofday", "nextval", "txid_current",
            "random_normal", "setseed"}
SERIAL = {"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"}

_CONSTRAINT_KINDS = {ConstrType.CONSTR_FOREIGN: "FOREIGN KEY", ConstrType.CONSTR_CHECK: "CHECK",
                     ConstrType.CONSTR_PRIMARY: "PRIMARY KEY", ConstrType.CONSTR_UNIQUE: "UNIQUE"}
_LATER = ("in a later migration `ALTER TABLE {t} VALIDATE CONSTRAINT ...` (SHARE UPDATE "
          "EXCLUSIVE: reads and writes go on while it scans)")
_OWN = "in a migration of its own whose header says `-- transactional: false`"
_ADD_DIRECTIVE = ("add `-- transactional: false` to the file's header (the migration then runs "
                  "statement by statement)")
_DML = {ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE",
        ast.MergeStmt: "MERGE", ast.TruncateStmt: "TRUNCATE"}


class _File:
    """The statements of one file, with what the file created so far."""

    def __init__(self, f: SqlFile):
        self.f, self.created, self.out = f, set(), []
        self.new_values: dict[str, tuple[str, int]] = {}  # enum value added -> (type, line)
        self.changed: dict[str, int] = {}  # tables and types changed -> first line (mix)
        self.indexes: dict[str, str] = {}  # index created in the file -> its table
        self.mixed = False  # non-transactional-mix reported: once a file

    def live(self, relation: ast.RangeVar | None) -> bool:
        return relation is not None and relation.relname not in self.created

    def add(self, line: int, rule: str, message: str, level: str = ERROR) -> None:
        self.out.append(finding(self.f, line, rule, level, message))

    def needs_autocommit(self, line: int, what: str) -> None:
        """not-transactional: what cannot run in a transaction block; fine in a directive file."""
        if self.f.transactional:
            self.add(line, "not-transactional", f"{what} cannot run inside the transaction "
                     f"orchestra-schema runs each migration in; {_ADD_DIRECTIVE}")


def check_file(f: SqlFile) -> list[Finding]:
    state = _File(f)
    try:
        statements = pglast.parse_sql(f.text)
    except pglast.parser.ParseError as err:
        where = err.args[1] if len(err.args) > 1 else 0
        return [finding(f, line_at(f.text, where), "syntax", ERROR,
                        f"PostgreSQL cannot parse this file: {err.args[0]}; fix the statement")]
    lines = Lines(f.text)
    for raw in statements:
        line = lines.at(skip_blank(f.text, raw.stmt_location))
        _statement(state, raw.stmt, line)
    return state.out


def _statement(s: _File, stmt, line: int) -> None:
    if s.new_values:
        _uses_new_value(s, stmt, line)
    if isinstance(stmt, ast.CreateStmt):
        s.created.add(stmt.relation.relname)
    elif isinstance(stmt, ast.CreateEnumStmt):
        s.created.add(stmt.typeName[-1].sval)
    elif isinstance(stmt, ast.IndexStmt):
        _index(s, stmt, line)
    elif isinstance(stmt, ast.AlterTableStmt):
        for cmd in stmt.cmds or ():
            _alter(s, stmt.relation, cmd, line)
    elif isinstance(stmt, ast.RenameStmt):
        _rename(s, stmt, line)
    elif isinstance(stmt, ast.TransactionStmt):
        word = stmt.kind.name.removeprefix("TRANS_STMT_").replace("_", " ")
        s.add(line, "not-transactional",
              f"{word} begins or ends a transaction, which orchestra-schema does for each "
              f"migration (or, with `-- transactional: false`, for each statement); remove it")
    elif isinstance(stmt, ast.VacuumStmt) and stmt.is_vacuumcmd:  # ANALYZE runs in one
        s.needs_autocommit(line, "VACUUM")
    elif isinstance(stmt, ast.DropStmt) and stmt.concurrent:
        s.needs_autocommit(line, f"DROP INDEX CONCURRENTLY {stmt.objects[0][-1].sval}")
    elif isinstance(stmt, ast.ReindexStmt) and any(
            p.defname == "concurrently" for p in stmt.params or ()):
        name = stmt.relation.relname if stmt.relation else stmt.name
        s.needs_autocommit(line, f"REINDEX {stmt.kind.name.removeprefix('REINDEX_OBJECT_')} "
                                 f"CONCURRENTLY {name}")
    elif isinstance(stmt, ast.AlterEnumStmt) and stmt.oldVal is None:
        _enum_value(s, stmt, line)
    if not s.f.transactional and not s.mixed:
        _mix(s, stmt, line)
    _losses(s, stmt, line)


def _index(s: _File, stmt: ast.IndexStmt, line: int) -> None:
    table, name = stmt.relation.relname, stmt.idxname or "(unnamed)"
    s.indexes[name] = table
    if stmt.concurrent:
        s.needs_autocommit(line, f"CREATE INDEX CONCURRENTLY {name}")
    elif s.live(stmt.relation):
        s.add(line, "index-blocks-writes",
              f"CREATE INDEX {name} on {table} takes a SHARE lock on {table} for the whole build: "
              f"every INSERT, UPDATE and DELETE on {table} waits; build it with "
              f"`CREATE INDEX CONCURRENTLY` {_OWN}")


def _enum_value(s: _File, stmt: ast.AlterEnumStmt, line: int) -> None:
    """ADD VALUE runs in a transaction (PostgreSQL 12+), but the value cannot be used before
    that transaction commits: reported where a later statement of the file uses it."""
    enum = stmt.typeName[-1].sval
    if s.f.transactional and enum not in s.created:  # a type created in the same one is fine
        s.new_values[stmt.newVal] = (enum, line)


def _uses_new_value(s: _File, stmt, line: int) -> None:
    for node in _walk(stmt):
        value = node.val.sval if isinstance(node, ast.A_Const) and isinstance(
            node.val, ast.String) else None
        if value in s.new_values:
            enum, added = s.new_values.pop(value)
            s.add(added, "not-transactional",
                  f"ALTER TYPE {enum} ADD VALUE '{value}' commits only with the migration, "
                  f"and line {line} uses the value before that (unsafe use of new value); use "
                  f"it in a later migration, or {_ADD_DIRECTIVE}")
            if not s.new_values:
                return


def _mix(s: _File, stmt, line: int) -> None:
    """non-transactional-mix: rows changed, or a second table or type changed, in a file run
    statement by statement; a CONCURRENTLY index and the old one it replaces stay quiet."""
    if type(stmt) in _DML:
        why = f"{_DML[type(stmt)]} changes rows"
    else:
        for name in _changes(s, stmt):
            s.changed.setdefault(name, line)
        if len(s.changed) < 2:
            return
        (first, at), (second, _) = list(s.changed.items())[:2]
        why = f"changing {second} here after {first} at line {at}"
    s.mixed = True
    by = "its header" if s.f.directive == s.f.path else s.f.directive.name
    s.add(line, "non-transactional-mix",
          f"{why} in a file run statement by statement (`-- transactional: false` in {by}): a "
          f"kill between statements leaves some done and some not; keep CONCURRENTLY statements "
          f"in a migration of their own", WARNING)


def _changes(s: _File, stmt) -> list[str]:
    """The tables and types a statement changes (an index's table when the file made it)."""
    if isinstance(stmt, ast.DropStmt):
        names = [o[-1].sval for o in stmt.objects if isinstance(o, tuple)]
        if stmt.removeType == ObjectType.OBJECT_INDEX:
            return [s.indexes[n] for n in names if n in s.indexes]
        return names
    if isinstance(stmt, (ast.AlterEnumStmt, ast.CreateEnumStmt)):
        return [stmt.typeName[-1].sval]
    if isinstance(stmt, ast.ReindexStmt) and stmt.kind.name == "REINDEX_OBJECT_INDEX":
        return [s.indexes[stmt.relation.relname]] if stmt.relation.relname in s.indexes else []
    if isinstance(stmt, ast.VacuumStmt):
        return []
    relation = getattr(stmt, "relation", None) or getattr(stmt, "view", None)
    return [relation.relname] if isinstance(relation, ast.RangeVar) else []


def _alter(s: _File, relation: ast.RangeVar, cmd: ast.AlterTableCmd, line: int) -> None:
    if cmd.subtype == AT.AT_DetachPartition and cmd.def_.concurrent:
        s.needs_autocommit(line, "DETACH PARTITION ... CONCURRENTLY")
    if not s.live(relation):
        return
    table, column = relation.relname, cmd.name
    if cmd.subtype == AT.AT_AlterColumnType:
        s.add(line, "rewrite",
              f"ALTER COLUMN {column} TYPE takes an ACCESS EXCLUSIVE lock on {table} and rewrites "
              f"it and its indexes (unless the change is binary-coercible, such as a longer "
              f"varchar): reads and writes wait; add a new column, backfill it in batches, switch "
              f"the app, then drop the old one")
    elif cmd.subtype == AT.AT_AddColumn and (why := _rewriting_column(cmd.def_)):
        s.add(line, "rewrite",
              f"ADD COLUMN {cmd.def_.colname} {why} rewrites every row of {table} under an ACCESS "
              f"EXCLUSIVE lock: reads and writes wait; add the column without that default, set "
              f"the default after, and backfill existing rows in batches")
    elif cmd.subtype == AT.AT_AddConstraint:
        _constraint(s, table, cmd.def_, line)
    elif cmd.subtype == AT.AT_SetNotNull:
        s.add(line, "validate-scan",
              f"SET NOT NULL on {table}.{column} scans every row under an ACCESS EXCLUSIVE lock: "
              f"reads and writes wait; add `CHECK ({column} IS NOT NULL) NOT VALID`, validate it "
              f"in a later migration, then SET NOT NULL uses it and skips the scan")


def _rewriting_column(col: ast.ColumnDef) -> str | None:
    type_name = col.typeName.names[-1].sval if col.typeName else ""
    if type_name in SERIAL:
        return f"of type {type_name} (a nextval() default)"
    for c in col.constraints or ():
        if c.contype == ConstrType.CONSTR_IDENTITY:
            return "GENERATED AS IDENTITY"
        if c.contype == ConstrType.CONSTR_GENERATED:
            return "GENERATED ... STORED"
        if c.contype == ConstrType.CONSTR_DEFAULT and (f := _volatile_call(c.raw_expr)):
            return f"with the volatile default {f}()"
    return None


def _volatile_call(expr) -> str | None:
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall) and node.funcname[-1].sval in VOLATILE:
            return node.funcname[-1].sval
    return None


def _walk(node):
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))
    elif isinstance(node, tuple):
        for item in node:
            yield from _walk(item)


def _constraint(s: _File, table: str, c: ast.Constraint, line: int) -> None:
    name = c.conname or "(unnamed)"
    kind = _CONSTRAINT_KINDS.get(c.contype)
    if c.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and not c.skip_validation:
        lock = ("a SHARE ROW EXCLUSIVE lock on both tables: writes to both wait"
                if c.contype == ConstrType.CONSTR_FOREIGN
                else "an ACCESS EXCLUSIVE lock: reads and writes wait")
        s.add(line, "validate-scan",
              f"ADD CONSTRAINT {name} {kind} checks every row of {table} under {lock}; add it "
              f"with NOT VALID here and run {_LATER.format(t=table)}")
    elif c.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE) and not c.indexname:
        s.add(line, "index-blocks-writes",
              f"ADD CONSTRAINT {name} {kind} builds an index on {table} under an ACCESS EXCLUSIVE lock: "
              f"reads and writes wait; build a unique index with `CREATE UNIQUE INDEX "
              f"CONCURRENTLY` first ({_OWN.removeprefix('in ')}), then "
              f"`ADD CONSTRAINT {name} ... USING INDEX`")


def _rename(s: _File, stmt: ast.RenameStmt, line: int) -> None:
    if stmt.renameType == ObjectType.OBJECT_TABLE and s.live(stmt.relation):
        what = f"table {stmt.relation.relname}"
    elif stmt.renameType == ObjectType.OBJECT_COLUMN and s.live(stmt.relation):
        what = f"column {stmt.relation.relname}.{stmt.subname}"
    else:
        return
    s.add(line, "rename",
          f"renaming {what} to {stmt.newname} takes an ACCESS EXCLUSIVE lock, and from the commit "
          f"on every query of the running app by the old name fails; add the new name alongside "
          f"(a new column kept in step, or a view), switch the app, drop the old name later")


def _losses(s: _File, stmt, line: int) -> None:
    for table, what in _lost(stmt):
        if (x := loss(s.f, line, table, what)):
            s.out.append(x)


def _lost(stmt) -> list[tuple[str, str]]:
    """(table, how the statement loses its data) for each table it does."""
    every = "deletes every row of it"
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
        return [(n[-1].sval, f"DROP TABLE {n[-1].sval} {every}") for n in stmt.objects]
    if isinstance(stmt, ast.TruncateStmt):
        return [(r.relname, f"TRUNCATE {r.relname} {every}") for r in stmt.relations]
    table = getattr(getattr(stmt, "relation", None), "relname", None)
    if isinstance(stmt, ast.AlterTableStmt):
        return [(table, f"DROP COLUMN {cmd.name} deletes its value in every row of {table}")
                for cmd in stmt.cmds or () if cmd.subtype == AT.AT_DropColumn]
    if isinstance(stmt, ast.DeleteStmt) and stmt.whereClause is None:
        return [(table, f"DELETE without WHERE deletes every row of {table}")]
    if isinstance(stmt, ast.UpdateStmt) and stmt.whereClause is None:
        return [(table, f"UPDATE without WHERE overwrites every row of {table}")]
    return []
