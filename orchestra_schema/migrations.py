"""Reading sql/: paired ID.sql / ID.rollback.sql files, checksums, order, plans.

yoyo parses each file (statements, `-- depends:` directives, leading comment)
and orders them (its topological sort). Dependencies are resolved here by id,
not through yoyo's process-wide Migration registry, so two sql dirs loaded in
one process cannot see each other's migrations.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from yoyo.migrations import read_sql_migration
from yoyo.topologicalsort import CycleError, topological_sort

from .errors import DatabaseUnavailable, UsageError

ROLLBACK_SUFFIX = ".rollback.sql"


@dataclass(frozen=True)
class MigrationFile:
    id: str
    path: Path
    rollback_path: Path | None
    depends: tuple[str, ...]
    comment: str
    statements: tuple[str, ...] = field(repr=False)
    rollback_statements: tuple[str, ...] = field(repr=False)
    forward_sha256: str = ""
    rollback_sha256: str | None = None

    @property
    def has_rollback(self) -> bool:
        return self.rollback_path is not None


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


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(sql_dir: Path | None = None) -> list[MigrationFile]:
    """All migrations in sql_dir, dependencies before dependants."""
    sql_dir = Path(sql_dir) if sql_dir is not None else default_sql_dir()
    if not sql_dir.is_dir():
        raise UsageError(f"{sql_dir}: sql directory not found; check --sql-dir")
    forwards = sorted(p for p in sql_dir.iterdir()
                      if p.suffix == ".sql" and not p.name.endswith(ROLLBACK_SUFFIX) and p.is_file())
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
        directives, comment, statements = read_sql_migration(str(path))
        rollback_statements = read_sql_migration(str(rollback))[2] if rollback else []
    except (UnicodeDecodeError, OSError) as err:
        raise UsageError(f"{path}: cannot read migration ({err}); files must be UTF-8 text")
    return MigrationFile(
        id=path.stem,
        path=path,
        rollback_path=rollback,
        depends=tuple(directives.get("depends", "").split()),
        comment=comment.strip(),
        statements=tuple(statements),
        rollback_statements=tuple(rollback_statements),
        forward_sha256=sha256_file(path),
        rollback_sha256=sha256_file(rollback) if rollback else None,
    )


def _ordered(migrations: dict[str, MigrationFile]) -> list[MigrationFile]:
    for m in migrations.values():
        for dep in m.depends:
            if dep not in migrations:
                raise UsageError(
                    f"{m.path}: depends on unknown migration {dep!r}; fix its -- depends: line"
                )
    graph = {m.id: m.depends for m in migrations.values()}
    try:
        order = list(topological_sort(sorted(migrations), graph))
    except CycleError as err:
        raise UsageError(f"circular dependencies among migrations {', '.join(err.args[1])}")
    return [migrations[i] for i in order]


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


def plan_apply(migrations, applied: set[str], target: str | None) -> list[MigrationFile]:
    wanted = resolve_target(target, migrations)
    return [m for m in migrations if m.id in wanted and m.id not in applied]


def plan_rollback(migrations, applied: set[str], target: str) -> list[MigrationFile]:
    keep = resolve_target(target, migrations)
    return [m for m in reversed(migrations) if m.id in applied and m.id not in keep]


def dry_run_sql(plan: list[MigrationFile], direction: str) -> str:
    """The exact statements, in order, under a header per migration."""
    parts = []
    for m in plan:
        source = m.path if direction == "apply" else m.rollback_path
        statements = m.statements if direction == "apply" else m.rollback_statements
        parts.append(f"-- {direction} {m.id} ({source})")
        parts.extend(s.strip() + ("" if s.strip().endswith(";") else ";") for s in statements)
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
