"""Reading sql/: paired ID.sql / ID.rollback.sql files, checksums, order, plans.

Each file is split into statements as yoyo splits them (sqlparse's split, found by
sqlsplit in time linear in the file), when they are first needed:
`status` reads only ids, directives and checksums, and never imports yoyo.
Directives are read here with yoyo's rules, and checked against yoyo's own
reading when it splits the file. Dependencies are resolved here by id, in the
order yoyo's topological sort gives, not through yoyo's process-wide
Migration registry, so two sql dirs loaded in one process cannot see each
other's migrations.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path

from .errors import DatabaseUnavailable, UsageError
from .files.paths import read_regular, require_regular

_SQL_FILE = ("a migration file", "remove it from the sql directory")  # what a FIFO there is not

ROLLBACK_SUFFIX = ".rollback.sql"


@dataclass(frozen=True)
class MigrationFile:
    id: str
    path: Path
    rollback_path: Path | None
    depends: tuple[str, ...]
    comment: str
    text: str = field(repr=False, compare=False)  # the bytes the checksums were taken of
    rollback_text: str | None = field(repr=False, compare=False)
    forward_sha256: str = ""
    rollback_sha256: str | None = None
    # yoyo's `-- transactional: false`: run statement by statement, each recorded as done,
    # outside one transaction (PostgreSQL's CREATE INDEX CONCURRENTLY); the forward file's
    # directive holds for the rollback file too, as in yoyo (it is per migration), and a
    # rollback file may say it for itself (lint reads it the same way)
    transactional: bool = True
    rollback_transactional: bool = True

    def in_steps(self, direction: str) -> bool:
        """Does this direction ("apply" or "rollback") run one statement at a time?"""
        return not (self.transactional if direction == "apply" else self.rollback_transactional)

    def side(self, direction: str) -> tuple[tuple[str, ...], Path | None]:
        """The statements a direction ("apply" or "rollback") runs, and their file."""
        if direction == "apply":
            return self.statements, self.path
        return self.rollback_statements, self.rollback_path

    @property
    def has_rollback(self) -> bool:
        return self.rollback_path is not None

    @cached_property
    def split(self):
        """The forward file split as yoyo splits it (a sqlsplit.Split: offsets and texts)."""
        return _split(self.text)

    @cached_property
    def rollback_split(self):
        return _split(self.rollback_text or "")

    @cached_property
    def statements(self) -> tuple[str, ...]:
        return _statements(self.split, self.path, self.depends)

    @cached_property
    def rollback_statements(self) -> tuple[str, ...]:
        if self.rollback_text is None:
            return ()
        return _statements(self.rollback_split, self.rollback_path, None)


def _split(text: str):
    from .sqlsplit import Split
    return Split(text)


def _statements(split, path: Path,
                depends: tuple[str, ...] | None) -> tuple[str, ...]:
    """yoyo's statements of a file read at load (not read again: it may have changed since):
    sqlparse's split, found in linear time; the first one without its directives."""
    statements = [sql for _, sql in split.statements]
    if statements:
        statements[0] = without_directives(statements[0], path, depends)
    return tuple(s for s in statements if s.strip())


def without_directives(first: str, path: Path, depends: tuple[str, ...] | None) -> str:
    """yoyo's first statement of a file: its leading comment and directives taken off."""
    from yoyo.migrations import parse_metadata_from_sql_comments

    directives, _, first = parse_metadata_from_sql_comments(first)
    if depends is not None and _depends(directives) != depends:  # cannot happen; never guess
        raise UsageError(f"{path}: its -- depends: line reads differently to yoyo "
                         f"({_depends(directives)} vs {depends}); write it on one line")
    return first


_DIRECTIVE = re.compile(r"^\s*--\s*(transactional|depends)\s*:\s*(.*)$")
_COMMENT_OR_EMPTY = re.compile(r"^(\s*|\s*--.*)$")


def _leading_comment(text: str) -> tuple[dict[str, str], str]:
    """Directives and comment before the first SQL line, by yoyo's rules
    (yoyo.migrations.parse_metadata_from_sql_comments; a test compares them)."""
    ending = re.search(r"\n|\r\n|\r", text.lstrip() + "\n").group(0)
    directives, comments = {}, []
    for line in text.lstrip().split(ending):
        match = _DIRECTIVE.match(line)
        if match:
            key, value = match.groups()
            directives[key] = f"{directives[key]} {value}" if key in directives else value
        elif _COMMENT_OR_EMPTY.match(line):
            comments.append(line.strip().lstrip("--").strip())
        else:
            break
    return directives, textwrap.dedent(ending.join(comments))


def _transactional(directives: dict[str, str], path: Path) -> bool:
    """yoyo's reading of `-- transactional:` (true or false, any case); anything else it
    would fail on, so it is refused here."""
    value = directives.get("transactional", "true").strip().lower()
    if value not in ("true", "false"):
        raise UsageError(f"{path}: `-- transactional: {value}`: write true or false")
    return value == "true"


def _depends(directives: dict[str, str]) -> tuple[str, ...]:
    return tuple(directives.get("depends", "").split())


ENGINES = ("sqlite", "postgresql")


def installed_sql_dir(engine: str = "sqlite") -> bool:
    """Is the default sql dir the copy installed with the package (not a checkout's sql/)?"""
    return default_sql_dir(engine) == Path(__file__).resolve().parent / "sql" / engine


def default_sql_dir(engine: str = "sqlite") -> Path:
    """The SQL shipped with the package for one engine: sql/sqlite or sql/postgresql.

    pyproject installs the repository's sql/ as orchestra_schema/sql; in a
    source checkout (or an editable install) it is the sibling sql/.
    """
    here = Path(__file__).resolve().parent
    installed, checkout = here / "sql" / engine, here.parent / "sql" / engine
    return installed if installed.is_dir() else checkout


def load(sql_dir: Path | None = None) -> list[MigrationFile]:
    """All migrations in sql_dir, dependencies before dependants."""
    sql_dir = Path(sql_dir) if sql_dir is not None else default_sql_dir()
    if not sql_dir.is_dir():
        raise UsageError(f"{sql_dir}: sql directory not found; check --sql-dir")
    named = sorted(p for p in sql_dir.iterdir() if p.suffix == ".sql")
    for p in named:  # a FIFO would block the read, a directory would quietly drop a migration
        require_regular(p, *_SQL_FILE)
    forwards = [p for p in named if not p.name.endswith(ROLLBACK_SUFFIX)]
    _check_orphan_rollbacks(sql_dir, {p.stem for p in forwards})
    _check_case_duplicates(forwards)
    if not forwards:
        raise UsageError(f"{sql_dir}: no migrations (ID.sql files) found; check --sql-dir")
    migrations = {m.id: m for m in map(_read_pair, forwards)}
    return _ordered(migrations)


def _check_orphan_rollbacks(sql_dir: Path, ids: set[str]) -> None:
    for p in sorted(sql_dir.glob("*" + ROLLBACK_SUFFIX)):
        if p.is_file() and p.name[: -len(ROLLBACK_SUFFIX)] not in ids:
            raise UsageError(
                f"{p}: rollback file without a forward file "
                f"{p.name[: -len(ROLLBACK_SUFFIX)]}.sql; add it or remove the rollback"
            )


def _check_case_duplicates(forwards: list[Path]) -> None:
    """One id, one migration: ..._Dup and ..._DUP would be two here and one on a
    case-insensitive file system (or to a reader), and the second fails to apply."""
    seen: dict[str, Path] = {}
    for p in forwards:
        other = seen.setdefault(p.stem.casefold(), p)
        if other is not p:
            raise UsageError(f"{other} and {p}: migration ids differ only in case; "
                             "rename one (ids must be unique without regard to case)")


def _read_pair(path: Path) -> MigrationFile:
    rollback = path.with_name(path.stem + ROLLBACK_SUFFIX)
    rollback = rollback if rollback.is_file() else None
    try:
        data = read_regular(path, *_SQL_FILE)
        rollback_data = read_regular(rollback, *_SQL_FILE) if rollback else None
        text = data.decode("utf-8")
        rollback_text = rollback_data.decode("utf-8") if rollback_data is not None else None
    except (UnicodeDecodeError, OSError) as err:
        raise UsageError(f"{path}: cannot read migration ({err}); files must be UTF-8 text")
    directives, comment = _leading_comment(text)
    transactional = _transactional(directives, path)
    rollback_directives = _leading_comment(rollback_text)[0] if rollback_text else {}
    return MigrationFile(
        id=path.stem,
        path=path,
        rollback_path=rollback,
        depends=_depends(directives),
        transactional=transactional,
        rollback_transactional=transactional and _transactional(rollback_directives, rollback),
        comment=comment.strip(),
        text=text,
        rollback_text=rollback_text,
        forward_sha256=hashlib.sha256(data).hexdigest(),
        rollback_sha256=hashlib.sha256(rollback_data).hexdigest() if rollback_data is not None else None,
    )


def _ordered(migrations: dict[str, MigrationFile]) -> list[MigrationFile]:
    """Dependencies first; among the migrations ready at each step, the first by id
    (the order yoyo's topological_sort gives; a test compares them)."""
    for m in migrations.values():
        for dep in m.depends:
            if dep not in migrations:
                raise UsageError(
                    f"{m.path}: depends on unknown migration {dep!r}; fix its -- depends: line"
                )
    remaining, done, order = sorted(migrations), set(), []
    while remaining:
        ready = next((i for i in remaining if done.issuperset(migrations[i].depends)), None)
        if ready is None:
            raise UsageError(f"circular dependencies among migrations {', '.join(remaining)}")
        remaining.remove(ready)
        done.add(ready)
        order.append(migrations[ready])
    return order


def ancestors(migration_id: str, by_id: dict[str, MigrationFile]) -> set[str]:
    """migration_id and every migration it depends on, transitively."""
    seen, todo = set(), [migration_id]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(by_id[current].depends)
    return seen


def resolve_target(target: str | None, migrations: list[MigrationFile]) -> set[str]:
    """The ids that must be applied at --to target (None: all, '0': none)."""
    by_id = {m.id: m for m in migrations}
    if target is None:
        return set(by_id)
    if target == "0":
        return set()
    if target not in by_id:
        known = ", ".join(by_id) or "none"
        raise UsageError(f"unknown migration {target!r} for --to; known: {known}, or 0")
    return ancestors(target, by_id)


def dependents(migration_id: str, migrations) -> set[str]:
    """migration_id and every migration that depends on it, transitively."""
    if migration_id not in {m.id for m in migrations}:
        known = ", ".join(m.id for m in migrations) or "none"
        raise UsageError(f"unknown migration {migration_id!r} for --only; known: {known}")
    found = {migration_id}
    for m in migrations:  # dependencies come first, so one pass sees every chain
        if found & set(m.depends):
            found.add(m.id)
    return found


def plan_apply(migrations, applied: set[str], target: str | None) -> list[MigrationFile]:
    wanted = resolve_target(target, migrations)
    return [m for m in migrations if m.id in wanted and m.id not in applied]


def plan_rollback(migrations, applied: set[str], target: str) -> list[MigrationFile]:
    keep = resolve_target(target, migrations)
    return [m for m in reversed(migrations) if m.id in applied and m.id not in keep]


def plan_rollback_only(migrations, applied: set[str], migration_id: str) -> list[MigrationFile]:
    """Roll back migration_id and what depends on it (yoyo's rollback -r), newest first."""
    drop = dependents(migration_id, migrations)
    return [m for m in reversed(migrations) if m.id in applied and m.id in drop]


def dry_run_sql(plan: list[MigrationFile], direction: str, step_note=None) -> str:
    """The exact statements, in order, under a header per migration; a `-- transactional:
    false` one's each under what it will hold (step_note(statement), the engine's words)."""
    parts = []
    for m in plan:
        statements, source = m.side(direction)
        parts.append(f"-- {direction} {m.id} ({source})")
        steps = m.in_steps(direction)
        if steps:
            parts.append("-- `-- transactional: false`: one statement at a time, each recorded "
                         "as done when it ends; a run stopped part way is resumed by the next")
        for number, s in enumerate(statements, 1):
            if steps and step_note:
                parts.append(f"-- statement {number} of {len(statements)}: {step_note(s)}")
            parts.append(s.strip() + ("" if s.strip().endswith(";") else ";"))
        parts.append("")
    return "\n".join(parts)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

NEW_TEMPLATE = """\
-- {id}: TODO what this migration creates or changes, for the reviewing DBA.
-- Rollback ({id}.rollback.sql): TODO what a rollback drops and what rows it loses.
{depends}
"""

NEW_ROLLBACK_TEMPLATE = """\
-- Rolls back {id}: TODO what this drops.
-- LOSES: TODO which rows are lost.

"""


def new_pair(sql_dir: Path, name: str, now: datetime | None = None) -> tuple[Path, Path]:
    """Create ID.sql and ID.rollback.sql with the next id, depending on the heads."""
    if not _NAME.match(name):
        raise UsageError(f"migration name {name!r}: use letters, digits, '_' and '-' only")
    existing = load(sql_dir) if any(Path(sql_dir).glob("*.sql")) else []
    new_id = f"{_next_stamp(existing, now)}_{name}"
    depended_on = {d for m in existing for d in m.depends}
    heads = [m.id for m in existing if m.id not in depended_on]
    depends = f"-- depends: {' '.join(heads)}\n" if heads else ""
    forward = Path(sql_dir) / f"{new_id}.sql"
    rollback = Path(sql_dir) / f"{new_id}{ROLLBACK_SUFFIX}"
    try:  # both files or neither; never overwrite one
        with open(forward, "x", encoding="utf-8") as f:
            f.write(NEW_TEMPLATE.format(id=new_id, depends=depends))
        try:
            with open(rollback, "x", encoding="utf-8") as f:
                f.write(NEW_ROLLBACK_TEMPLATE.format(id=new_id))
        except BaseException:
            forward.unlink()
            raise
    except OSError as err:
        raise DatabaseUnavailable(f"{sql_dir}: cannot write {new_id}'s files ({err.strerror}); "
                                  "nothing was created; check the directory's permissions")
    return forward, rollback


def _next_stamp(existing: list[MigrationFile], now: datetime | None) -> str:
    """UTC yyyyMMddHHmmss like EF Core's ids, always after the newest existing one."""
    stamp = (now or datetime.now(timezone.utc)).replace(microsecond=0, tzinfo=None)
    for m in existing:
        with contextlib.suppress(ValueError):  # ids that do not start with a time are not ordered by it
            stamp = max(stamp, datetime.strptime(m.id[:14], "%Y%m%d%H%M%S") + timedelta(seconds=1))
    return stamp.strftime("%Y%m%d%H%M%S")
