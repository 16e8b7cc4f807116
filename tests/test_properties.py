"""Property-based: random sequences of commands on a database with rows.

apply, rollback, backup, restore (of any backup taken earlier, or of the copy a
restore kept) and writes by the application, in either journal mode. After
every step the history matches the schema, and no row outside a table the step
dropped is lost: the model counts every table's rows, and a restore brings back
exactly the history, schema and rows of the backup it restores.

The long run: .venv/bin/pytest -m slow tests/test_properties.py
"""

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from helpers import CHAT, CHAT_TABLES, CORE, CORE_TABLES, connect, history, tables
from orchestra_schema.engines.sqlite import backup as backups
from orchestra_schema.commands import migrate as commands
from orchestra_schema.engines.sqlite import restore
from orchestra_schema.context import Context
from orchestra_schema.engines.sqlite.database import Database
from orchestra_schema.engines.sqlite.snapshot import snapshot
from orchestra_schema.schema import diff

OWNED = {CORE: CORE_TABLES, CHAT: CHAT_TABLES}
NEEDS = {CORE: {CORE}, CHAT: {CORE, CHAT}}  # a migration and what it depends on
FOREIGN = "HangFire.Job"


@dataclass(frozen=True)
class Saved:
    """A backup (or a restore's safety copy) and the state the model says it holds."""

    path: Path
    applied: frozenset
    rows: tuple  # sorted (table, rows) pairs


def schema_of(path: Path):
    with Database.open(path, readonly=True) as db:
        return snapshot(db)


class Sequences(RuleBasedStateMachine):
    saved = Bundle("saved")

    @initialize(mode=st.sampled_from(["delete", "wal"]))
    def start(self, mode):
        self.dir = Path(tempfile.mkdtemp())
        self.ctx = Context(self.dir / "orchestra.db")
        with connect(self.ctx.database) as c:
            c.execute(f"PRAGMA journal_mode = {mode}").fetchall()
        commands.apply(self.ctx)
        with connect(self.ctx.database) as c:
            c.execute(f'CREATE TABLE "{FOREIGN}" (Id INTEGER PRIMARY KEY, State TEXT)')
        self.applied = {CORE, CHAT}
        self.rows = {t: 0 for t in CORE_TABLES | CHAT_TABLES | {FOREIGN}}

    def teardown(self):
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def state(self, path: Path) -> Saved:
        return Saved(path, frozenset(self.applied), tuple(sorted(self.rows.items())))

    @rule(to=st.sampled_from([CORE, CHAT, None]))
    def apply(self, to):
        wanted = NEEDS[to or CHAT]  # the model's own answer, not the tool's report
        newly = wanted - self.applied
        result = commands.apply(self.ctx, to=to)
        assert set(result.applied) == newly
        for mid in newly:
            self.rows.update({t: 0 for t in OWNED[mid]})
        self.applied |= wanted

    @rule(to=st.sampled_from(["0", CORE, CHAT]))
    def rollback(self, to):
        doomed = self.applied - NEEDS.get(to, set())  # everything the target does not need
        result = commands.rollback(self.ctx, to=to, yes=True)
        assert set(result.rolled_back) == doomed
        self.applied -= doomed
        for mid in doomed:
            for t in OWNED[mid]:
                del self.rows[t]

    @rule(n=st.integers(1, 3))
    def write_rows(self, n):
        with connect(self.ctx.database) as c:
            for _ in range(n):
                c.execute(f'INSERT INTO "{FOREIGN}" (State) VALUES (?)', ("Enqueued",))
                self.rows[FOREIGN] += 1
                if "Repositories" in self.rows:
                    c.execute("INSERT INTO Repositories VALUES (?, 'r', ?, NULL, 0, 1, 'c', 'u', NULL, NULL,"
                              " NULL, '[]', 0, 0, 0, 0, '[]')", (str(uuid.uuid4()), str(uuid.uuid4())))
                    self.rows["Repositories"] += 1
                if "ChatSessions" in self.rows:
                    c.execute("INSERT INTO ChatSessions VALUES (?, NULL, 'i', 't', 'c', 'l')",
                              (str(uuid.uuid4()),))
                    self.rows["ChatSessions"] += 1

    @rule(target=saved)
    def backup(self):
        result = backups.backup(self.ctx)
        assert backups.check_backup(result.path).ok
        assert set(result.applied_migrations) == self.applied == history(result.path)
        return self.state(result.path)

    @rule(target=saved, backup=saved, keep_copy=st.booleans())
    def restore(self, backup, keep_copy):
        before = self.state(None)
        result = restore.restore(self.ctx, backup.path, yes=True, make_backup=keep_copy)
        assert result.integrity == "ok" and result.method == "backup-api"
        self.applied, self.rows = set(backup.applied), dict(backup.rows)
        assert diff(schema_of(backup.path), schema_of(self.ctx.database)) == []
        if result.backup is None:
            return multiple()
        return Saved(result.backup, before.applied, before.rows)  # restorable in its turn

    @invariant()
    def history_matches_schema_and_rows_survive(self):
        present = tables(self.ctx.database)
        assert history(self.ctx.database) == self.applied
        for mid, owned in OWNED.items():
            assert (owned <= present) == (mid in self.applied) and (owned & present in (owned, set()))
        with connect(self.ctx.database) as c:
            for table, n in self.rows.items():
                assert c.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == n, table


TestSequences = Sequences.TestCase
TestSequences.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)


@pytest.mark.slow
class TestSequencesLong(Sequences.TestCase):
    settings = settings(max_examples=400, stateful_step_count=30, deadline=None)
