"""Benchmark orchestra-schema side by side with cp, the sqlite3 shell and stock yoyo.

    python bench/run.py [--size-mb 1200] [--reps 5] [--only GROUP ...]

Builds (once, cached in bench/.cache/) a realistic orchestra.db of about
--size-mb, then per group runs every contender as a real process, alternating
them (A B C A B C ...), and prints the medians, ratios to the group's reference,
peak memory and the issue's targets as a markdown table, also written to
bench/results/latest.md (and the raw numbers to bench/results/size-N.json).
Groups: backup rollback status verify rehearse writer (backup runs in both journal modes).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import apsw  # noqa: E402

import report  # noqa: E402
import writer  # noqa: E402
from build import CACHE, ensure_built, fresh_copy, remove_db  # noqa: E402
from contenders import Contender, Group, Paths, Run, Tool, groups, warm, writer_contenders  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = CACHE / "work"
TRIAL = WORK / "trial"  # a trial's copy and outputs; emptied after each trial
GROUPS = ["backup", "rollback", "status", "verify", "rehearse", "writer"]
ON_REQUEST = ["recover"]  # only with --only: bench/recover.py, its own table (about 100k messages)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=1200,
                   help="database size; 1200 MB holds about 2 million chat messages (default 1200)")
    p.add_argument("--reps", type=int, default=5, help="timed trials per contender (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--only", nargs="+", choices=GROUPS + ON_REQUEST, metavar="GROUP",
                   help=f"run only these groups: {' '.join(GROUPS + ON_REQUEST)}")
    p.add_argument("--writer-baseline", type=float, default=3.0,
                   help="seconds the writer runs alone before the backup starts (default 3)")
    p.add_argument("--writer-pause-ms", type=float, default=5.0,
                   help="pause between the writer's commits (default 5 ms)")
    p.add_argument("--stall-timeout", type=float, default=30.0,
                   help="kill a backup still running after this many seconds under writes (default 30)")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md",
                   help="markdown file to write; the raw numbers (size-N.json) go beside it "
                        "(default bench/results/latest.md)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.only and "recover" in args.only:
        import recover  # noqa: E402
        print(recover.run(args.size_mb, args.reps, say=_say))
        args.only = [g for g in args.only if g != "recover"]
        if not args.only:
            return
    tool = Tool()
    if not tool.exe:
        sys.exit("orchestra-schema is not installed in this Python's environment (pip install .)")
    compile_tool()
    built = ensure_built(args.size_mb, [tool.exe], say=_say)
    shutil.rmtree(WORK, ignore_errors=True)
    TRIAL.mkdir(parents=True)
    history, history_note = history_database(tool, built.ef, built.tool)
    sources = {"ef": built.ef, "ef-wal": wal_copy(built.ef), "history": history}
    selected = args.only or GROUPS
    results = {}
    for group in groups(tool):
        if group.name.split("-")[0] in selected:  # backup-wal is run with backup
            results[group.name] = run_group(group, sources[group.database], args)
    stall = run_writer(tool, built.ef, args) if "writer" in selected else None
    env = report.environment(tool, built, history, history_note, args)
    data = {"env": env, "groups": results, "writer": stall}
    folder = args.output.parent  # the raw numbers go beside the table
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"size-{args.size_mb}.json").write_text(json.dumps(data, indent=1))
    text = report.render(data, report.load_sizes(folder))
    args.output.write_text(text)
    print(text)
    shutil.rmtree(WORK, ignore_errors=True)


def compile_tool() -> None:
    """Write the tool's bytecode, as `pip install` does, so an editable install (or
    PYTHONDONTWRITEBYTECODE) does not make every run compile its sources again."""
    import orchestra_schema
    compileall.compile_dir(Path(orchestra_schema.__file__).parent, quiet=1)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def history_database(tool: Tool, ef: Path, made_by_apply: Path) -> tuple[Path, str]:
    """A database with the tool's yoyo history: the EF-made one adopted (made by `apply` where
    the tool measured has no `adopt`)."""
    if tool.missing("adopt"):
        return made_by_apply, "made by `orchestra-schema apply` on an empty file (no `adopt` yet)"
    adopted = fresh_copy(ef, WORK / "adopted.db")
    argv = tool.argv(adopted, "adopt") + (["--yes"] if tool.has_option("adopt", "--yes") else [])
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return adopted, "made by EF Core's script, then `orchestra-schema adopt`"


def wal_copy(source: Path) -> Path:
    """The same database in WAL mode, as the Orchestra API (Hangfire) leaves it."""
    db = fresh_copy(source, WORK / "wal.db")
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode = wal")
    conn.close()  # the last connection: the WAL is checkpointed and removed
    return db


def run_group(group: Group, cached: Path, args) -> dict:
    _say(f"{group.name}: {', '.join(c.name for c in group.contenders if not c.missing)}")
    # Trials work on a copy: the cache stays as built (stock yoyo, for one, adds its lock table).
    source = fresh_copy(cached, WORK / "group.db")
    usable = [c for c in group.contenders if not c.missing]
    runs: dict[str, list[Run]] = {c.name: [] for c in usable}
    errors: dict[str, str] = {}
    for round_ in range(args.warmup + args.reps):
        for c in usable:  # alternating: A B C A B C ...
            if c.name in errors:
                continue
            r = trial(c, source, group.fresh_copy)
            if not r.ok:
                errors[c.name] = r.error
                _say(f"  {c.name}: FAILED: {r.error}")
            elif round_ >= args.warmup:
                runs[c.name].append(r)
    remove_db(source)
    return summarize(group, runs, errors)


def trial(c: Contender, source: Path, fresh: bool) -> Run:
    """One run of c on the source (or on a fresh, flushed copy); outputs removed afterwards."""
    db = fresh_copy(source, TRIAL / "trial.db") if fresh else source
    warm(db)
    try:
        return c.run(Paths(db, TRIAL / "out.db"))
    finally:
        clear_trial()


def clear_trial() -> None:
    """Remove a trial's outputs (a backup's manifest too), flushed: the next trial must not
    pay for this one's dirty pages."""
    shutil.rmtree(TRIAL)
    TRIAL.mkdir()
    os.sync()


def summarize(group: Group, runs: dict[str, list[Run]], errors: dict[str, str]) -> dict:
    rows = []
    for c in group.contenders:
        done = runs.get(c.name, [])
        times = [r.seconds for r in done]
        rows.append({
            "name": c.name, "note": c.note, "missing": c.missing, "error": errors.get(c.name),
            "seconds": times,
            "median": statistics.median(times) if times and c.name not in errors else None,
            "max_rss_kb": max((r.max_rss_kb for r in done if r.max_rss_kb), default=None),
        })
    medians = {r["name"]: r["median"] for r in rows if r["median"] is not None}
    return {
        "title": group.title, "database": group.database, "reference": group.reference(),
        "contenders": rows,
        "targets": [{"contender": t.contender, "text": t.text, "met": t.check(medians)}
                    for t in group.targets],
    }


def run_writer(tool: Tool, source: Path, args) -> dict:
    """Per journal mode, each backup beside a committing writer, on one working copy."""
    contenders = writer_contenders(tool, args.stall_timeout)
    # The target is the tool's backup; where the tool measured has none, sqlite3 .backup stands in (labelled).
    target = contenders[1] if contenders[0].missing else contenders[0]
    modes = {}
    for mode in ("wal", "delete"):
        db = fresh_copy(source, WORK / f"stall-{mode}.db")
        conn = apsw.Connection(str(db))  # not `with`: that would be a transaction
        conn.execute(f"PRAGMA journal_mode = {mode}")
        conn.close()
        baseline, rows = [], []
        for c in contenders:
            if c.missing:
                rows.append({"name": c.name, "missing": c.missing})
                continue
            _say(f"writer ({mode}): {c.name}")
            warm(db)
            r = writer.measure(db, c, Paths(db, TRIAL / "out.db"), args.writer_baseline,
                               args.stall_timeout, args.writer_pause_ms)
            clear_trial()
            baseline += r.baseline
            stall = writer.Stall.of(r.during)
            rows.append({"name": c.name, "backup_seconds": r.backup.seconds, "ok": r.backup.ok,
                         "error": r.backup.error, "max_rss_kb": r.backup.max_rss_kb,
                         "stall": asdict(stall) if stall else None, "window_from": r.window_from})
        base = writer.Stall.of(baseline)
        modes[mode] = {"baseline": asdict(base) if base else None, "backups": rows}
        remove_db(db)
    wal_target = next(r for r in modes["wal"]["backups"] if r["name"] == target.name)
    finished = wal_target.get("ok") and wal_target.get("stall")
    met = wal_target["stall"]["p99_ms"] < 20 if finished else None
    return {"modes": modes, "pause_ms": args.writer_pause_ms, "target": {
        "contender": target.name, "stand_in": bool(contenders[0].missing),
        "text": "p99 < 20 ms in WAL", "met": met}}


if __name__ == "__main__":
    main()
