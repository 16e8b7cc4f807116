"""yoyo's history rows as both drivers write them: the log row and the migration's hash.

Imported only when a migration's transaction begins (yoyo_apsw, yoyo_pg), so the
commands that only read never import yoyo.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from yoyo.migrations import get_migration_hash


def log_data(migration, operation: str) -> dict:
    """yoyo's log row; yoyo's own calls socket.getfqdn(), which can hang on DNS at 3 a.m."""
    return {
        "id": str(uuid.uuid1()),
        "migration_id": migration.id if migration else None,
        "migration_hash": migration.hash if migration else None,
        "username": _username(),
        "hostname": socket.gethostname(),
        "created_at_utc": datetime.now(timezone.utc).replace(tzinfo=None),
        "operation": operation,
    }


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry for this uid in some containers
        return str(os.getuid())


@dataclass(frozen=True)
class YoyoRef:
    """What yoyo's mark/unmark/log SQL needs of a migration."""

    id: str

    @property
    def hash(self) -> str:
        return get_migration_hash(self.id)
