"""PostgreSQL behind the seam: psycopg 3 connections, pg_dump archives, catalog checks.

PgEngine is what the commands see (engines.of); each method imports the module that
does the work when it is called (status never loads pg_dump's archive code).
"""

from __future__ import annotations

import contextlib
import time

from ...errors import UsageError
from ..base import Engine


class PgEngine(Engine):
    name = "postgresql"
    restore_check = "pg_restore"
    rehearses_chat_alone = True  # AgentSessions (a later migration) stays

    def connect(self, ctx, *, readonly=False, create=False):
        from .driver import PgDriver
        return PgDriver.connect(ctx.database, timeout=ctx.timeout, readonly=readonly)

    def backup(self, ctx, output, directory, keep, progress, full_check):
        from .archive import backup_database  # pg_dump's archive
        return backup_database(ctx, output, directory, keep, full_check=full_check)

    def restore(self, ctx, backup_path, yes, make_backup, progress):
        from .archive import restore_database  # pg_restore, one transaction
        return restore_database(ctx, backup_path, make_backup=make_backup, yes=yes)

    def recover(self, ctx, source, yes, progress):
        raise UsageError(f"{ctx.display}: PostgreSQL recovers from crashes by itself (its WAL "
                         "replay at start-up), so there is nothing for recover to do; to go back "
                         "to a backup use `orchestra-schema restore ARCHIVE`")

    @contextlib.contextmanager
    def rehearsal(self, ctx, report, memory, workdir):
        """The real rollback and apply on the live database, inside one repeatable-read
        transaction that is always rolled back. The run lock and the lock_timeout retries
        are the migration commands' own (rollback_one, apply_one): a table the app holds
        is waited for at most lock_timeout at a time, until --timeout (exit 3). Once the
        rollback has its locks, the app's queries on the tables it drops wait until the
        rehearsal ends (its checks and the apply again)."""
        report.snapshot = report.snapshot_mode = "transaction"
        with self.connect(ctx) as driver:
            # A `-- transactional: false` migration runs inside this one transaction; its
            # CONCURRENTLY statements cannot, and built plainly they would block the app's
            # writes until the rehearsal ends: they are left out, and listed.
            driver.in_steps = driver.plain_concurrently = False
            start = time.perf_counter()
            driver.lock()
            with driver.check_transaction("rehearsing"):
                yield driver, round(time.perf_counter() - start, 3), \
                    "ok (a transaction, rolled back at the end)"
            report.warnings += [
                f"not rehearsed: {s} (CONCURRENTLY cannot run in the rehearsal's transaction, "
                "and built plainly it would block the app's writes until the rehearsal ends; "
                "the real run builds it without blocking them)" for s in driver.skipped]

    def step_note(self, statement):
        from .locks import lock_taken
        return lock_taken(statement)

    def schema_sql(self, migrations, server):
        from .catalog import schema_sql
        if not server:
            raise UsageError("the PostgreSQL schema is read from a scratch database on a server; "
                             "give --database postgresql://USER@HOST/DB")
        return schema_sql(server, migrations)

    def backups(self, ctx, full):
        from . import archive
        return ([ctx.backups], archive.backups_of(ctx.database, ctx.backups),
                lambda p: archive.check_archive(ctx.database, p, read_all=full),
                archive.CHECKS[full])
