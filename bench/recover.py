"""recover side by side with a current sqlite3 shell's .recover, per damage case.

    python bench/recover.py [--size-mb 62] [--reps 1] [--cases WAL ...]   (62 MB: about 100k chat messages)

The shell is built here, never committed: `npm pack sqlite3` gives the
amalgamation npm's sqlite3 package ships (deps/sqlite-autoconf-*.tar.gz);
shell.c + sqlite3.c are compiled with -DSQLITE_ENABLE_DBPAGE_VTAB (which
.recover needs) into bench/.cache/sqlite3-shell/. Each case damages a fresh
copy of the cached database (made by `orchestra-schema apply`, rows from
build.py) in one journal mode; both tools run as real processes, timed from
spawn to exit. Counted afterwards, untimed: rows placed (rows identical, rowid
and every value, to a row of the same table in the undamaged database) and
rows left in lost_and_found. The table goes to stdout and bench/.cache/recover.md.

The WAL cases (WAL mode only) leave COMMITS transactions in the -wal (each
updates about 1 in 50 chat messages, spread over the table's leaves), then
damage one frame of the third of them or the WAL header; SQLite ignores every
commit after it. Rows count as placed only in their newest committed version
(the other cases run on the database without them, its -wal checkpointed).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import apsw  # noqa: E402
import struct  # noqa: E402

from build import CACHE, ensure_built, fresh_copy, remove_db  # noqa: E402
from contenders import Tool, run_timed  # noqa: E402

SHELL_DIR = CACHE / "sqlite3-shell"
WORK = CACHE / "recover-work"
CASES = ["page 1 zeroed", "page 1 random bytes", "magic header", "ChatMessages root page", "ChatMessages interior page",
         "ChatMessages leaf page", "overflow page of a long message", "file cut to 2/3"]
WAL_CASES = ["WAL: one bit of a frame's page", "WAL: two bits of a frame's page", "WAL: a frame's salt",
             "WAL: a frame's page number", "WAL: the header's salt"]
COMMITS = 6


def build_shell(say=print) -> Path:
    """sqlite3 built from the amalgamation npm's sqlite3 package ships (cached)."""
    shell = SHELL_DIR / "sqlite3"
    if shell.exists():
        return shell
    SHELL_DIR.mkdir(parents=True, exist_ok=True)
    say("building the sqlite3 shell from `npm pack sqlite3` (once; cached) ...")
    subprocess.run(["npm", "pack", "sqlite3", "--silent"], cwd=SHELL_DIR, check=True,
                   stdout=subprocess.DEVNULL)
    with tarfile.open(next(SHELL_DIR.glob("sqlite3-*.tgz"))) as tgz:
        tgz.extractall(SHELL_DIR, filter="data")
    autoconf = next(SHELL_DIR.glob("package/deps/sqlite-autoconf-*.tar.gz"))
    with tarfile.open(autoconf) as tgz:
        tgz.extractall(SHELL_DIR, filter="data")
    src = Path(glob.glob(str(SHELL_DIR / "sqlite-autoconf-*"))[0])
    subprocess.run(["gcc", "-O2", "-DSQLITE_ENABLE_DBPAGE_VTAB", "-DSQLITE_THREADSAFE=0",
                    "-o", str(shell), str(src / "shell.c"), str(src / "sqlite3.c"), "-lm"],
                   check=True)
    return shell


def shell_version(shell: Path) -> str:
    return subprocess.run([str(shell), "--version"], capture_output=True, text=True).stdout.split()[0]


def pages(db: Path, sql: str, *args) -> list[int]:
    c = apsw.Connection(str(db))
    try:
        return [r[0] for r in c.execute(sql, args)]
    finally:
        c.close()


def damage(db: Path, case: str, rng: random.Random) -> None:
    chat = "SELECT pageno FROM dbstat WHERE name = 'ChatMessages' AND pagetype = ? ORDER BY pageno"
    if case == "file cut to 2/3":
        os.truncate(db, db.stat().st_size * 2 // 3)
        return
    if case == "magic header":
        with open(db, "r+b") as f:
            f.write(b"\x00" * 16)
        return
    if case.startswith("page 1"):
        page = 1
    elif case == "ChatMessages root page":
        page = pages(db, "SELECT rootpage FROM sqlite_schema WHERE name = 'ChatMessages'")[0]
    elif case == "ChatMessages interior page":
        deep = pages(db, "SELECT pageno FROM dbstat WHERE name = 'ChatMessages' AND "
                     "pagetype = 'internal' AND length(path) > 4 ORDER BY pageno")
        page = deep[len(deep) // 2]
    elif case == "ChatMessages leaf page":
        leaves = pages(db, chat, "leaf")
        page = leaves[len(leaves) // 2]
    else:
        overflow = pages(db, chat, "overflow")
        page = overflow[len(overflow) // 2]
    size = int.from_bytes(db.read_bytes()[16:18], "big")
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\x00" * size if case.endswith("zeroed") else rng.randbytes(size))


def wal_commits(db: Path) -> None:
    """COMMITS transactions left in db's -wal (the connection closes without checkpointing)."""
    c = apsw.Connection(str(db))
    c.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    try:
        c.execute("PRAGMA wal_autocheckpoint = 0")
        for t in range(COMMITS):
            with c:
                c.execute("UPDATE ChatMessages SET Content = Content || ? WHERE rowid % 50 = ?",
                          (f" (edited {t})", t))
    finally:
        c.close()


def folded(db: Path, target: Path) -> Path:
    """A copy of db with its -wal checkpointed in: what the damaged -wal's commits held."""
    fresh_copy(db, target)
    shutil.copyfile(f"{db}-wal", f"{target}-wal")
    c = apsw.Connection(str(target))
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    c.close()
    return target


def damage_wal(db: Path, case: str) -> None:
    """One frame of the third transaction in the -wal (a table leaf, not a commit frame), or its header."""
    data = bytearray(Path(f"{db}-wal").read_bytes())
    size = int.from_bytes(data[8:12], "big")
    frame = 24 + size
    headers = [struct.unpack_from(">II", data, 32 + i * frame) for i in range((len(data) - 32) // frame)]
    commits = [i for i, (_, commit) in enumerate(headers) if commit]
    at = next(i for i in range(commits[1] + 1, commits[2]) if data[32 + i * frame + 24] == 13)
    where = {"one bit": [24 + size - 100], "two bits": [24 + size - 100, 24 + size - 300],
             "salt": [9], "page number": [2]}
    if "header" in case:
        data[17] ^= 0x10
    else:
        for offset in next(w for k, w in where.items() if k in case):
            data[32 + at * frame + offset] ^= 0x10
    Path(f"{db}-wal").write_bytes(bytes(data))


def tally(original: Path, recovered: Path) -> tuple[int, int]:
    """(rows identical to a row of the same table in the original, rows in lost_and_found)."""
    c = apsw.Connection(str(recovered))
    try:
        c.execute("ATTACH ? AS orig", (str(original),))
        names = {n for (n,) in c.execute("SELECT name FROM orig.sqlite_schema WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")}
        mine = {n for (n,) in c.execute("SELECT name FROM main.sqlite_schema WHERE type = 'table'")}
        placed = 0
        for name in sorted(names & mine):
            q = '"' + name.replace('"', '""') + '"'
            placed += c.execute(f"SELECT count(*) FROM (SELECT rowid, * FROM main.{q} "
                                f"INTERSECT SELECT rowid, * FROM orig.{q})").fetchone()[0]
        lost_found = c.execute("SELECT count(*) FROM lost_and_found").fetchone()[0] \
            if "lost_and_found" in mine else 0
        return placed, lost_found
    finally:
        c.close()


def total_rows(db: Path) -> int:
    return tally(db, db)[0]


def _cpu() -> float:
    """CPU seconds of the processes waited for so far (a run's own work, whatever the load)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(size_mb: int, reps: int, say=print, only=None) -> str:
    tool = Tool()
    shell = build_shell(say)
    built = ensure_built(size_mb, [tool.exe], say=say)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    lines = []
    cases = [c for c in CASES + WAL_CASES if not only or any(o in c for o in only)]
    for mode in ("delete", "wal"):
        original = fresh_copy(built.tool, WORK / f"original-{mode}.db")
        c = apsw.Connection(str(original))
        c.execute(f"PRAGMA journal_mode = {mode}").fetchall()
        c.close()
        rows = total_rows(original)
        walled = reference = None
        if mode == "wal" and any(c in WAL_CASES for c in cases):
            walled = fresh_copy(original, WORK / "walled.db")
            wal_commits(walled)
            reference = folded(walled, WORK / "reference.db")
        for case in [c for c in cases if mode == "wal" or c not in WAL_CASES]:
            source, model = (walled, reference) if case in WAL_CASES else (original, original)
            in_all = total_rows(model)
            figures = {}
            for name in ("orchestra-schema recover", "sqlite3 .recover"):
                seconds, cpu = [], []
                for rep in range(reps):
                    (WORK / "trial").mkdir()
                    db = fresh_copy(source, WORK / "trial" / "orchestra.db")
                    if case in WAL_CASES:
                        shutil.copyfile(f"{source}-wal", f"{db}-wal")
                        damage_wal(db, case)
                    else:
                        damage(db, case, random.Random(rep))
                    out = WORK / "trial" / "recovered.db"
                    remove_db(out)
                    before = _cpu()
                    if name.startswith("orchestra"):
                        r = run_timed(tool.argv(db, "recover"))
                        result = db
                        ok = r.ok or r.error.startswith("exit 1")  # 1: recovered with gaps
                    else:
                        r = run_timed(["sh", "-c", f'"{shell}" "{db}" .recover | "{shell}" "{out}"'])
                        result, ok = out, r.ok
                    seconds.append(r.seconds)
                    cpu.append(_cpu() - before)
                    # our exit code is part of the result: 1 says rows are missing, 0 that none are
                    said = r.error if not ok else r.error.split(":")[0] if r.error else "exit 0"
                    figures[name] = (*tally(model, result), statistics.median(seconds),
                                     statistics.median(cpu),
                                     said if name.startswith("orchestra") or not ok else "")
                    shutil.rmtree(WORK / "trial")
            say(f"{mode} {case}: {figures}")
            for name, (placed, lost_found, secs, cpu_secs, error) in figures.items():
                lines.append(f"| {mode} | {case} | {name} | {placed:,} | {in_all - placed:,} | "
                             f"{lost_found:,} | {secs:.2f} | {cpu_secs:.2f} | {error} |")
        remove_db(original)
        for path in (walled, reference):
            if path:
                remove_db(path)
    header = [f"Database: {size_mb} MB made by `orchestra-schema apply` and bench/build.py "
              f"({built.info['rows']['ChatMessages']:,} chat messages, {rows:,} rows in all); "
              f"sqlite3 {shell_version(shell)} built from npm's sqlite3 package; "
              f"median of {reps} run(s); load average {os.getloadavg()[0]:.1f} at the end. "
              "seconds: wall clock from spawn to exit; CPU s: user + system time of the "
              "processes (the shell: both ends of its pipe).", "",
              "| journal | damage | tool | rows placed | rows not in their table | in lost_and_found "
              "| seconds | CPU s | exit / error |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    text = "\n".join(header + lines) + "\n"
    (CACHE / "recover.md").write_text(text)
    shutil.rmtree(WORK, ignore_errors=True)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=62, help="database size (62 MB: about 100k messages)")
    p.add_argument("--reps", type=int, default=1, help="timed runs per tool and case (default 1)")
    p.add_argument("--cases", nargs="+", metavar="WORD", help="only the cases whose name has a WORD")
    args = p.parse_args(argv)
    print(run(args.size_mb, args.reps, say=lambda m: print(m, file=sys.stderr, flush=True),
              only=args.cases))


if __name__ == "__main__":
    main()
