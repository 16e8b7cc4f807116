"""`orchestra-schema lint`: the mistakes a reviewer's eye misses in a migration pair.

Rules for both engines (header, no-rollback, data-loss, round-trip) are in
findings and the engines' replays; SQLite's in sqlite_rules / sqlite_replay,
PostgreSQL's (read by PostgreSQL's own parser, pglast) in pg_rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import migrations as mig
from ..errors import UsageError
from . import sqlite_replay, sqlite_rules
from .findings import ERROR, WARNING, Finding, header_findings, no_rollback
from .sqltext import SqlFile

__all__ = ["Finding", "LintReport", "lint", "lint_migrations", "ERROR", "WARNING"]


@dataclass
class LintReport:
    dialect: str
    files: list[str]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def failed(self, strict: bool = False) -> bool:
        return bool(self.errors or (strict and self.warnings))


def lint(sql_dir: Path, dialect: str, paths=(), server: str | None = None) -> LintReport:
    """Lint the migrations in sql_dir, or only the files and directories in paths.

    server: a PostgreSQL URL; the PostgreSQL round-trip runs only when it is given.
    """
    report = LintReport(dialect, [])
    for directory, ids in _targets(Path(sql_dir), paths):
        migrations = mig.load(directory)
        chosen = [m for m in migrations if ids is None or m.id in ids]
        _add(report, lint_migrations(migrations, chosen, dialect, server))
    return report


def lint_migrations(migrations, chosen, dialect: str, server: str | None = None,
                    schema_only: bool = False) -> LintReport:
    """Lint the chosen migrations of one directory (all of it, in order, as context).

    schema_only: the round-trip replay leaves out statements that only change rows
    (INSERT, REPLACE, UPDATE, DELETE): apply's and rehearse's lint, which run them next
    anyway; every rule still reads them.
    """
    files = _read(chosen)
    first = min((m.id for m in migrations), default=None)
    found = []
    for (mid, kind), f in files.items():
        found += header_findings(f, needs_depends=mid != first)
        found += _engine_rules(dialect).check_file(f)
    found += [no_rollback(files[(m.id, "forward")]) for m in chosen if not m.has_rollback]
    found += _replay(migrations, files, dialect, server, schema_only)
    allowed = {str(f.path): f.header.allowed for f in files.values()}
    order = {str(f.path): i for i, f in enumerate(files.values())}  # forward, then its rollback
    kept = sorted({x for x in found if x.rule not in allowed.get(x.file, ())},
                  key=lambda x: (order.get(x.file, -1), x.line, x.rule, x.message))
    return LintReport(dialect, [str(f.path) for f in files.values()], kept)


def _add(report: LintReport, part: LintReport) -> None:
    report.files += part.files
    report.findings += part.findings


def _read(chosen) -> dict[tuple[str, str], SqlFile]:
    files = {}
    for m in chosen:
        files[(m.id, "forward")] = SqlFile.forward(m)
        if m.rollback_path:
            files[(m.id, "rollback")] = SqlFile.rollback(m)
    return files


def _engine_rules(dialect: str):
    if dialect == "postgresql":
        from . import pg_rules  # pglast loads PostgreSQL's parser: only when linting PostgreSQL
        return pg_rules
    return sqlite_rules


def _replay(migrations, files, dialect: str, server: str | None,
            schema_only: bool) -> list[Finding]:
    if dialect == "sqlite":
        return sqlite_replay.check(migrations, files, schema_only)
    if server:
        from . import pg_replay
        return pg_replay.check(server, migrations, files, schema_only)
    return []


def _targets(sql_dir: Path, paths) -> list[tuple[Path, set[str] | None]]:
    """(directory, migration ids to lint or None for all), in the order given."""
    if not paths:
        return [(sql_dir, None)]
    targets: dict[Path, set[str] | None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            targets[path] = None
        elif path.is_file() and path.suffix == ".sql":
            name = path.name
            rollback = name.endswith(mig.ROLLBACK_SUFFIX)
            mid = name[: -len(mig.ROLLBACK_SUFFIX)] if rollback else path.stem
            ids = targets.setdefault(path.parent, set())
            if ids is not None:
                ids.add(mid)
        else:
            raise UsageError(f"{path}: not a migration file (.sql) or directory; "
                             "give the files or directories to lint")
    return list(targets.items())
