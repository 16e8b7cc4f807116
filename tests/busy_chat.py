"""ChatMessages made busy, for the tests and bench/busy_index.py: many messages, and the app
writing one message per transaction while a contender builds an index."""

from __future__ import annotations

import threading
import time

SESSION = "51462f0a-ef08-4c51-aaf2-89fc4e821db8"


def fill(database, messages: int) -> None:
    """One chat session and `messages` messages (1,000 authors), then VACUUM ANALYZE."""
    database.run_sql(f"""
        INSERT INTO "ChatSessions" VALUES ('{SESSION}', 'u1', 'i1', 't', now(), now());
        INSERT INTO "ChatMessages" SELECT md5(n::text)::uuid, '{SESSION}', 'author ' || (n % 1000),
            'hello there', 0, now(), NULL FROM generate_series(1, {messages}) AS n;
    """)
    database.run_sql('VACUUM ANALYZE "ChatMessages"')


class Writer(threading.Thread):
    """The app: one message per transaction, as fast as it can; each insert's latency kept
    with when it began."""

    def __init__(self, database):
        super().__init__(daemon=True)
        self.database, self.samples, self.stop = database, [], threading.Event()

    def run(self):
        with self.database.connect() as conn:  # autocommit
            while not self.stop.is_set():
                began = time.perf_counter()
                conn.execute('INSERT INTO "ChatMessages" VALUES (gen_random_uuid(), %s, '
                             "'writer', 'hi', 0, now(), NULL)", (SESSION,))
                self.samples.append((began, time.perf_counter() - began))

    def during(self, start: float, end: float) -> list[float]:
        """The latencies of the inserts that overlapped [start, end]."""
        return [d for b, d in list(self.samples) if b + d >= start and b <= end]
