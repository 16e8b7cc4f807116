"""Fault injection with real processes on real files: kill -9 inside apply,
rollback, backup, restore and recover, and several commands at once.

Every kill is followed by the checks (the history matches the schema, the
database passes integrity_check, every backup under a final name passes
check_backup, no row outside a dropped table is lost) and by the next run,
which must succeed without repair. Short versions run by default; the long
ones (with the property test's long run) are

    .venv/bin/pytest -m slow -s

and the figures (per command and journal mode: trials, kills that landed
mid-run, runs they left interrupted, runs that finished first, failures) are
printed at the end of any run that has kill trials (conftest.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import zlib
from pathlib import Path

import pytest

from backup_helpers import leaf_pages, overwrite_pages
from helpers import CHAT, CORE, cli, connect, history, run
from faults import (CAN_SEE_OPEN_FILES, FIGURES, FOREIGN, Rounds, check_copies, check_history_matches_schema,
                    contents, every_step_killed, final_copies, kill_trials, many_migrations,
                    remove_copies, run_to_end, settle,
                    start, work_span)
from orchestra_schema.engines.sqlite import backup as backups
from orchestra_schema.engines.sqlite import files as sqlitefile
from orchestra_schema.files import staging
from orchestra_schema.files.digest import of_file
from orchestra_schema.engines.sqlite.database import Database

pytestmark = pytest.mark.skipif(not CAN_SEE_OPEN_FILES, reason="needs /proc to see a process's open files")

N, ROWS = 25, 4000  # 25 tables of 4000 rows and an index: 16 MB, runs of 0.1 to 0.5 s
ALL = {f"m{i:03d}" for i in range(N)}
MODES = ["delete", "wal"]
SHORT_TRIALS = int(os.environ.get("KILL_TRIALS", 4))  # per command and journal mode
LONG_TRIALS = int(os.environ.get("LONG_KILL_TRIALS", 50))


@pytest.fixture(scope="module")
def sql(tmp_path_factory):
    return many_migrations(tmp_path_factory.mktemp("sql"), N, ROWS)


class Scenario:
    """A database of N migrations and a foreign table, in its own directory.

    A kill scenario (faults.kill_trials) adds: names (its commands), spans(),
    argv(trial), check(command, kill) after a kill, finish(command) for the next
    run, and check_long_run() for what only many trials can show.
    """

    JOBS = 3000  # rows of the foreign table: enough leaf pages to damage some
    short_trials = SHORT_TRIALS  # per command, in the default run

    def __init__(self, tmp_path: Path, sql: Path, mode: str, applied: bool = True):
        self.mode, self.sql = mode, sql
        self.directory = tmp_path / "db"
        self.directory.mkdir(parents=True)
        self.database = self.directory / "orchestra.db"
        with connect(self.database) as c:
            c.execute(f"PRAGMA journal_mode = {mode}").fetchall()
            c.execute(f'CREATE TABLE {FOREIGN} (id INTEGER PRIMARY KEY, state TEXT)')
        self.add_jobs(self.JOBS)
        if applied:
            run_to_end(self.cli("apply"))

    def cli(self, *args, timeout: float = 30) -> list:
        return ["-d", self.database, "--sql-dir", self.sql, "--timeout", timeout, *args]

    def add_jobs(self, n: int) -> None:
        with connect(self.database) as c:
            with c:
                c.executemany(f"INSERT INTO {FOREIGN} (state) VALUES (?)", [("Succeeded" * 20,)] * n)

    def jobs(self) -> int:
        with connect(self.database) as c:
            return c.execute(f"SELECT count(*) FROM {FOREIGN}").fetchone()[0]

    def history(self) -> set[str]:
        return check_history_matches_schema(self.database, N, ROWS)

    def check_copies(self) -> None:
        check_copies(self.directory, self.database)
        for path in final_copies(self.directory, self.database).get("backup", []):
            check_history_matches_schema(path, N, ROWS, readonly=True)  # a snapshot of one state

    def check_long_run(self) -> None:
        pass


# ---- apply and rollback

class ApplyAndRollback(Scenario):
    """Apply everything, roll everything back (after its backup), in turn."""

    # --no-lint: the kills are for the writing; lint's replay of every file only reads
    commands = {"apply": ["apply", "--no-lint"], "rollback": ["rollback", "--to", "0", "--yes"]}
    names = tuple(commands)
    goals = {"apply": ALL, "rollback": set()}

    def __init__(self, tmp_path, sql, mode):
        super().__init__(tmp_path, sql, mode, applied=False)
        self.jobs_before = self.jobs()

    def spans(self):
        runs = [{c: work_span(self.cli(*args), self.directory) for c, args in self.commands.items()}
                for _ in range(2)]  # the shorter of two: a loaded machine's slow run would
        remove_copies(self.directory, self.database)  # put kills after the end
        return {c: min(r[c] for r in runs) for c in self.commands}

    def argv(self, trial):
        command = "apply" if trial % 2 == 0 else "rollback"
        return command, self.cli(*self.commands[command])

    def check(self, command, kill):
        applied = self.history()
        assert self.jobs() == self.jobs_before, "rows of a table no migration owns were lost"
        self.check_copies()
        if applied not in (ALL, set()):
            kill.evidence.append(f"{len(applied)} of {N} migrations applied")

    def finish(self, command):
        run_to_end(self.cli(*self.commands[command]))
        assert self.history() == self.goals[command]
        self.check_copies()
        remove_copies(self.directory, self.database)


class RollbackInTransaction(ApplyAndRollback):
    """rollback --no-backup from every migration applied: no backup comes first, so the
    kills fall in the rollback itself, and a share must land inside its write transactions."""

    commands = {"rollback": ["rollback", "--to", "0", "--yes", "--no-backup"]}
    names = tuple(commands)
    goals = {"rollback": set()}
    min_writing_share = 3  # at least one landed kill in this many holds the write lock

    def spans(self):
        spans = []
        for _ in range(2):
            run_to_end(self.cli("apply"))
            spans.append(work_span(self.cli(*self.commands["rollback"]), self.directory))
        return {"rollback": min(spans)}

    def argv(self, trial):
        if self.history() != ALL:
            run_to_end(self.cli("apply"))
        return "rollback", self.cli(*self.commands["rollback"])


# ---- backup

class Backup(Scenario):
    """backup, now and then with --keep 1, never changes the live file nor leaves a broken backup."""

    names = ("backup",)

    def __init__(self, tmp_path, sql, mode):
        super().__init__(tmp_path, sql, mode)
        self.live = of_file(self.database)
        self.outcomes = set()  # whether killed runs had published their backup

    def spans(self):
        spans = [work_span(self.cli("backup"), self.directory) for _ in range(2)]
        remove_copies(self.directory, self.database)
        return {"backup": min(spans)}

    def argv(self, trial):
        self.before = set(backups.backups_of(self.database))
        return "backup", self.cli("backup", *(["--keep", "1"] if trial % 3 == 2 else []))

    def check(self, command, kill):
        assert of_file(self.database) == self.live, "backup changed the live database"
        self.history()
        self.check_copies()
        published = set(backups.backups_of(self.database)) - self.before
        if kill.landed:
            self.outcomes.add("published" if published else "not published")
        if any(not backups.manifest_path(p).exists() for p in published):
            kill.evidence.append("a backup published, its manifest not yet written")

    def finish(self, command):
        out = json.loads(run_to_end(self.cli("--json", "backup")).stdout)
        assert not any(staging.TEMP_MARK in p.name for p in self.directory.iterdir()), \
            "a killed run's temporary files were left after the next run"
        assert backups.check_backup(Path(out["path"])).ok
        self.check_copies()
        newest = backups.backups_of(self.database)[-1:]  # for --keep to delete
        remove_copies(self.directory, self.database, keep=newest)

    def check_long_run(self):
        # Kills before the publishing link: nothing under a final name. Kills after it
        # are a window of a few fsyncs; test_backup_killed_after_each_file_step hits it.
        assert "not published" in self.outcomes, self.outcomes


# ---- restore

class Restore(Scenario):
    """Restore, in turn, a backup of every migration and one of half of them:
    the live database is the old state or the new one, never a mix."""

    names = ("restore",)
    short_trials = 2 * SHORT_TRIALS  # its write is a third of its run (checks before and after)

    def __init__(self, tmp_path, sql, mode):
        super().__init__(tmp_path, sql, mode)
        self.inside_transaction = 0  # kills inside the restore's write: the old state kept
        self.full = self.backup()
        run_to_end(self.cli("rollback", "--to", f"m{N // 2:03d}", "--yes", "--no-backup"))
        self.add_jobs(100)
        self.half = self.backup()
        self.states = {p: contents(p, readonly=True) for p in (self.full, self.half)}
        self.current = self.half

    def backup(self) -> Path:
        return Path(json.loads(run_to_end(self.cli("--json", "backup")).stdout)["path"])

    def spans(self):
        spans = [work_span(self.cli("restore", target, "--yes"), self.directory)
                 for target in (self.full, self.half)]
        remove_copies(self.directory, self.database, keep=self.states)
        return {"restore": min(spans)}

    def argv(self, trial):
        self.target = self.full if self.current == self.half else self.half
        no_backup = ["--no-backup"] if trial % 2 else []  # then every kill is in the restore itself
        return "restore", self.cli("restore", self.target, "--yes", *no_backup)

    def check(self, command, kill):
        live = contents(self.database)  # opens read-write: a hot journal is rolled back first
        assert live in (self.states[self.current], self.states[self.target]), "neither old nor new"
        self.history()
        self.check_copies()
        if live == self.states[self.current] and kill.in_transaction:
            self.inside_transaction += 1

    def finish(self, command):
        run_to_end(self.cli("restore", self.target, "--yes", "--no-backup"))
        assert contents(self.database) == self.states[self.target]
        self.current = self.target
        self.history()
        self.check_copies()
        remove_copies(self.directory, self.database, keep=self.states)


    def check_long_run(self):
        assert self.inside_transaction >= 1


# ---- recover

class Recover(Scenario):
    """recover --yes of a healthy database, and recover of one with damaged pages, in turn:
    the live database is the old file, untouched, or a whole rebuilt one; never missing."""

    names = ("recover",)

    def __init__(self, tmp_path, sql, mode):
        super().__init__(tmp_path, sql, mode)
        self.reference = contents(self.database)
        self.damaged = None

    def spans(self):
        spans = [work_span(self.cli("recover", "--yes"), self.directory) for _ in range(2)]
        remove_copies(self.directory, self.database)
        return {"recover": min(spans)}

    def argv(self, trial):
        self.damaged = None
        if trial % 2 == 0:
            return "recover", self.cli("recover", "--yes")
        leaves = leaf_pages(self.database, FOREIGN)
        overwrite_pages(self.database, [page for page, _ in leaves[len(leaves) // 2:][:2]], fill=b"\x00")
        self.damaged = of_file(self.database)
        return "recover", self.cli("recover")

    def check(self, command, kill):
        assert self.database.exists(), f"{self.database} is missing"
        if self.damaged and of_file(self.database) == self.damaged:
            return  # the damaged file, untouched: the next run recovers it
        self.check_rebuilt()

    def check_rebuilt(self):
        self.history()
        self.check_rows(self.database)
        for path in final_copies(self.directory, self.database).get("pre-recover", []):
            self.check_rows(path)  # the file it replaced, kept whole

    def check_rows(self, path):
        """Every table as before; only a damaged trial may lose rows, of the damaged table."""
        now, before = contents(path), dict(self.reference)
        if self.damaged:
            now.pop(FOREIGN), before.pop(FOREIGN)
        assert now == before, f"{path.name}: rows changed"

    def finish(self, command):
        still_damaged = self.damaged and of_file(self.database) == self.damaged
        done = run_to_end(self.cli("recover", "--yes"), code=1 if still_damaged else 0)
        assert not still_damaged or f"{FOREIGN}: " in done.stderr  # the table that lost rows, named
        assert not any(staging.TEMP_MARK in p.name for p in self.directory.iterdir()), \
            "a killed run's temporary files were left after the next run"
        self.check_rebuilt()
        remove_copies(self.directory, self.database)
        if self.jobs() < self.JOBS:
            self.add_jobs(self.JOBS - self.jobs())
        self.reference = contents(self.database)


SCENARIOS = [ApplyAndRollback, RollbackInTransaction, Backup, Restore, Recover]


def kill_many(scenario, tmp_path, sql, mode, trials):
    """`trials` kills per command; then: no failure, and not vacuous: kills landed inside
    the work, and some left a run interrupted part-way."""
    s = scenario(tmp_path, sql, mode)
    seed = zlib.crc32(f"{scenario.__name__} {mode}".encode())
    share = getattr(s, "min_writing_share", None)  # kills inside the write transaction itself

    def enough(t):  # else kill_trials kills again, up to three times as many
        return (t.landed >= trials // 2 and t.interrupted >= max(1, trials // 10)
                and (not share or t.writing >= max(1, t.landed // share)))

    for t in kill_trials(s, trials * len(s.names), seed, enough).values():
        assert not t.failures, "\n".join(t.failures)
        assert enough(t), t.line()
    return s


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda c: c.__name__)
def test_kill(tmp_path, sql, scenario, mode):
    kill_many(scenario, tmp_path, sql, mode, scenario.short_trials)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda c: c.__name__)
def test_kill_long(tmp_path, sql, scenario, mode):
    kill_many(scenario, tmp_path, sql, mode, LONG_TRIALS).check_long_run()


# ---- a kill after each file-name change: the swap of a live database

def test_recover_killed_after_each_file_step_leaves_a_database(tmp_path, sql):
    s = Scenario(tmp_path, sql, "wal")
    reference = contents(s.database)
    kills = 0
    def prepare():  # the same files, so each run takes the same steps
        remove_copies(s.directory, s.database)
        settle(s.database)

    for step, result in every_step_killed(s.directory, *s.cli("recover", "--yes"), prepare=prepare):
        assert "Traceback" not in result.stderr
        assert s.database.exists(), f"killed after step {step}: {s.database} is missing"
        assert contents(s.database) == reference
        s.history()
        kills += result.returncode < 0
        run_to_end(s.cli("recover", "--yes"))  # the next run needs no repair
        assert contents(s.database) == reference
    assert result.returncode == 0 and kills >= 3, (kills, result.stderr)


def test_backup_killed_after_each_file_step(tmp_path, sql):
    s = Scenario(tmp_path, sql, "delete")
    live = of_file(s.database)
    published = []
    for step, result in every_step_killed(s.directory, *s.cli("backup"),
                                          prepare=lambda: remove_copies(s.directory, s.database)):
        assert "Traceback" not in result.stderr
        assert of_file(s.database) == live
        for path in backups.backups_of(s.database):
            assert backups.check_backup(path).ok, (step, path)
            published.append((result.returncode, backups.manifest_path(path).exists()))
        run_to_end(s.cli("backup"))  # the next run needs no repair
    assert (-9, False) in published  # killed after the publishing link, before the manifest


def test_restore_of_an_unopenable_database_killed_after_each_file_step(tmp_path, sql):
    s = Scenario(tmp_path, sql, "wal")
    backup = Path(json.loads(run_to_end(s.cli("--json", "backup")).stdout)["path"])
    wanted = contents(backup, readonly=True)

    def damage():  # SQLite cannot open it: restore can only replace the file
        remove_copies(s.directory, s.database, keep=[backup])
        settle(s.database)
        overwrite_pages(s.database, [1])

    kills = 0
    for step, result in every_step_killed(s.directory, *s.cli("restore", backup), prepare=damage):
        assert "Traceback" not in result.stderr
        assert s.database.exists(), f"killed after step {step}: {s.database} is missing"
        if sqlitefile.is_sqlite(s.database):
            assert contents(s.database) == wanted
        kills += result.returncode < 0
        run_to_end(s.cli("restore", backup))  # the next run needs no repair
        assert contents(s.database) == wanted
    assert result.returncode == 0 and kills >= 2, (kills, result.stderr)


# ---- several runs at once

def at_once(s: Scenario, commands, timeouts) -> list[tuple[str, int, str]]:
    """Start every command at once; (command, exit code, stderr) of each."""
    procs = [(" ".join(c), start(*s.cli(*c, timeout=t))) for c, t in zip(commands, timeouts)]
    errs = [(label, p.communicate(timeout=300)[1]) for label, p in procs]
    return [(label, p.returncode, err) for (label, err), (_, p) in zip(errs, procs)]


def test_concurrent_applies_apply_each_migration_once(tmp_path, sql):
    for mode in MODES:
        s = Scenario(tmp_path / mode, sql, mode, applied=False)
        results = at_once(s, [["apply"]] * 5, [120] * 5)
        assert all(code == 0 and "Traceback" not in err for _, code, err in results), results
        assert s.history() == ALL
        with connect(s.database) as c:
            applies = c.execute("SELECT migration_id, count(*) FROM _yoyo_log WHERE operation = 'apply' "
                                "GROUP BY migration_id").fetchall()
        assert sorted(applies) == [(f"m{i:03d}", 1) for i in range(N)]


# Two of each command; one of each pair waits long for the lock, the other briefly.
MIX = [["apply"], ["rollback", "--to", "0", "--yes"], ["backup"],
       ["apply"], ["rollback", "--to", f"m{N // 2:03d}", "--yes"], ["backup"]]


def concurrent_rounds(s: Scenario, rounds: int, seed: int) -> Rounds:
    """Start the MIX at once, in random order, round after round, from every migration
    applied or a third of them. Exit 0 or 3 (busy, or the history changed under the
    run's plan), no traceback; nothing applied twice (check_log); the history matches
    the schema; every backup is whole and one consistent state; the next run succeeds."""
    rng, r = random.Random(seed), Rounds(s.mode)
    FIGURES.append(r)
    for number in range(rounds):
        if number % 2:
            run_to_end(s.cli("rollback", "--to", f"m{N // 3:03d}", "--yes", "--no-backup"))
        timeouts = [30] * 3 + [rng.choice([0.2, 0.5, 2]) for _ in range(3)]
        order = rng.sample(range(len(MIX)), len(MIX))
        r.count(at_once(s, [MIX[i] for i in order], [timeouts[i] for i in order]))
        with r.checking("history"):
            s.history()
        with r.checking("backups"):
            s.check_copies()
            r.backups += len(final_copies(s.directory, s.database).get("backup", []))
        with r.checking("the next run"):
            run_to_end(s.cli("apply"))
            assert s.history() == ALL
        remove_copies(s.directory, s.database)
    assert not r.failures, "\n".join(r.failures)
    assert r.succeeded == {"apply", "rollback", "backup"} and r.backups, r.line()  # not vacuous
    return r


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_apply_rollback_and_backup(tmp_path, sql, mode):
    concurrent_rounds(Scenario(tmp_path, sql, mode), rounds=2, seed=12)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_concurrent_apply_rollback_and_backup_long(tmp_path, sql, mode):
    concurrent_rounds(Scenario(tmp_path, sql, mode), rounds=int(os.environ.get("LONG_ROUNDS", 25)),
                      seed=13)


def test_a_cleanup_between_creating_and_locking_a_staged_file_spares_it(tmp_path, monkeypatch):
    """Found by the long concurrent runs (a backup exited 6, its copy gone): another run's
    cleanup can open a new temporary file before its writer has locked it, find it
    unlocked, and delete it; the writer then wrote to a fresh unlocked file at that name,
    which the next cleanup deleted mid-copy. Here the cleanup runs in that very gap."""
    real_flock, raced = fcntl.flock, []

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX and not raced:  # the writer, about to lock its new file
            raced.append(staging.clean_stale(tmp_path))  # another run's cleanup, just then
        return real_flock(fd, operation)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    with staging.Staged(tmp_path / "orchestra.db.backup_20250101_000000") as staged:
        monkeypatch.undo()
        assert raced and staged.path.exists()
        assert os.path.samestat(os.stat(staged.path), os.fstat(staged.fd))  # its lock is on its file
        assert staging.clean_stale(tmp_path) == []  # so no cleanup takes it now


def test_a_cleanup_removes_a_staged_file_only_while_holding_its_lock(tmp_path, monkeypatch):
    """The same race, one step later: a cleanup that let the lock go before removing the
    file could remove it after its writer had locked it and checked its name."""
    created, go, first = threading.Event(), threading.Event(), []
    real_flock, real_unlink = fcntl.flock, Path.unlink

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX and threading.current_thread() is writer and not first:
            first.append(fd)
            created.set()
            go.wait(30)  # the writer waits, its file created, until the cleanup decides
        return real_flock(fd, operation)

    def unlink(path, missing_ok=False):
        if threading.current_thread() is not writer:
            go.set()  # the cleanup has decided to remove it; the writer may lock it now
            writer.join(0.5)  # ... and check its name, if it can
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    monkeypatch.setattr(Path, "unlink", unlink)
    made = []
    writer = threading.Thread(target=lambda: made.append(staging.Staged(tmp_path / "orchestra.db.backup_1")))
    writer.start()
    assert created.wait(30)
    staging.clean_stale(tmp_path)
    writer.join(30)
    monkeypatch.undo()
    staged = made[0]
    try:
        assert staged.path.exists() and os.path.samestat(os.stat(staged.path), os.fstat(staged.fd))
    finally:
        staged.__exit__(None, None, None)


def test_a_rollback_planned_while_another_run_rolls_back_counts_from_one_state(db, monkeypatch):
    """Found by the concurrent runs (exit 70, "no such table"): the plan's rows at risk
    were counted in several reads, and another run's rollback in between dropped a table
    after the first read listed it. Now one read transaction sees one state; the other
    run's work shows up under the lock, and this run skips what is already rolled back."""
    with connect(db) as c:
        c.execute("PRAGMA journal_mode = WAL").fetchall()  # the other run writes beside our read
    real_row_count, raced = Database.row_count, []

    def row_count(self, table):
        if not raced:  # the first count, just after the tables were listed
            raced.append(run("--database", db, "rollback", "--to", CORE, "--yes", "--no-backup"))
        return real_row_count(self, table)

    monkeypatch.setattr(Database, "row_count", row_count)
    result = cli("--database", db, "--json", "rollback", "--to", CORE, "--yes", "--no-backup")
    assert raced and raced[0].returncode == 0, raced[0].stderr
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["rolled_back"] == [] and out["skipped"] == [CHAT]
    assert history(db) == {CORE}
