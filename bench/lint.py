"""The lint group: `orchestra-schema lint` on big migrations beside the sqlite3 shell reading
the same statements, and `apply` beside `apply --no-lint`.

    python bench/lint.py [--sizes 1 10 50] [--reps 3] [--apply-size 50] [--apply-reps 2]

Two kinds of migration, written once per size into bench/.cache/lint/ (seeded), each on top of
the shipped SQLite migrations (sql/sqlite) with a rollback:

- data: a data migration of chat rows, INSERT INTO "ChatSessions" / "ChatMessages" one row
  per statement, message sizes as bench/build.py makes them (short prompts, long-tailed agent
  replies); its rollback deletes them;
- ddl: table rebuilds as EF Core writes them for SQLite (new table, a trigger BEGIN ... END,
  copy, drop, rename, index), all on one table (a growing schema makes SQLite itself slower per
  CREATE: 1 MB of new tables takes the shell 4 s); its rollback drops the table.

Contenders, as real processes alternating A B C, timed from spawn to exit, with peak RSS (GNU
time): `orchestra-schema lint` (all of it: the split, every rule, the round-trip replay in
memory: forward, rollback, and forward again only when the rollback did not give back every
row), and the floor, the sqlite3 shell reading every forward
file into `:memory:` (`.read`): parsing and running each statement once. Target: lint <= 2x
the floor at every size, peak memory flat (per MB of file). Then, at --apply-size, the data
migration applied to a new database by `apply` and by `apply --no-lint` (both split the file
once, with sqlsplit; apply's lint replays the schema, not the rows it runs next): lint's
share <= 10%.
Prints a markdown table; written to bench/results/lint.md (or --output).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build import CACHE, Rows  # noqa: E402
from contenders import Run, program, run_timed, warm  # noqa: E402

SQL = HERE.parent / "sql" / "sqlite"
WORK = CACHE / "lint"
DEPENDS = "20250922204129_AddChatTables"
ID = "20251201000000_Seed"
TARGET = "lint <= 2x the sqlite3 floor at every size; apply <= 1.1x apply --no-lint"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50], help="MB of migration")
    p.add_argument("--reps", type=int, default=3, help="timed trials per contender (default 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--apply-size", type=int, default=50, help="0: no apply group")
    p.add_argument("--apply-reps", type=int, default=2)
    p.add_argument("--output", type=Path, default=HERE / "results" / "lint.md")
    return p.parse_args(argv)


def _quote(value) -> str:
    return "NULL" if value is None else str(value) if isinstance(value, int) else \
        "'" + str(value).replace("'", "''") + "'"


def data_sql(size_mb: int) -> tuple[str, str]:
    rows, out, size = Rows(max(1, size_mb * 3)), [], 0
    target = size_mb * 1_000_000
    for row in rows.chat_sessions():
        out.append('INSERT INTO "ChatSessions" ("Id", "UserId", "InstanceId", "Title", '
                   f'"CreatedAt", "LastMessageAt") VALUES ({", ".join(map(_quote, row))});\n')
    for row in rows.chat_messages():
        out.append('INSERT INTO "ChatMessages" ("Id", "SessionId", "Author", "Content", '
                   f'"MessageType", "CreatedAt", "Metadata") VALUES ({", ".join(map(_quote, row))});\n')
        size += len(out[-1])
        if size >= target:
            break
    forward = f"-- Seeds chat sessions and messages.\n-- depends: {DEPENDS}\n\n" + "".join(out)
    rollback = ("-- Removes the seeded chat rows.\n-- LOSES: every ChatMessages and ChatSessions "
                "row\n\nDELETE FROM \"ChatMessages\" WHERE 1;\nDELETE FROM \"ChatSessions\" "
                "WHERE 1;\n")
    return forward, rollback


def ddl_sql(size_mb: int) -> tuple[str, str]:
    """Table rebuilds as EF Core writes them for SQLite, one after another on the same table
    (the schema stays small: SQLite's own time per CREATE grows with the schema)."""
    cols = ('"Id" TEXT NOT NULL CONSTRAINT "PK_Work" PRIMARY KEY, "Name" TEXT NOT NULL, '
            '"Status" INTEGER NOT NULL DEFAULT 0, "CreatedAt" TEXT NOT NULL, "Owner" TEXT NULL')
    names = '"Id", "Name", "Status", "CreatedAt", "Owner"'
    column_lines = cols.replace(", ", ",\n    ")
    out = [f'CREATE TABLE "Work" ({cols});\nCREATE INDEX "IX_Work_Name" ON "Work" ("Name");\n']
    size, i = len(out[0]), 0
    while size < size_mb * 1_000_000:
        block = (f'CREATE TABLE "ef_temp_Work" (\n    {column_lines}\n);\n'
                 f'CREATE TRIGGER "TR_Work_Status" BEFORE INSERT ON "ef_temp_Work" BEGIN\n'
                 f'    SELECT RAISE(ABORT, \'rebuild {i}: negative status\') WHERE NEW."Status" < 0;'
                 f'\nEND;\n'
                 f'INSERT INTO "ef_temp_Work" ({names})\nSELECT {names}\nFROM "Work";\n'
                 f'DROP TRIGGER "TR_Work_Status";\nDROP TABLE "Work";\n'
                 f'ALTER TABLE "ef_temp_Work" RENAME TO "Work";\n'
                 f'CREATE INDEX "IX_Work_Name" ON "Work" ("Name");\n')
        out.append(block)
        size += len(block)
        i += 1
    forward = f"-- Creates Work and rebuilds it {i} times.\n-- depends: {DEPENDS}\n\n" + "".join(out)
    rollback = "-- Drops Work.\n-- LOSES: every row of Work\n\nDROP TABLE \"Work\";\n"
    return forward, rollback


def prepare(kind: str, size_mb: int) -> Path:
    """bench/.cache/lint/KIND-SIZE/: sql (the migrations) and floor.sql (every forward file)."""
    folder = WORK / f"{kind}-{size_mb}"
    sql = folder / "sql"
    if not (folder / "floor.sql").exists():
        shutil.rmtree(folder, ignore_errors=True)
        sql.mkdir(parents=True)
        for p in SQL.glob("*.sql"):
            shutil.copy(p, sql / p.name)
        forward, rollback = (data_sql if kind == "data" else ddl_sql)(size_mb)
        (sql / f"{ID}.sql").write_text(forward)
        (sql / f"{ID}.rollback.sql").write_text(rollback)
        forwards = sorted(p for p in sql.glob("*.sql") if not p.name.endswith(".rollback.sql"))
        (folder / "floor.sql").write_text("".join(p.read_text() for p in forwards))
    return folder


def lint_contenders(folder: Path) -> dict:
    exe, sqlite3 = program("orchestra-schema"), program("sqlite3")
    sql = folder / "sql"
    return {
        "orchestra-schema lint": lambda: run_timed([exe, "-q", "--sql-dir", str(sql), "lint"]),
        "floor: sqlite3 :memory: .read (reference)":
            lambda: run_timed([sqlite3, ":memory:", f".read {folder / 'floor.sql'}"]),
    }


def apply_contenders(folder: Path) -> dict:
    exe = program("orchestra-schema")
    db = folder / "applied.db"

    def apply(*extra: str):
        def run() -> Run:
            for p in folder.glob("applied.db*"):
                p.unlink()
            return run_timed([exe, "-q", "--database", str(db), "--sql-dir", str(folder / "sql"),
                              "apply", *extra])
        return run
    return {"orchestra-schema apply": apply(), "orchestra-schema apply --no-lint (reference)":
            apply("--no-lint")}


def measure(contenders: dict, files: list[Path], reps: int, warmup: int) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    for round_ in range(warmup + reps):
        for name, contender in contenders.items():
            for f in files:
                warm(f)
            r = contender()
            print(f"  {name}: {r.seconds:.2f} s, {r.max_rss_kb} KB"
                  f"{'' if r.ok else ' FAILED ' + r.error}", file=sys.stderr, flush=True)
            if round_ >= warmup:
                runs[name].append(r)
    return runs


def table(title: str, runs: dict[str, list[Run]], mb: float) -> tuple[list[str], float | None]:
    lines = [f"#### {title}", "", "| Contender | Median (s) | Range (s) | s per MB | vs reference "
             "| Peak RSS (MB) | OK |", "|---|---:|---:|---:|---:|---:|---|"]
    ok = {n: [r.seconds for r in rs if r.ok] for n, rs in runs.items()}
    medians = {n: statistics.median(t) for n, t in ok.items() if t}
    reference = medians.get(next(n for n in runs if "(reference)" in n))
    for name, rs in runs.items():
        rss = max((r.max_rss_kb or 0) for r in rs) / 1024
        failed = [r.error for r in rs if not r.ok]
        status = "yes" if not failed else f"{len(failed)} of {len(rs)} failed: {failed[0]}"
        if name not in medians:
            lines.append(f"| {name} | - | - | - | - | {rss:.1f} | {status} |")
            continue
        m, t = medians[name], ok[name]
        ratio = f"{m / reference:.2f}x" if reference else "-"
        lines.append(f"| {name} | {m:.2f} | {min(t):.2f}-{max(t):.2f} | {m / mb:.3f} | {ratio} "
                     f"| {rss:.1f} | {status} |")
    first = next(iter(runs))
    return lines + [""], (medians[first] / reference if first in medians and reference else None)


def main(argv=None) -> None:
    args = parse_args(argv)
    import report  # bench/report.py: the machine as every result names it
    if not program("sqlite3") or not program("orchestra-schema"):
        sys.exit("needs the sqlite3 shell and orchestra-schema installed (pip install .)")
    load_start = os.getloadavg()
    head = [f"### lint on big migrations ({args.reps} trials after {args.warmup} warm-up)", "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python bench/lint.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} cores "
            f"({report._cpu()}; flags: {_flags()}), {report._memory_gb()} GB RAM; Python "
            f"{platform.python_version()}, sqlite3 shell "
            f"{report._output([program('sqlite3'), '-version']).split(' ')[0]}, orchestra-schema @ "
            f"{report._git_commit()} ({report._install_kind()}); load average "
            f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at the start.", ""]
    body, verdicts = [], []
    for kind in ("data", "ddl"):
        for size in args.sizes:
            folder = prepare(kind, size)
            mb = (folder / "sql" / f"{ID}.sql").stat().st_size / 1e6
            runs = measure(lint_contenders(folder), [folder / "floor.sql"], args.reps, args.warmup)
            lines, ratio = table(f"lint, {kind} migration of {mb:.1f} MB", runs, mb)
            body += lines
            verdicts.append(f"lint, {kind}, {size} MB: {_ratio(ratio)} the floor "
                            f"({'met' if ratio is not None and ratio <= 2 else 'NOT met'})")
    if args.apply_size:
        folder = prepare("data", args.apply_size)
        mb = (folder / "sql" / f"{ID}.sql").stat().st_size / 1e6
        runs = measure(apply_contenders(folder), [], args.apply_reps, 0)
        lines, ratio = table(f"apply of the {mb:.1f} MB data migration to a new database", runs, mb)
        body += lines
        verdicts.append(f"apply vs apply --no-lint, {args.apply_size} MB: {_ratio(ratio)} "
                        f"({'met' if ratio is not None and ratio <= 1.1 else 'NOT met'})")
    load_end = os.getloadavg()
    text = "\n".join(head + body + [f"Target: {TARGET}.", ""] + [f"- {v}" for v in verdicts] + [
        "", f"Load average {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end "
        "(2 cores shared with other work: absolute times vary; ratios are taken within a round)."])
    args.output.write_text(text + "\n")
    print(text)


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _flags() -> str:
    """The CPU flags that change what these loops cost."""
    flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("flags")), "").split()
    return " ".join(f for f in ("avx2", "avx512f", "sse4_2", "bmi2", "sha_ni") if f in flags) or "-"


if __name__ == "__main__":
    main()
