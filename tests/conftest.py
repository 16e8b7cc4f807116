"""Fixtures: databases in tmp_path, the throwaway PostgreSQL cluster, unwritable directories."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import add_rows, build_ef_database, cli, connect, mounted_tmpfs

@pytest.fixture
def db(tmp_path) -> Path:
    """Path of a database with both migrations applied by the tool, and rows."""
    path = tmp_path / "orchestra.db"
    result = cli("--database", path, "apply")
    assert result.exit_code == 0, result.output
    with connect(path) as c:
        add_rows(c)
    return path


@pytest.fixture
def ef_db(tmp_path) -> Path:
    """An orchestra.db as EF Core made it (rows, a Hangfire table), adopted by the tool."""
    path = build_ef_database(tmp_path / "orchestra.db")
    result = cli("--database", path, "adopt")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the session (tests/pgserver.py)."""
    from pgserver import Cluster
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pgdb(pg_cluster):
    """A fresh, empty database of the session's cluster, owned by the test user."""
    database = pg_cluster.new_database()
    yield database
    pg_cluster.drop_database(database)


def pytest_terminal_summary(terminalreporter):
    """The fault-injection figures of this run (tests/faults.py), at the very end."""
    faults = sys.modules.get("faults")
    if faults is None or not faults.FIGURES:
        return
    terminalreporter.section("fault injection")
    for line in faults.figures_table():
        terminalreporter.write_line(line)


@pytest.fixture
def unwritable_dir(tmp_path):
    """make({name: text}) -> a directory holding those files that nobody can write, root
    included: as root a read-only tmpfs (permissions do not stop root), else mode 0500."""
    root, made = os.geteuid() == 0, []
    with contextlib.ExitStack() as undo:
        def make(contents=None) -> Path:
            d = tmp_path / f"unwritable{len(made)}"
            made.append(d)
            if root:
                undo.enter_context(mounted_tmpfs(d, "1m"))
            else:
                d.mkdir()
                undo.callback(d.chmod, 0o700)
            for name, text in (contents or {}).items():
                if isinstance(text, bytes):  # a database's bytes
                    (d / name).write_bytes(text)
                else:
                    (d / name).write_text(text)
            if root:
                subprocess.run(["mount", "-o", "remount,ro", d], check=True)
            else:
                for f in d.iterdir():
                    f.chmod(0o444)
                d.chmod(0o500)
            return d

        yield make
