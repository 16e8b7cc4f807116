"""A chat-sized database to damage, its rows as SQLite saw them, and where its pages are."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import apsw

from helpers import cli, connect

HANGFIRE = "HangFire.Job"
TABLES = ("ChatSessions", "ChatMessages", "Agents", "Repositories", "Tasks", HANGFIRE)


def build(path: Path, messages: int, wal: bool, seed: int = 1) -> Path:
    """Chat sessions and messages (short prompts, long replies, every 40th over a page),
    core rows, a Hangfire-like table; in WAL mode the last Hangfire rows stay in the -wal."""
    rng = random.Random(seed)
    assert cli("--database", path, "apply").exit_code == 0
    with connect(path) as c:
        c.execute("PRAGMA foreign_keys = ON")
        c.execute("""INSERT INTO Repositories VALUES ('r1','repo','/src',NULL,0,1,'2025-01-01',
                     '2025-01-01',NULL,NULL,'main','[]',0,0,0,0,'[]')""")
        c.execute("""INSERT INTO Agents VALUES ('a1','agent','claude','/src',0,'2025-01-01',NULL,
                     '2025-01-01','2025-01-01',0,NULL,1,30,0,0,0,1.5,NULL,'r1')""")
        c.execute("""INSERT INTO Tasks VALUES ('t1','ls','a1','/src',1,0,'2025-01-01',NULL,NULL,NULL,
                     NULL,NULL,0,NULL,NULL,NULL,0,'2025-01-01','r1')""")
        c.execute(f"CREATE TABLE [{HANGFIRE}] (Id INTEGER PRIMARY KEY AUTOINCREMENT, "
                  "StateName TEXT, CreatedAt INTEGER NOT NULL)")
        sessions = max(1, messages // 50)
        with c:
            c.executemany("INSERT INTO ChatSessions VALUES (?, 'u1', 'i1', ?, '2025-01-01 10:00:00', "
                          "'2025-01-02 11:00:00')",
                          [(f"{s:08X}-0000-4000-8000-000000000000", f"session {s}") for s in range(sessions)])
            c.executemany("INSERT INTO ChatMessages VALUES (?, ?, ?, ?, ?, ?, ?)",
                          [_message(rng, m, sessions) for m in range(messages)])
            c.executemany(f"INSERT INTO [{HANGFIRE}] (StateName, CreatedAt) VALUES (?, ?)",
                          [("Succeeded", 638000000000000000 + i) for i in range(messages // 10)])
        if wal:
            c.execute("PRAGMA journal_mode = WAL").fetchall()
    if wal:  # rows committed only in the -wal, as when the API was killed
        with no_checkpoint(path) as c:
            c.execute("PRAGMA wal_autocheckpoint = 0")
            with c:
                c.executemany(f"INSERT INTO [{HANGFIRE}] (StateName, CreatedAt) VALUES ('in wal', ?)",
                              [(i,) for i in range(50)])
    return path


_TEXT = "".join(random.Random(0).choice("abcdefghij klmnop,.") for _ in range(20000))


def _message(rng: random.Random, m: int, sessions: int) -> tuple:
    kind = m % 3
    size = 6000 if m % 40 == 7 else rng.randint(20, 120) if kind == 0 else rng.randint(150, 700)
    start = rng.randrange(len(_TEXT) - size)
    content = _TEXT[start:start + size]
    return (f"{m:08X}-1111-4000-8000-{rng.getrandbits(48):012X}", f"{m % sessions:08X}-0000-4000-8000-000000000000",
            ("user", "system", "agent")[kind], content, kind, f"2025-09-23 13:{m % 60:02d}:48.9782527",
            None if m % 5 else '{"tokens": %d}' % m)


@contextlib.contextmanager
def no_checkpoint(path: Path):
    """A connection whose close leaves the -wal as it is (the rows in it stay there)."""
    c = apsw.Connection(str(path))
    c.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    try:
        yield c
    finally:
        c.close()


def rows(path: Path, table: str) -> set[tuple]:
    with no_checkpoint(path) as c:
        return set(c.execute(f"SELECT rowid, * FROM [{table}]"))


def snapshot(path: Path) -> dict[str, set[tuple]]:
    return {t: rows(path, t) for t in TABLES}


def pages_of(path: Path, table: str, kind: str) -> list[tuple[int, int, str]]:
    """(page, cells, path in the tree) of a table's pages of one kind (leaf, internal, overflow)."""
    with no_checkpoint(path) as c:
        return c.execute("SELECT pageno, ncell, path FROM dbstat WHERE name = ? AND pagetype = ? "
                         "ORDER BY pageno", (table, kind)).fetchall()


def wal_pages(path: Path) -> set[int]:
    """Pages with a frame in the -wal (damage to the main file's copy is not seen)."""
    wal = Path(f"{path}-wal")
    if not wal.exists():
        return set()
    data = wal.read_bytes()
    size = int.from_bytes(data[8:12], "big")
    return {int.from_bytes(data[at:at + 4], "big") for at in range(32, len(data) - 24, 24 + size)}


def table_leaf_rows(path: Path) -> dict[int, int]:
    """page -> rows of every table leaf page (index pages hold no rows of their own)."""
    with no_checkpoint(path) as c:
        names = {n for (n,) in c.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        return {p: n for p, n, name in c.execute(
            "SELECT pageno, ncell, name FROM dbstat WHERE pagetype = 'leaf'") if name in names}


def overflow_owners(path: Path) -> set[int]:
    with no_checkpoint(path) as c:
        return {p for (p,) in c.execute("SELECT pageno FROM dbstat WHERE pagetype = 'overflow'")}


def damage(path: Path, page: int, fill: bytes | None = None, size: int = 4096) -> None:
    """Overwrite one page with random bytes (or `fill`), as a bad disk does."""
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(fill * size if fill else random.Random(page).randbytes(size))
