"""A full disk under the live database: on a real small file system (a tmpfs), as root."""

import json
import os

import pytest

from helpers import connect, count, history, mounted_tmpfs, run

BIG_ROWS = 10_000  # of 1000 bytes: about 10 MB


@pytest.fixture
def disk(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "24m") as mount:
        yield mount


def fill(directory):
    """Take every free byte of directory's file system."""
    with open(directory / "filler", "wb") as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()


def sql_dir(tmp_path):
    """A first migration of about 10 MB, and a second that would need twice that again."""
    d = tmp_path / "sql"
    d.mkdir()
    (d / "0001_big.sql").write_text(
        "CREATE TABLE big(x);\n"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
        f"{BIG_ROWS}) INSERT INTO big SELECT randomblob(1000) FROM n;\n")
    (d / "0001_big.rollback.sql").write_text("DROP TABLE big;\n")
    (d / "0002_copy.sql").write_text(
        "-- depends: 0001_big\n"
        "CREATE TABLE big2 AS SELECT * FROM big;\n"
        "INSERT INTO big2 SELECT * FROM big;\n")
    (d / "0002_copy.rollback.sql").write_text("DROP TABLE big2;\n")
    return d


def test_a_migration_that_fills_the_disk_leaves_no_hot_journal(tmp_path, disk):
    sql, path = sql_dir(tmp_path), disk / "orchestra.db"
    assert run("--sql-dir", sql, "-d", path, "apply", "--to", "0001_big").returncode == 0
    size = path.stat().st_size
    result = run("--sql-dir", sql, "-d", path, "apply")
    assert result.returncode == 4, result.stderr
    assert "database or disk is full" in result.stderr
    # SQLite abandoned the transaction by itself; its journal and the grown file
    # were left for the next reader to undo. This run undid them before exiting.
    assert not (disk / "orchestra.db-journal").exists()
    assert path.stat().st_size == size
    assert history(path) == {"0001_big"} and count(path, "big") == BIG_ROWS


def test_backup_of_a_wal_database_on_a_full_disk_falls_back_and_names_the_live_disk(tmp_path, disk):
    path, out = disk / "orchestra.db", tmp_path / "out"
    out.mkdir()
    with connect(path) as app:  # the app keeps committing into the WAL, never checkpointing
        app.execute("PRAGMA journal_mode = WAL").fetchall()
        app.execute("PRAGMA wal_autocheckpoint = 0")
        app.execute("CREATE TABLE big(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                    "FROM n WHERE i < 3000) INSERT INTO big SELECT randomblob(1000) FROM n")
        fill(disk)  # a checkpoint needs room to grow the file by the WAL's pages
        result = run("-d", path, "--json", "backup", "--dir", out)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["copy_mode"] == "snapshot" and report["integrity"] == "ok"
        [warning] = report["warnings"]
        assert warning.startswith(f"{disk}: the live database's file system is full")
        assert f"warning: {disk}: the live database" in result.stderr
        assert str(out) not in warning and "error" not in result.stderr
        assert count(report["path"], "big") == 3000
        assert os.path.getsize(f"{path}-wal") > 0  # nothing was lost from the live WAL
