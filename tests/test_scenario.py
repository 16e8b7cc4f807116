"""The DBA's whole procedure on the real orchestra.db EF Core made (tests/data), through the
real CLI as a process: every step exits 0, and EF Core's history is exactly what EF Core
would have written after each (its ids and ProductVersions), so the app's own
`dotnet ef database update` always agrees with what is there."""

from __future__ import annotations

import json
from pathlib import Path
import shutil

from helpers import CHAT, CORE, REAL_DB, ef_history, run

EF_ROW = {CHAT: "9.0.6"}  # as EF Core 9.0.6 wrote it upstream


def test_the_whole_procedure_on_a_database_ef_core_made(tmp_path):
    live, backups = tmp_path / "orchestra.db", tmp_path / "backups"
    shutil.copyfile(REAL_DB, live)
    backups.mkdir()
    assert ef_history(live) == EF_ROW

    def step(database, *args, ef_rows=EF_ROW):
        done = run("--database", database, "--backup-dir", backups, "--json", *args, timeout=120)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert ef_history(database) == ef_rows, args
        return json.loads(done.stdout) if done.stdout.strip() else None

    assert step(live, "adopt")["recorded"] == [CORE, CHAT]
    assert step(live, "verify")["ok"] is True
    assert step(live, "rehearse")["ok"] is True
    rolled = step(live, "rollback", "--to", CORE, "--yes", ef_rows={})
    assert rolled["rolled_back"] == [CHAT] and rolled["ef_history"] == [f"removed {CHAT}"]
    assert Path(rolled["backup"]).is_file()  # taken before the rollback
    assert step(live, "checklist", ef_rows={})["ok"] is True
    assert step(live, "apply")["ef_history"] == [f"added {CHAT} (ProductVersion 9.0.6)"]
    assert step(live, "verify")["ok"] is True
    backup = step(live, "backup")["path"]

    restored = tmp_path / "restored.db"
    restored.touch()  # an empty database
    step(restored, "restore", backup)
    assert step(restored, "verify")["ok"] is True
