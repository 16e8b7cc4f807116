"""SQLite behind the seam: apsw connections, online backups, the page reader and salvage.

SqliteEngine is what the commands see (engines.of); each method imports the module that
does the work when it is called, so a command loads only what it uses.
"""

from __future__ import annotations

from ..base import Engine


class SqliteEngine(Engine):
    name = "sqlite"
    restore_check = "quick_check"
    without_manifest = "trusted on its integrity_check alone"
    secure_delete = True

    def connect(self, ctx, *, readonly=False, create=False):
        from .driver import SqliteDriver
        return SqliteDriver(ctx.open(readonly=readonly, create=create))

    def backup(self, ctx, output, directory, keep, progress, full_check):
        from .backup import backup
        return backup(ctx, output, directory, keep, progress=progress, full_check=full_check)

    def restore(self, ctx, backup_path, yes, make_backup, progress):
        from .restore import restore
        return restore(ctx, backup_path, yes=yes, make_backup=make_backup, progress=progress)

    def recover(self, ctx, source, yes, progress):
        from .recover import recover
        return recover(ctx, source, yes=yes, progress=progress)

    def rehearsal(self, ctx, report, memory, workdir):
        from .rehearsal import snapshot_of
        return snapshot_of(ctx, report, memory, workdir)

    @property
    def scratch_errors(self):
        from .rehearsal import SCRATCH_FAILURES
        return SCRATCH_FAILURES

    def schema_sql(self, migrations, server):
        from .schema_sql import schema_sql
        return schema_sql(migrations)

    def step_note(self, statement):
        return "in a transaction of its own (SQLite's write lock on the whole file meanwhile)"

    def empty_file(self, ctx):
        return ctx.database.stat().st_size == 0

    def before_checks(self, ctx):
        from .checks import refuse_unreadable
        refuse_unreadable(ctx.database)

    def file_checks(self, ctx):
        from . import wal  # what the -wal holds that SQLite does not read
        return [("wal", lambda: wal.problems(ctx.database))]

    def translated(self, ctx, doing):
        from .database import translated
        return translated(ctx.database, doing)

    @property
    def check_errors(self):
        import apsw
        return (apsw.Error,)

    @property
    def busy_errors(self):
        import apsw
        return (apsw.BusyError, apsw.LockedError)

    def backups(self, ctx, full):
        from .backup import backups_of, check_backup
        # The backup directory, and beside the database (where backups went before it was set).
        places = list(dict.fromkeys(p.resolve() for p in (ctx.backups, ctx.database.parent)))
        return (places, [p for place in places for p in backups_of(ctx.database, place)],
                lambda p: check_backup(p, full=full), self.integrity_method(full))
