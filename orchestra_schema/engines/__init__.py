"""Database engines behind one seam (base.Driver): SQLite (apsw) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from .base import CHECKSUM_TABLE, HISTORY_TABLES, YOYO_TABLES, AppliedRecord, Driver, Engine


def of(engine: str) -> Engine:
    """The engine a command works on, by name (Context.engine): the commands ask it, never
    a module inside sqlite/ or postgresql/."""
    if engine == "postgresql":
        from .postgresql import PgEngine
        return PgEngine()
    from .sqlite import SqliteEngine
    return SqliteEngine()


def driver_of(db) -> Driver:
    """A Driver for db: itself, or the SQLite driver around an open Database."""
    if isinstance(db, Driver):
        return db
    from .sqlite.driver import SqliteDriver
    return SqliteDriver(db)


__all__ = ["CHECKSUM_TABLE", "HISTORY_TABLES", "YOYO_TABLES", "AppliedRecord", "Driver", "Engine", "driver_of",
           "of"]
