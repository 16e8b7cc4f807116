"""The orchestra-schema command line: parse, call one library function, render.

This is the only module that knows about exit codes, terminals and JSON.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import math
import sys
from pathlib import Path

import click

# Only what every command needs is imported here: each command imports its own
# modules when it runs, so `status` does not pay for backup, recover or rehearse.
from . import address
from .context import DEFAULT_TIMEOUT, Context
from .errors import EXIT_CODES, CheckFailed, OrchestraError, UsageError

# At exit, after every command's files are closed and synced: the interpreter's last full
# collection walks every object psycopg, click and the rest made (about 30 ms, a fifth of
# `status`); frozen, they are only freed. Nothing of ours waits on a cycle's __del__.
atexit.register(gc.freeze)

EF_TABLE = "__EFMigrationsHistory"  # ef.TABLE, without importing ef for --help
HISTORIES = ("yoyo", "ef")  # history.YOYO, history.EF

INTERNAL_ERROR = 70
EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()
) + f"\n  {INTERNAL_ERROR} internal error (a bug; rerun with -v and report it)"


@dataclasses.dataclass
class Settings:
    given: dict  # the global options' values: Context's arguments
    json: bool
    quiet: bool
    verbose: bool

    @functools.cached_property
    def ctx(self) -> Context:
        """Built when a command first needs it, after every option is read: `CMD --help` and
        options after the command name come first, so a bad --database never hides the help."""
        return Context(**self.given)

    def say(self, message: str) -> None:
        """A message for the person: stderr, silent under -q."""
        if not self.quiet:
            click.echo(message, err=True)

    def warn(self, message: str, reminder: bool = False) -> None:
        """Something to look at: printed under -q too (as Flyway's -q does), reminders aside."""
        if not (reminder and self.quiet):
            click.echo(f"orchestra-schema: warning: {message}", err=True)

    def emit(self, data, text: str | None) -> None:
        """The command's data: JSON under --json, else text, on stdout."""
        if self.json:
            import json  # here: most runs (cron, -q) print no JSON
            click.echo(json.dumps(_plain(data), indent=2, sort_keys=False))
        elif text:
            click.echo(text)

    def report(self, data, text: str | None, ok: bool = True) -> None:
        """A check's or a finished change's report: under -q only when it failed, so cron
        mails it then and only then. Listings asked for (status, schema, SQL) use emit."""
        if self.json or not self.quiet or not ok:
            self.emit(data, text)


def _plain(data):
    if dataclasses.is_dataclass(data):
        return {k: _plain(v) for k, v in dataclasses.asdict(data).items()}
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, Path):
        return str(data)
    return data


class OrchestraGroup(click.Group):
    """Turns project errors into one line on stderr and their exit code."""

    def invoke(self, ctx: click.Context):
        _collect_again()
        try:
            return super().invoke(ctx)
        except OrchestraError as err:
            settings = ctx.find_object(Settings)
            if settings and settings.json and getattr(err, "result", None) is not None:
                settings.emit(err.result, None)  # what was done before it stopped (rollback)
            _fail(ctx, err, err.exit_code, str(err))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail(ctx, None, 130, "interrupted")
        except Exception as err:  # a bug: still one line, traceback with -v
            busy = _untranslated_busy(ctx, err)
            if busy:
                _fail(ctx, err, busy.exit_code, str(busy))
            _fail(ctx, err, INTERNAL_ERROR,
                  f"internal error: {type(err).__name__}: {err} (rerun with -v for the traceback)")


def _untranslated_busy(ctx: click.Context, err: Exception):
    """SQLite's "database is locked" that no command translated: still exit 3 (busy), never 70."""
    apsw = sys.modules.get("apsw")  # not imported: the error is not SQLite's
    if apsw is None or not isinstance(err, (apsw.BusyError, apsw.LockedError)):
        return None
    from .engines.sqlite.database import database_error
    settings = ctx.find_object(Settings)
    where = settings.given.get("database") if settings else "the database"
    return database_error(err, where, f"running {ctx.invoked_subcommand or 'the command'}")


def _collect_again() -> None:
    """The GC back on once the options are read (entry.py turned it off for start-up)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _fail(ctx: click.Context, err, code: int, message: str):
    settings = ctx.find_object(Settings)
    if settings and settings.verbose and err is not None:
        import traceback
        traceback.print_exception(err)
    click.echo(f"orchestra-schema: error: {message}", err=True)
    ctx.exit(code)


def _database_path(ctx, param, value: str):
    # A path, a `Data Source=...` string, a postgresql:// URL or Npgsql's Host=...;... string.
    try:
        return address.parse(value)
    except UsageError as err:
        raise click.BadParameter(str(err).removeprefix("--database: ")) from None


GLOBAL_HELP = {
    "database": "SQLite file, postgresql:// URL or Npgsql Host=...;Database=... string; "
                "defaults to $ORCHESTRA_DB, $EFCORE_CONNECTION, then $HANGFIRE_CONNECTION.",
    "sql_dir": "Directory of paired ID.sql / ID.rollback.sql files "
               "(default: the SQL installed with this package).",
    "json": "Print results as JSON on stdout.",
    "quiet": "Print nothing on success (listings asked for, warnings and failures aside).",
    "verbose": "Show tracebacks on errors.",
    "timeout": "Seconds to wait for a lock held by another process before exit 3.",
    "backup_dir": "Where backups and the safety copies of rollback, restore, adopt, mark, "
                  "unmark and history forget go; defaults to $ORCHESTRA_BACKUP_DIR, then beside "
                  "the database.",
}
SQL_DIR = click.Path(path_type=Path, file_okay=False)
TIMEOUT = click.FloatRange(min=0, max=2_000_000)
BACKUP_DIR = click.Path(path_type=Path)


def _finite(ctx, param, value: float) -> float:
    # FloatRange lets nan through (every comparison with it is false).
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds; give a finite number >= 0")
    return value


@click.group(cls=OrchestraGroup, epilog=EXIT_CODE_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database", "-d", default="orchestra.db", show_default=True,
              envvar=["ORCHESTRA_DB", "EFCORE_CONNECTION", "HANGFIRE_CONNECTION"],
              callback=_database_path, help=GLOBAL_HELP["database"])
@click.option("--sql-dir", type=SQL_DIR, help=GLOBAL_HELP["sql_dir"])
@click.option("--json", "as_json", is_flag=True, help=GLOBAL_HELP["json"])
@click.option("-q", "--quiet", is_flag=True, help=GLOBAL_HELP["quiet"])
@click.option("-v", "--verbose", is_flag=True, help=GLOBAL_HELP["verbose"])
@click.option("--timeout", type=TIMEOUT, default=DEFAULT_TIMEOUT, show_default=True,
              callback=_finite, help=GLOBAL_HELP["timeout"])
@click.option("--backup-dir", type=BACKUP_DIR, envvar="ORCHESTRA_BACKUP_DIR",
              help=GLOBAL_HELP["backup_dir"])
@click.version_option(package_name="orchestra-schema")
@click.pass_context
def main(ctx, database, sql_dir, as_json, quiet, verbose, timeout, backup_dir):
    """Paired SQL migrations, backups and checks for the Orchestra API's orchestra.db.

    The options above work before or after the command name; given in both
    places, the one after the command wins.
    """
    ctx.obj = Settings(dict(database=database, sql_dir=sql_dir, timeout=timeout,
                            backup_dir=backup_dir), as_json, quiet, verbose)


def _after_command_options() -> list[click.Option]:
    """The global options again, for after the command name: each overrides the group's value.

    The group's callback has built Settings before a command parses its own
    options, so a value given here is simply set over it (the later one wins).
    """
    def setting(apply):
        def callback(ctx, param, value):
            if value is not None and value is not False:  # not given after the command
                apply(ctx.find_object(Settings), value)
        return callback

    def option(*decls, apply, **kwargs):
        return click.Option(decls, expose_value=False, callback=setting(apply), **kwargs)

    def database(s, value):  # checked as before the command: parsed, then a file's path examined
        s.given["database"] = _database_path(None, None, value)

    return [
        option("--database", "-d", apply=database, help=GLOBAL_HELP["database"]),
        option("--sql-dir", type=SQL_DIR, help=GLOBAL_HELP["sql_dir"],
               apply=lambda s, v: s.given.update(sql_dir=v)),
        option("--json", is_flag=True, default=None, help=GLOBAL_HELP["json"],
               apply=lambda s, v: setattr(s, "json", True)),
        option("-q", "--quiet", is_flag=True, default=None, help=GLOBAL_HELP["quiet"],
               apply=lambda s, v: setattr(s, "quiet", True)),
        option("-v", "--verbose", is_flag=True, default=None, help=GLOBAL_HELP["verbose"],
               apply=lambda s, v: setattr(s, "verbose", True)),
        option("--timeout", type=TIMEOUT, help=GLOBAL_HELP["timeout"],
               apply=lambda s, v: s.given.update(timeout=_finite(None, None, v))),
        option("--backup-dir", type=BACKUP_DIR, help=GLOBAL_HELP["backup_dir"],
               apply=lambda s, v: s.given.update(backup_dir=v)),
    ]


def _accept_global_options(group: click.Group) -> None:
    """Give every command (history's too) the global options after its name."""
    for command in group.commands.values():
        command.params.extend(_after_command_options())
        if isinstance(command, click.Group):
            _accept_global_options(command)


pass_settings = click.make_pass_decorator(Settings)


def _status_line(m) -> str:  # commands.MigrationStatus
    state = "applied" if m.applied else "pending"
    when = m.applied_at or ""
    notes = []
    if not m.in_sql_dir:
        notes.append("FILE MISSING from sql dir")
    if m.forward_matches is False:
        notes.append("FORWARD FILE CHANGED since applied")
    if m.rollback_matches is False:
        notes.append("ROLLBACK FILE CHANGED since applied")
    if m.applied and m.in_sql_dir and m.forward_matches is None:
        notes.append("no checksum recorded")
    if m.in_sql_dir and not m.has_rollback:
        notes.append("NO ROLLBACK FILE")
    if m.partly:
        notes.append(m.partly)
    return f"{state:8} {when:20}  {m.id}" + (f"  ({'; '.join(notes)})" if notes else "")


@main.command()
@pass_settings
def status(s: Settings):
    """List migrations: applied or pending, when, and whether files still match."""
    from .commands import migrate as commands
    report = commands.status(s.ctx)
    lines = [f"database: {report.database}"] + [_status_line(m) for m in report.migrations]
    lines.append(_ef_line(report.ef_history))
    lines += [f"note: {n}" for n in report.notes]
    if report.ef_history and not any(m.applied for m in report.migrations):
        lines.append("note: made by EF Core and not adopted yet; run `orchestra-schema adopt`")
    s.emit(report, "\n".join(lines))


@main.command()
@click.option("--to", "to", metavar="ID", help="Apply up to ID (and what it depends on) only.")
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@click.option("--no-lint", is_flag=True,
              help="Do not lint the files first (their review is `orchestra-schema lint`).")
@pass_settings
def apply(s: Settings, to, dry_run, no_lint):
    """Apply pending migrations (creates the database file if absent)."""
    from .commands import migrate as commands
    result = commands.apply(s.ctx, to=to, dry_run=dry_run,
                            review=None if no_lint else _lint_plan(s))
    if dry_run:
        s.emit(result, result.sql or "-- nothing to apply")
        return
    for mid in result.applied:
        s.say(f"applied {mid}")
    for mid in result.skipped:
        s.say(f"skipped {mid} (applied meanwhile by another run)")
    _say_ef_changes(s, result.ef_history)
    if not result.applied and not result.skipped:
        s.say(f"{result.database}: up to date, nothing to apply")
    s.emit(result, None)


@main.command()
@click.option("--to", "to", metavar="ID|0",
              help="Keep ID and what it depends on; roll back the rest. 0: roll back everything.")
@click.option("--only", "only", metavar="ID",
              help="Roll back ID and the migrations that depend on it, nothing else.")
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Accept the loss of rows in dropped tables.")
@click.option("--no-backup", is_flag=True, help="Do not back the database up first.")
@click.option("--secure-delete", is_flag=True,
              help="Overwrite the dropped rows with zeros in the file (slower, about 2.5 s per GB).")
@pass_settings
def rollback(s: Settings, to, only, dry_run, yes, no_backup, secure_delete):
    """Roll back applied migrations with their rollback files (after a backup)."""
    from .commands import migrate as commands
    result = commands.rollback(s.ctx, to=to, only=only, dry_run=dry_run, yes=yes,
                               confirm=None if s.json else _confirm_rows_lost,
                               backup=None if no_backup else _backup_first(s),
                               secure_delete=secure_delete, exact_counts=s.json)
    for warning in result.warnings:
        s.warn(warning)
    if dry_run:
        for table, n in result.rows_lost.items():
            s.say(f"-- would delete {n} row(s) of {table}")
        s.emit(result, result.sql or "-- nothing to roll back")
        return
    for mid in result.rolled_back:
        s.say(f"rolled back {mid}")
    _say_ef_changes(s, result.ef_history)
    if not result.rolled_back and not result.skipped:
        s.say(f"{result.database}: nothing to roll back")
    s.emit(result, None)


def _confirm(question: str, details=()) -> bool:
    """Ask only where a person can answer: never on a pipe or in cron."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    for line in details:
        click.echo(line, err=True)
    return click.confirm(question, default=False, err=True)


def _confirm_rows_lost(rows_lost: dict[str, int]) -> bool:
    return _confirm("Roll back and lose these rows?",
                    [f"{table}: {n} row(s) will be deleted" for table, n in rows_lost.items()])


@main.command()
@click.argument("name")
@pass_settings
def new(s: Settings, name):
    """Create NAME's forward/rollback pair with the next id."""
    from .commands import migrate as commands
    forward, rollback_file = commands.new(s.ctx, name)
    found = _lint_new(s, forward)
    for f in found:  # a fresh pair's TODO headers: a reminder, not news
        s.warn(f"lint: {f.text()}", reminder=True)
    s.emit({"forward": forward, "rollback": rollback_file, "lint": found},
           f"{forward}\n{rollback_file}")


# ---- EF Core interop, checks and rehearsal

def _ef_line(entries) -> str:
    if entries is None:
        return f"EF history: none (no {EF_TABLE} table)"
    listed = ", ".join(f"{e.migration_id} (EF Core {e.product_version})" for e in entries)
    return f"EF history ({EF_TABLE}): {listed or 'empty'}"


def _say_ef_changes(s: Settings, changes: list[str]) -> None:
    for change in changes:
        s.say(f"{EF_TABLE}: {change}")


@main.command()
@click.option("--full", is_flag=True,
              help="PRAGMA integrity_check instead of quick_check (about 25 s per GB).")
@pass_settings
def verify(s: Settings, full):
    """Check integrity, foreign keys, migration files, schema drift and EF history."""
    from .commands import verify as checks
    report = checks.verify(s.ctx, full=full)
    lines = [f"database: {report.database}",
             f"yoyo history: {', '.join(report.yoyo_history) or 'empty'}",
             _ef_line(report.ef_history)]
    for check in report.checks:
        pragma = f" ({report.integrity_pragma})" if check.name == "integrity" else ""
        lines.append(f"{'ok' if check.ok else 'FAIL':5} {check.name}{pragma}")
        lines += [f"        {p}" for p in check.problems]
    if report.unmanaged_tables:
        lines.append(f"unmanaged tables (not this tool's, not drift): "
                     f"{', '.join(report.unmanaged_tables)}")
    lines += [f"note: {n}" for n in report.notes]
    s.report(report, "\n".join(lines), report.ok)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if not c.ok)
        raise CheckFailed(f"{report.database}: verify found {len(report.problems)} problem(s) "
                          f"in {failed}; the report names each")
    s.say(f"{report.database}: verify passed")


@main.command()
@click.option("--full", is_flag=True, help="PRAGMA integrity_check instead of quick_check.")
@pass_settings
def checklist(s: Settings, full):
    """The rollback procedure's Validation Checklist, checked: exit 0 only if no item fails."""
    from .commands import verify as checks
    report = checks.checklist(s.ctx, full=full)
    failed = [i.name for i in report.items if i.status == checks.FAIL]
    s.report(report, "\n".join(f"[{i.status:4}] {i.name}: {i.detail}" for i in report.items),
             not failed)
    if failed:
        raise CheckFailed(f"{report.database}: checklist: {len(failed)} item(s) failed: "
                          f"{'; '.join(failed)}")


@main.command()
@click.option("--to", "to", metavar="ID|0",
              help="Rehearse rolling back to ID (0: everything). Default: roll back the chat "
                   "tables only.")
@click.option("--only", "only", metavar="ID",
              help="Rehearse rolling back ID and the migrations that depend on it, nothing else.")
@click.option("--memory", is_flag=True,
              help="Copy the snapshot into memory (about the database's size) instead of viewing "
                   "the live file, held still, with changes in a temporary file.")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              help="Directory for the snapshot's temporary file (default: the system temp dir).")
@pass_settings
def rehearse(s: Settings, to, only, memory, workdir):
    """Roll back and re-apply on an online snapshot (PostgreSQL: in a transaction that is
    always rolled back); the live database is never changed."""
    from .commands import rehearse as rehearsal
    report = rehearsal.rehearse(s.ctx, to=to, memory=memory, workdir=workdir, only=only,
                                review=_lint_plan(s))
    for warning in report.warnings:
        s.warn(warning)
    on = {"overlay": "a view of the live file (its changes in {})", "copy": "a snapshot copied to {}",
          "memory": "a snapshot in memory",
          "transaction": "the live database, in a transaction rolled back at the end"}[
        report.snapshot_mode].format(report.snapshot)
    what = f"to {report.target}" if report.only is None else f"{report.only} only"
    lines = [f"rehearsal: roll back {report.database} {what} on {on}"]
    lines += [f"plan: {line}" for line in report.plan]
    if not report.rolled_back:
        lines.append(f"nothing to roll back ({what})")
    lines += [f"real rollback would delete {n} row(s) of {t}" for t, n in report.rows_lost.items()]
    lines += [f"{st.name:22} {st.seconds:9.3f} s  {'ok' if st.ok else 'FAIL: ' + st.detail}"
              for st in report.steps]
    s.report(report, "\n".join(lines), report.ok)
    if not report.ok:
        raise CheckFailed(f"{report.database}: rehearsal failed: {'; '.join(report.problems)}")


@main.command()
@click.option("--no-backup", is_flag=True, help="Do not back the database up first.")
@pass_settings
def adopt(s: Settings, no_backup):
    """Take over a database EF Core made: record the migrations as applied, without running them."""
    from .commands import history
    result = history.adopt(s.ctx, backup=None if no_backup else _backup_first(s))
    if result.already_adopted:
        s.say(f"{result.database}: already adopted, nothing to do")
    for mid in result.recorded:
        s.say(f"recorded {mid} as applied (schema matched; not run)")
    s.emit(result, None)


@main.command()
@click.argument("migration_id", metavar="ID")
@click.option("--force", is_flag=True,
              help="Record it even where the schema differs (each difference is a warning).")
@click.option("--no-backup", is_flag=True, help="Do not back the database up first.")
@pass_settings
def mark(s: Settings, migration_id, force, no_backup):
    """Record migration ID as applied without running it, once the schema is what it makes."""
    from .commands import history
    result = history.mark(s.ctx, migration_id, force=force,
                          backup=None if no_backup else _backup_first(s))
    for difference in result.differences:
        s.warn(f"{result.migration_id}: recorded although the schema differs (--force): "
               f"{difference}")
    if result.recorded:
        s.say(f"recorded {result.migration_id} as applied "
              f"({'--force' if result.differences else 'schema matched'}; not run)")
    else:
        s.say(f"{result.database}: {result.migration_id} already applied, nothing to do")
    _say_ef_changes(s, result.ef_history)
    s.emit(result, None)


@main.command()
@click.argument("migration_id", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do it without asking.")
@click.option("--no-backup", is_flag=True, help="Do not back the database up first.")
@pass_settings
def unmark(s: Settings, migration_id, yes, no_backup):
    """Forget that migration ID is applied (yoyo's history and EF's row), schema untouched."""
    from .commands import history
    result = history.unmark(s.ctx, migration_id, yes=yes,
                            confirm=None if s.json else _confirm_question,
                            backup=None if no_backup else _backup_first(s))
    if result.removed:
        s.say(f"removed {result.migration_id} from yoyo's history; schema untouched")
    else:
        s.say(f"{result.database}: {result.migration_id} not applied, nothing to do")
    _say_ef_changes(s, result.ef_history)
    s.emit(result, None)


@main.group("history")
def history_group():
    """Repair the migration histories (yoyo's and EF Core's) without touching the schema."""


@history_group.command()
@click.argument("migration_id", metavar="ID")
@click.option("--from", "source", type=click.Choice(HISTORIES),
              help="Which history, when ID is in both.")
@click.option("--yes", "-y", is_flag=True, help="Do it without asking.")
@click.option("--no-backup", is_flag=True, help="Do not back the database up first.")
@pass_settings
def forget(s: Settings, migration_id, source, yes, no_backup):
    """Remove ID from yoyo's history (and its checksums) or from __EFMigrationsHistory."""
    from .commands import history
    result = history.forget(s.ctx, migration_id, source=source, yes=yes,
                            confirm=None if s.json else _confirm_question,
                            backup=None if no_backup else _backup_first(s))
    s.say(f"removed {result.migration_id} from {history.history_name(result.history)}; "
          "schema untouched")
    s.emit(result, None)


def _confirm_question(question: str) -> bool:
    return _confirm(f"{question[:1].upper()}{question[1:]}?")


_BAR_MIN_PAGES = 8192  # 32 MiB at 4 KiB pages: smaller copies take no visible time


@contextlib.contextmanager
def _progress_bar(s: Settings, label: str):
    """A progress callback drawing on a terminal only: never under -q, in cron or on a pipe."""
    if s.quiet or not sys.stderr.isatty():
        yield None
        return
    shown = []

    def draw(done: int, total: int) -> None:
        if total >= _BAR_MIN_PAGES:
            filled = 30 * done // total
            click.echo(f"\r{label} [{'#' * filled}{'-' * (30 - filled)}] {100 * done // total:3d}%",
                       err=True, nl=False)
            shown.append(True)
    try:
        yield draw
    finally:
        if shown:
            click.echo("", err=True)


def _backup_first(s: Settings):
    """The backup a destructive command makes before its first change."""
    def make() -> Path:
        from .commands import backup as backups
        with _progress_bar(s, "backing up") as progress:
            result = backups.backup(s.ctx, progress=progress)
        s.say(f"backup: {result.path}")
        return result.path
    return make


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@main.command("backup")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Write the backup to this file (it must not exist).")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="Write it to this directory, named DB.backup_YYYYmmdd_HHMMSS (default: beside DB).")
@click.option("--keep", type=click.IntRange(min=1), metavar="N",
              help="Then delete this database's older backups there beyond the newest N.")
@click.option("--full-check", is_flag=True,
              help="Check the copy with integrity_check instead of the faster quick_check.")
@pass_settings
def backup_command(s: Settings, output, directory, keep, full_check):
    """Back the database up online, while other processes keep writing.

    The backup is checked, fsynced and only then given its name, with a
    manifest (NAME.json: size, BLAKE3 digest, migrations, integrity). Mode 0600.
    """
    from .commands import backup as backups
    with _progress_bar(s, "backing up") as progress:
        result = backups.backup(s.ctx, output=output, directory=directory, keep=keep,
                                progress=progress, full_check=full_check)
    for warning in result.warnings:
        s.warn(warning)
    for path in result.cleaned:
        s.say(f"removed {path} (left by a killed backup)")
    for path in result.deleted:
        s.say(f"deleted {path} (--keep {keep})")
    s.say(f"backup: {result.path} ({_size(result.size)}, {result.integrity_check} {result.integrity}, "
          f"{result.digest.algorithm} {result.digest.value[:12]}...)")
    if result.original_wal:
        s.warn(f"SQLite ignores {result.wal_ignored} in the live -wal, so the backup lacks them; "
               f"the -wal is kept as {result.original_wal}; run `orchestra-schema recover` on the "
               "database to bring them back")
    s.emit(result, None)


@main.command("restore")
@click.argument("backup_path", metavar="BACKUP", type=click.Path(path_type=Path))
@click.option("--yes", "-y", is_flag=True,
              help="Restore even if the backup's schema differs from the live database's.")
@click.option("--no-backup", is_flag=True, help="Skip the pre-restore copy of the live database.")
@pass_settings
def restore_command(s: Settings, backup_path, yes, no_backup):
    """Verify BACKUP, keep a copy of the live database, and restore BACKUP into it.

    The copy is DB.pre-restore_TIMESTAMP (DB.corrupted_TIMESTAMP if the live
    database fails its quick_check). The restore is one transaction: other
    connections see the old or the new content, never a mix.
    """
    from . import engines
    from .commands import restore as restoring
    with _progress_bar(s, "restoring") as progress:
        result = restoring.restore(s.ctx, backup_path, yes=yes, make_backup=not no_backup,
                                   progress=progress)
    engine = engines.of(s.ctx.engine)
    if not result.has_manifest and engine.without_manifest:
        s.warn(f"{backup_path}: no manifest; {engine.without_manifest}")
    for warning in result.warnings:
        s.warn(warning)
    for line in result.schema_differences:
        s.warn(f"schema differs: {line}")
    if result.live_integrity not in ("ok", "missing", "empty"):
        s.warn(f"{result.database} was damaged ({result.live_integrity}); moved aside")
    if result.backup:
        s.say(f"backup: {result.backup}")
    s.say(f"restored {result.database} from {backup_path}; {engine.restore_check} "
          f"{result.integrity}")
    s.emit(result, None)


@main.command("recover")
@click.option("--from", "source", metavar="BACKUP", type=click.Path(path_type=Path),
              help="Copy the rows from this backup (default: salvage them from the damaged file).")
@click.option("--yes", "-y", is_flag=True, help="Rebuild even a database that passes its quick_check.")
@pass_settings
def recover_command(s: Settings, source, yes):
    """Rebuild a damaged database: schema from the migrations, then every row still readable.

    The damaged file and its -wal/-shm are kept as DB.corrupted_TIMESTAMP.
    Stop the Orchestra API and Hangfire first.
    """
    from .commands import recover as recovering
    with _progress_bar(s, "copying tables") as progress:
        result = recovering.recover(s.ctx, source, yes=yes, progress=progress)
    for path in result.moved_aside:
        s.say(f"moved aside: {path}")
    if result.wal_ignored:
        s.say(f"read from the -wal, where SQLite ignored them: {result.wal_ignored['summary']}")
    for warning in result.warnings:
        s.warn(warning)
    lines = [f"{'table':32} {'copied':>9} {'lost':>9}  note"] + [
        f"{t.table:32} {t.copied:>9} {t.lost_text():>9}  {t.note}"
        for t in result.tables]
    lost = (str(result.rows_lost) if result.rows_lost == result.rows_lost_at_most
            else f"at least {result.rows_lost}" if result.rows_lost_at_most is None and result.rows_lost
            else "an unknown number of rows" if result.rows_lost_at_most is None
            else f"{result.rows_lost} to {result.rows_lost_at_most}")
    kept = (f", {result.rows_in_lost_and_found} kept in table lost_and_found"
            if result.rows_in_lost_and_found else "")
    s.say(f"recovered {result.database} from {result.source}: {result.rows_copied} row(s) copied, "
          f"{lost} lost{kept}; integrity_check {result.integrity}")
    s.report(result, "\n".join(lines), not result.incomplete)
    if result.incomplete:
        raise CheckFailed(f"{result.database}: recovered with gaps: {'; '.join(result.incomplete)}; "
                          f"the damaged file is kept as {result.backup}; look at what is missing "
                          "before the application writes again")


@main.command("copy-to")
@click.argument("target", metavar="TARGET")
@click.option("--truncate-long-text", is_flag=True,
              help="Cut text over its column's character varying(n) limit to n characters "
                   "(ChatMessages.Content: 4000) instead of refusing; the report lists each cut.")
@click.option("--jobs", type=click.IntRange(0, 16), default=None, metavar="N",
              help="Worker processes making the COPY lines from the one snapshot (0: none). "
                   "Default: 2 for a source of 32 MB or more on a machine with 2 CPUs or "
                   "more, else 0.")
@pass_settings
def copy_to_command(s: Settings, target, truncate_long_text, jobs):
    """Copy every row of the SQLite database into an empty PostgreSQL database TARGET.

    TARGET is a postgresql:// URL or the app's Npgsql string (Host=...;Database=...).
    One transaction on TARGET: the PostgreSQL migrations with both histories, the rows,
    and a proof (row counts and digests on both sides) commit together or not at all.
    The source is only read, in one snapshot: rows the app writes after it are not copied.
    """
    if s.ctx.engine != "sqlite":
        raise UsageError(f"--database {s.ctx.display}: copy-to reads an SQLite orchestra.db; "
                         "give its path with --database")
    if s.ctx.sql_dir is not None:
        raise UsageError("copy-to uses the SQL installed with the package for both engines; "
                         "drop --sql-dir")
    found = address.parse(target)
    if not isinstance(found, address.PgAddress):
        raise UsageError(f"TARGET {str(found)!r} is not a PostgreSQL address; give a "
                         "postgresql:// URL or an Npgsql Host=...;Database=... string")
    from .copy_to import transfer as copying_to
    with _progress_bar(s, "copying rows") as progress:
        result = copying_to.copy_to(s.ctx.database, found, s.ctx.timeout,
                                    truncate=truncate_long_text, progress=progress,
                                    jobs=jobs)
    for mid in result.applied:
        s.say(f"applied {mid}")
    _say_ef_changes(s, result.ef_history)
    for cut in result.truncated:
        s.warn(f"truncated {cut.table}.{cut.column} row Id={cut.id!r}: {cut.length} characters "
               f"cut to {cut.limit}")
    lines = [f"{'table':22} {'copied':>9} {'skipped':>7} {'seconds':>8} {'rows/s':>9}"] + [
        f"{t.table:22} {t.copied:>9} {t.skipped:>7} {t.seconds:>8.2f} {t.rows_per_second:>9}"
        for t in result.tables]
    lines += [f"not copied: {n.table} ({n.rows} row(s)): {n.reason}" for n in result.not_copied]
    s.report(result, "\n".join(lines))
    s.say(f"copied {result.rows_copied} row(s) from {result.source} to {result.target} in "
          f"{result.seconds:.1f} s (keys and indexes {result.index_seconds:.1f} s, proof "
          f"{result.verify_seconds:.1f} s); counts and digests match; committed")



# ---- review tools

def _engine(s: Settings, dialect: str | None = None) -> str:
    """--dialect, else the engine of --database."""
    return dialect or s.ctx.engine


def _server(s: Settings):
    """--database's PostgreSQL address, if it is one: the server of the scratch databases."""
    return s.ctx.database if s.ctx.engine == "postgresql" else None


def _sql_dir(s: Settings, engine: str) -> Path:
    from . import migrations
    return s.ctx.sql_dir or migrations.default_sql_dir(engine)


@main.command("lint")
@click.option("--dialect", type=click.Choice(("sqlite", "postgresql")),
              help="The engine whose rules apply (default: the engine of --database).")
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="[PATH]...")
@pass_settings
def lint_command(s: Settings, dialect, strict, paths):
    """Check migrations for the mistakes review misses: FILE:LINE: RULE: what; what to do.

    Default: every migration in the sql dir. PATHs: these files or directories.
    Exit 1 on any error (and on warnings with --strict), 0 otherwise.
    """
    from . import lint as linting
    engine = _engine(s, dialect)
    report = linting.lint(_sql_dir(s, engine), engine, paths,
                          server=_server(s) if engine == "postgresql" else None)
    s.report(report.findings, "\n".join(f.text() for f in report.findings),
             not report.failed(strict))
    summary = (f"lint: {len(report.errors)} error(s), {len(report.warnings)} warning(s) "
               f"in {len(report.files)} file(s)")
    if report.failed(strict):
        raise CheckFailed(f"{summary}{' (--strict)' if strict else ''}; fix each finding listed")
    s.say(summary)


def _lint_plan(s: Settings):
    """apply and rehearse show lint's errors for the files they run; they never block on them.
    Their replay leaves the row changes out: the command runs those next, all or nothing."""
    def review(migrations, plan) -> None:
        if plan:
            for f in _advisory_lint(s, lambda lint: lint.lint_migrations(
                    migrations, plan, _engine(s), schema_only=True).errors):
                s.warn(f"lint: {f.text()}")
    return review


def _lint_new(s: Settings, forward: Path) -> list:
    return _advisory_lint(s, lambda lint: lint.lint(forward.parent, _engine(s), [forward]).findings)


def _advisory_lint(s: Settings, findings) -> list:
    """lint inside another command: a problem of lint's own never stops that command."""
    from . import lint
    try:
        return findings(lint)
    except Exception as err:
        s.warn(f"lint could not check the files ({err}); run `orchestra-schema lint`")
        return []


@main.command("schema")
@click.option("--check", "check_file", metavar="FILE", type=click.Path(path_type=Path),
              help="Compare with FILE: exit 1 with a unified diff when it differs.")
@pass_settings
def schema_command(s: Settings, check_file):
    """Print the schema the migrations produce, as reviewable SQL (fixed order, no timestamps)."""
    from . import migrations
    from .commands import schema_dump
    engine = _engine(s)
    text = schema_dump.schema_sql(engine, migrations.load(_sql_dir(s, engine)), _server(s))
    if check_file is None:
        s.emit({"engine": engine, "sql": text}, text.rstrip("\n"))
        return
    if not check_file.is_file():
        raise UsageError(f"{check_file}: schema file not found; create it with "
                         f"`orchestra-schema schema > {check_file}`")
    result = schema_dump.check(text, check_file)
    s.report(result, result.diff.rstrip("\n") or None, result.matches)
    if not result.matches:
        raise CheckFailed(f"{check_file}: differs from the schema the migrations produce (diff "
                          f"above); regenerate it with `orchestra-schema schema > {check_file}`")
    s.say(f"{check_file}: matches the schema the migrations produce")


_accept_global_options(main)
