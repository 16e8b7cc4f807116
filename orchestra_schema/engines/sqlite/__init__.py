"""SQLite behind the seam: apsw connections, online backups, the page reader and salvage."""
