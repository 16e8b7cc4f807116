"""Property-based: random sequences of commands on a database with rows.

After every step the history matches the schema, and no row outside a table the
step dropped is lost.
"""

import shutil
import tempfile
import uuid
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conftest import CHAT, CHAT_TABLES, CORE, CORE_TABLES, connect, history, tables
from orchestra_schema import commands

OWNED = {CORE: CORE_TABLES, CHAT: CHAT_TABLES}
FOREIGN = "HangFire.Job"


class Sequences(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.ctx = commands.Context(self.dir / "orchestra.db")
        commands.apply(self.ctx)
        with connect(self.ctx.database) as c:
            c.execute(f'CREATE TABLE "{FOREIGN}" (Id INTEGER PRIMARY KEY, State TEXT)')
        self.applied = {CORE, CHAT}
        self.rows = {t: 0 for t in CORE_TABLES | CHAT_TABLES | {FOREIGN}}

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(to=st.sampled_from([CORE, CHAT, None]))
    def apply(self, to):
        result = commands.apply(self.ctx, to=to)
        for mid in result.applied:
            self.rows.update({t: 0 for t in OWNED[mid]})
        self.applied |= {CORE} | ({CHAT} if to in (CHAT, None) else set())

    @rule(to=st.sampled_from(["0", CORE, CHAT]))
    def rollback(self, to):
        result = commands.rollback(self.ctx, to=to, yes=True)
        for mid in result.rolled_back:
            self.applied.discard(mid)
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
