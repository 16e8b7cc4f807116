"""The benchmark's markdown: the machine, then one table per group."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import apsw

from contenders import ROOT, program, shell_secure_delete

# A command's peak memory may grow this much from the smallest to the largest
# database: SQLite's default page cache is 2 MB per connection; the rest is
# allocator noise. Anything proportional to the data is far above it.
MEMORY_GROWTH_MB = 10
# `rehearse --memory` holds its snapshot in RAM: it grows with the data by design,
# which the issue asks to be said, with a disk mode offered (the default).
IN_MEMORY = "--memory"


def environment(tool, built, history: Path, history_note: str, args) -> dict:
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu(), "cores": os.cpu_count(), "memory_gb": _memory_gb(),
        "command": _command(), "sha_extensions": _sha_extensions(), "sha256_mb_s": _sha256_speed(),
        "digest": _digest(),
        "os": platform.platform(), "python": platform.python_version(),
        "apsw": apsw.apsw_version(), "apsw_sqlite": apsw.sqlite_lib_version(),
        "sqlite3_shell": _output([program("sqlite3") or "sqlite3", "-version"]).split(" ")[0],
        "yoyo": metadata.version("yoyo-migrations"),
        "orchestra_schema": metadata.version("orchestra-schema") + " @ " + _git_commit(),
        "install": _install_kind(),
        "size_mb": args.size_mb, "ef_mb": round(built.info["ef_bytes"] / 2**20),
        "history_mb": round(history.stat().st_size / 2**20),
        "chat_messages": built.info["rows"]["ChatMessages"],
        "history_database": history_note, "reps": args.reps, "warmup": args.warmup,
        "load_average": round(os.getloadavg()[0], 2),
        "shell_secure_delete": shell_secure_delete(),
    }


def _install_kind() -> str:
    """How the measured tool is installed: an editable install adds an import finder that
    costs every run about 16 ms of start-up, which users of `pip install .` never pay."""
    direct = metadata.distribution("orchestra-schema").read_text("direct_url.json")
    editable = bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))
    return "editable install" if editable else "installed with pip install ."


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _command() -> str:
    """How this run was started, with the environment that changes what it measures."""
    mask = os.environ.get("OPENSSL_ia32cap")
    return (f"OPENSSL_ia32cap='{mask}' " if mask else "") + " ".join(
        ["python", "bench/run.py", *sys.argv[1:]])


def _sha_extensions() -> str:
    """Whether the CPU has SHA extensions, and whether OpenSSL (hashlib) is told to ignore them."""
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), "")
    has = "sha_ni" in flags.split()
    masked = os.environ.get("OPENSSL_ia32cap")
    if has and masked:
        return f"yes (sha_ni), masked for OpenSSL by OPENSSL_ia32cap={masked}"
    return "yes (sha_ni)" if has else "no"


def _sha256_speed() -> int:
    """hashlib.sha256's speed here, MB/s: shows what the SHA extensions (or their mask) do."""
    data = bytes(64 << 20)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    return round(len(data) / (time.perf_counter() - start) / 1e6)


def _digest() -> str:
    """The digest the tool's backup manifests record."""
    try:
        from orchestra_schema.files.digest import ALGORITHM
    except ImportError:  # before the digest module: SHA-256
        return "sha256"
    return ALGORITHM


def _memory_gb() -> float:
    kib = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal
    return round(kib / 2**20, 1)


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "not installed"


def _git_commit() -> str:
    commit = _output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    return commit + ("+changes" if _output(["git", "status", "--porcelain", "--", "orchestra_schema"])
                     else "")


def load_sizes(folder: Path) -> dict[int, dict]:
    runs = {}
    for path in folder.glob("size-*.json"):
        data = json.loads(path.read_text())
        runs[data["env"]["size_mb"]] = data
    return dict(sorted(runs.items()))


def render(data: dict, sizes: dict[int, dict]) -> str:
    env = data["env"]
    out = [
        f"Measured {env['date_utc']} by `{env.get('command') or _default_command(env)}` on {env['cores']} cores ({env['cpu']}; SHA extensions: "
        f"{env.get('sha_extensions', 'not recorded')}; hashlib.sha256 "
        f"{env.get('sha256_mb_s', '?')} MB/s), {env['memory_gb']} GB RAM, "
        f"{env['os']}; Python {env['python']}, apsw {env['apsw']} (SQLite {env['apsw_sqlite']}), "
        f"sqlite3 shell {env['sqlite3_shell']}, yoyo {env['yoyo']}, orchestra-schema "
        f"{env['orchestra_schema']} ({env.get('install', 'install kind not recorded')}; backup "
        f"digest: {env.get('digest', 'sha256')}); load average "
        f"{env['load_average']} at the start.",
        "",
        f"Database: {env['chat_messages']:,} chat messages, core tables and Hangfire-like tables with "
        f"rows; {env['ef_mb']} MB as made by EF Core's script, {env['history_mb']} MB with the tool's "
        f"history ({env['history_database']}).",
        "",
        f"Every contender runs as a real process, timed from spawn to exit (startup included), "
        f"alternating A B C A B C for {env['warmup']} untimed and {env['reps']} timed rounds; "
        "page cache warm (the database file is read whole before every trial; a trial's fresh "
        "copy is fsynced first; outputs are removed and synced between trials). Each trial's "
        "result is checked untimed (a backup has every table with its rows, counted, a rollback dropped exactly the "
        "chat tables). Peak RSS is the command's max RSS "
        "(ru_maxrss from wait4, reported by GNU time `%M`, so the harness's own memory is not "
        "counted), the largest over the trials and over the commands of a contender.",
    ]
    if env["shell_secure_delete"]:
        out += ["", "Note: this machine's sqlite3 shell and Python sqlite3 module (so stock yoyo) use "
                "the system SQLite, built with SQLITE_SECURE_DELETE: dropping a table overwrites its "
                "pages with zeros. apsw's SQLite (the tool's) leaves freed pages as they were, so "
                "the dropped rows stay readable in the file's free pages until reused or VACUUM."]
    for name, group in data["groups"].items():
        out += ["", f"### {group['title']}", ""] + _group_table(group)
    if data.get("writer"):
        out += ["", "### Writer stall while a backup runs", ""] + _writer_table(data["writer"])
    if sizes:
        same, other = same_code(data, sizes)
        out += ["", "### Peak memory by database size", ""] + _memory_table(same)
        if other:
            out += ["", "Left out, measured on other code: " + ", ".join(
                f"{s} MB ({sizes[s]['env']['orchestra_schema']})" for s in other) + "."]
    return "\n".join(out) + "\n"


def _default_command(env: dict) -> str:  # runs recorded before "command" was
    return f"python bench/run.py --size-mb {env['size_mb']} --reps {env['reps']}"


def _met(value) -> str:
    return {True: "pass", False: "**FAIL**", None: "n/a"}[value]


def _mb(kib) -> str:
    return "" if kib is None else f"{kib / 1024:.1f}"


def _group_table(group: dict) -> list[str]:
    ref = group["reference"]
    medians = {r["name"]: r["median"] for r in group["contenders"] if r["median"] is not None}
    targets = {t["contender"]: t for t in group["targets"]}
    lines = ["| Contender | Median (s) | Range (s) | vs reference | Peak RSS (MB) | Target | Met | Note |",
             "|---|---:|---:|---:|---:|---|---|---|"]
    for r in group["contenders"]:
        name = f"{r['name']} (reference)" if r["name"] == ref else r["name"]
        target = targets.get(r["name"])
        t_text, t_met = (target["text"], _met(target["met"])) if target else ("", "")
        if r["missing"] or r["error"]:
            state = r["missing"] or f"FAILED: {r['error']}"
            lines.append(f"| {name} | {state} | | | | {t_text} | {t_met} | {r['note']} |")
            continue
        med = r["median"]
        ratio = f"{med / medians[ref]:.2f}x" if ref in medians else ""
        spread = f"{min(r['seconds']):.2f}-{max(r['seconds']):.2f}"
        lines.append(f"| {name} | {med:.2f} | {spread} | {ratio} | {_mb(r['max_rss_kb'])} "
                     f"| {t_text} | {t_met} | {r['note']} |")
    return lines


def _writer_table(w: dict) -> list[str]:
    target = w["target"]
    label = target["contender"] + (" (stand-in: no `orchestra-schema backup` yet)"
                                   if target["stand_in"] else "")
    lines = [f"A second process commits one small transaction every {w['pause_ms']:g} ms "
             "(BEGIN IMMEDIATE, one INSERT, COMMIT; 60 s busy timeout) while each backup runs; "
             "latency is from BEGIN to the end of COMMIT, for commits that overlap the backup's work "
             "(from its first open of the database to its exit; from its spawn where marked *). "
             f"Target: p99 < 20 ms in WAL for {label}: {_met(target['met'])}.", "",
             "| Journal mode | Backup running | Backup (s) | Commits | p50 (ms) | p99 (ms) | max (ms) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for mode, m in w["modes"].items():
        b = m["baseline"]
        if b:
            lines.append(f"| {mode} | none (writer alone) | | {b['commits']} | {b['p50_ms']:.1f} "
                         f"| {b['p99_ms']:.1f} | {b['max_ms']:.1f} |")
        for r in m["backups"]:
            if r.get("missing"):
                lines.append(f"| {mode} | {r['name']} | {r['missing']} | | | | |")
                continue
            took = f"{r['backup_seconds']:.2f}" + ("" if r["ok"] else f" ({r['error']})")
            s = r["stall"]
            stats = (f"{s['commits']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f}"
                     if s else "0 | | |")
            spawn = " *" if r.get("window_from") == "spawn" else ""
            lines.append(f"| {mode} | {r['name']}{spawn} | {took} | {stats} |")
    return lines


def same_code(data: dict, sizes: dict[int, dict]) -> tuple[dict[int, dict], list[int]]:
    """The runs measured on this run's commit (this run's size always), and the sizes left out.

    A tree with uncommitted changes ("+changes") matches no other run: its code is unknown.
    """
    commit = data["env"]["orchestra_schema"]
    size = data["env"]["size_mb"]
    same = {s: d for s, d in sizes.items() if s == size or (
        d["env"]["orchestra_schema"] == commit and not commit.endswith("+changes"))}
    same[size] = data
    return dict(sorted(same.items())), [s for s in sizes if s not in same]


def _memory_table(sizes: dict[int, dict]) -> list[str]:
    """Each command's peak RSS at every size measured; its growth from the smallest to the largest."""
    peaks: dict[str, dict[int, int]] = {}
    for size, data in sizes.items():
        for gname, group in data["groups"].items():
            for r in group["contenders"]:
                if r["max_rss_kb"] and not r["error"]:
                    peaks.setdefault(f"{gname}: {r['name']}", {})[size] = r["max_rss_kb"]
    cols = list(sizes)
    when = ", ".join(f"{s} MB on {sizes[s]['env']['date_utc'][:10]}" for s in cols)
    lines = [f"Sizes: {when}. Target for the tool's commands: growth <= {MEMORY_GROWTH_MB} MB "
             "(beyond SQLite's page cache, nothing may grow with the data).", "",
             "| Command | " + " | ".join(f"{s} MB db (MB)" for s in cols) + " | Growth (MB) | Met |",
             "|---|" + "---:|" * len(cols) + "---:|---|"]
    for name, by_size in sorted(peaks.items()):
        have = [s for s in cols if s in by_size]
        growth = (by_size[have[-1]] - by_size[have[0]]) / 1024 if len(have) > 1 else None
        met = "" if "orchestra-schema" not in name else _met(
            None if growth is None else growth <= MEMORY_GROWTH_MB)
        if IN_MEMORY in name:
            met = "grows by design (snapshot in RAM; the default rehearse is flat)"
        cells = " | ".join(_mb(by_size.get(s)) for s in cols)
        lines.append(f"| {name} | {cells} | {'' if growth is None else f'{growth:.0f}'} | {met} |")
    return lines
