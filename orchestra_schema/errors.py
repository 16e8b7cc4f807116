"""One exception family; each class carries the exit code the CLI returns.

Messages say what failed, where, and what to do, in one line.
"""


class OrchestraError(Exception):
    exit_code = 1


class CheckFailed(OrchestraError):
    """A check found problems (verify, checklist)."""

    exit_code = 1


class UsageError(OrchestraError):
    """Bad arguments or a bad sql directory."""

    exit_code = 2


class Busy(OrchestraError):
    """The database stayed locked past --timeout, or another run changed the history meanwhile."""

    exit_code = 3


class MigrationFailed(OrchestraError):
    """A migration failed; its transaction was rolled back."""

    exit_code = 4


class Refused(OrchestraError):
    """Refused as unsafe; nothing was changed."""

    exit_code = 5


class DatabaseUnavailable(OrchestraError):
    """The database is missing, unreadable or not SQLite."""

    exit_code = 6


class DatabaseCorrupt(DatabaseUnavailable):
    """SQLite found the file damaged or not a database (not missing, locked or forbidden)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason  # SQLite's own words, for reports that quote them


EXIT_CODES = {
    0: "done",
    1: "a check found problems",
    2: "usage error (bad option, unknown migration id, bad sql directory)",
    3: "busy: the database stayed locked past --timeout, or another run changed the history",
    4: "a migration failed and was rolled back",
    5: "refused as unsafe (nothing changed)",
    6: "database missing, unreadable, corrupt or not SQLite, or a file cannot be written",
}
