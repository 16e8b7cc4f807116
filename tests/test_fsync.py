"""Durability: a file is synced, then given its name, then its directory is synced.

A spy wraps os.fsync/os.fdatasync/os.link/os.rename/os.replace in this process
and records, for each, the file it touched and that file's size and mtime at
that moment. A name given to a file whose last change was never synced, or a
directory not synced after the name appeared, survives a power cut as an empty
or missing file, and no other test can see that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backup_helpers import READ_HOLDER, add_pairs, backup_json, spawn
from helpers import cli, connect


def _real(path) -> str:
    return os.path.realpath(os.fspath(path))


def _state(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


class Spy:
    """Every sync and name change of this process, in order: (op, path, state[, target])."""

    def __init__(self, monkeypatch):
        self.events: list[tuple] = []
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._sync(getattr(os, name)))
        for name in ("link", "rename", "replace"):
            monkeypatch.setattr(os, name, self._naming(name, getattr(os, name)))

    def _sync(self, real):
        def sync(fd):
            real(fd)  # recorded only once it returned: the data is on disk now
            self.events.append(("sync", _real(os.readlink(f"/proc/self/fd/{fd}")), _state(os.fstat(fd))))
        return sync

    def _naming(self, op, real):
        def naming(src, dst, *args, **kwargs):
            state = _state(os.stat(src)) if os.path.isfile(src) else None
            result = real(src, dst, *args, **kwargs)
            self.events.append((op, _real(src), state, _real(dst)))
            return result
        return naming

    def assert_published_durably(self, final: Path, written_here: bool = True) -> None:
        """final got its name from a file synced in its last state, then its directory was synced.

        written_here=False: a second name for a file SQLite wrote and synced itself.
        """
        final = _real(final)
        named = [i for i, e in enumerate(self.events) if e[0] != "sync" and e[3] == final]
        assert named, f"{final}: never given its name by link, rename or replace"
        i = named[-1]
        _, source, state, _ = self.events[i]
        assert not written_here or ("sync", source, state) in self.events[:i], \
            f"{Path(final).name}: named before its last change was synced: {self._show(source)}"
        assert ("sync", os.path.dirname(final)) in [e[:2] for e in self.events[i + 1:]], \
            f"{Path(final).name}: its directory was not synced after the name appeared"

    def _show(self, path) -> list:
        return [e for e in self.events if path in e]


pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")


def test_raw_backup_and_its_manifest_are_synced_then_named_then_the_directory(db, monkeypatch):
    spy = Spy(monkeypatch)
    out = backup_json(db)
    assert out["copy_mode"] == "raw"
    spy.assert_published_durably(out["path"])
    spy.assert_published_durably(out["manifest"])


def test_backup_through_sqlite_is_synced_then_named_then_the_directory(tmp_path, monkeypatch):
    db = tmp_path / "orchestra.db"
    add_pairs(db, 2_000, wal=True)
    holder = spawn(READ_HOLDER, db)  # an old snapshot: the file cannot be copied raw
    try:
        with connect(db) as c:
            c.execute("INSERT INTO pairs (half, pad) VALUES (1, x'00'), (2, x'00')")
        spy = Spy(monkeypatch)
        out = backup_json(db)
    finally:
        holder.communicate("\n", timeout=30)
    assert out["copy_mode"] == "snapshot"
    spy.assert_published_durably(out["path"])
    spy.assert_published_durably(out["manifest"])


def test_recovered_database_is_synced_before_it_replaces_the_live_one(db, monkeypatch):
    spy = Spy(monkeypatch)
    result = cli("--database", db, "--json", "recover", "--yes")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    spy.assert_published_durably(db)
    spy.assert_published_durably(out["backup"], written_here=False)  # the old file's second name
