"""The copy-to group: an orchestra.db into PostgreSQL, orchestra-schema beside pgloader.

    python bench/copy_to.py [--size-mb 1200] [--reps 3]

Same source for everyone: the cached ef.db of bench/build.py (1200 MB holds about 2
million chat messages; --size-mb 246 about 400,000). A throwaway PostgreSQL 15 cluster
(tests/pgserver.py: initdb in a temp dir, fsync off, the same for every contender), a
fresh empty database per trial, the source and the floors' files read whole before it
(page cache warm). Contenders, as real processes alternating A B C, timed from spawn to
exit, with peak memory (GNU time's RSS, or the summed PSS of a process tree if larger):

- orchestra-schema copy-to (reference): the migrations, both histories, every row
  converted, keys and indexes, the proof; `--truncate-long-text`, since the generated
  agent replies, like real ones, sometimes pass ChatMessages.Content's 4000 characters;
- pgloader with its defaults (Debian's pgloader): its own schema (lower-cased names,
  text for GUIDs and dates), Hangfire's tables too, no history; and pgloader reading
  fewer rows ahead (`--with 'prefetch rows = 10000'`), which still finishes where its
  defaults run out of heap (about 2 million messages); the target compares with the
  faster of the two that finished;
- the floor: psql running, in one transaction, the migration files and a COPY of each
  table from a server-side file holding exactly the rows copy-to sent (made untimed);
- the server's share of copy-to: psql running, in one transaction, copy-to's own
  statements (settings, migrations, keys and indexes dropped, COPY from those rows in
  binary format, as copy-to sends them, keys rebuilt, the proof's queries): what the
  server must do whatever the client.

Each trial is checked untimed: ChatMessages holds every source row; a failed trial is
left out of the median and counted in the table. Prints a markdown table; --output writes it (default: bench/.cache/copy-to-SIZE.md, not committed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import apsw  # noqa: E402

from build import CACHE, ensure_built  # noqa: E402
from contenders import Run, program, run_timed, warm  # noqa: E402
from pgserver import ADMIN_PASSWORD, Cluster  # noqa: E402

SQL = HERE.parent / "sql" / "postgresql"
TARGET = ("copy-to <= 0.5x pgloader's wall time (its fastest variant that finished); peak "
          "memory < 100 MB")
# pgloader's defaults run out of heap at about 2 million chat messages (its SBCL heap size
# is fixed when it is built); reading fewer rows ahead is the documented way around it.
PGLOADER_BOUNDED = "prefetch rows = 10000"
SERVER_SHARE = ("server's share of copy-to: psql -1, its statements with rows from files "
                "(keys dropped, COPY, keys rebuilt, proof)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=1200)
    p.add_argument("--reps", type=int, default=3, help="timed trials per contender (default 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--output", type=Path)
    return p.parse_args(argv)


class Bench:
    def __init__(self, cluster: Cluster, source: Path, dumps: Path):
        self.cluster, self.source, self.dumps = cluster, source, dumps
        self.messages = _count(source, "ChatMessages")
        self.trial = 0

    def url(self, db: str, admin: bool = False) -> str:
        from pgserver import PASSWORD, USER
        from urllib.parse import quote
        user, password = ("postgres", ADMIN_PASSWORD) if admin else (USER, PASSWORD)
        return (f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:"
                f"{self.cluster.port}/{db}")

    def warm(self) -> None:
        """Every trial starts with the source and the floors' files in the page cache."""
        for path in [self.source, *sorted(self.dumps.glob("*.copy*"))]:
            warm(path)

    def fresh(self):
        self.trial += 1
        return self.cluster.new_database(f"bench{self.trial}_")

    def copy_to(self) -> Run:
        db = self.fresh()
        exe = program("orchestra-schema")
        run = run_timed([exe, "-q", "--database", str(self.source), "copy-to", self.url(db.name),
                         "--truncate-long-text"])
        return self._checked(run, db, '"ChatMessages"')

    def pgloader(self, *options: str) -> Run:
        db = self.fresh()
        run = run_timed(["pgloader", *options, f"sqlite://{self.source}",
                         self.url(db.name, admin=True)])
        return self._checked(run, db, "chatmessages")

    def pgloader_bounded(self) -> Run:
        """pgloader as a DBA reruns it after "Heap exhausted": fewer rows read ahead."""
        return self.pgloader("--with", PGLOADER_BOUNDED)

    def floor(self, script_name: str = "floor.sql") -> Run:
        db = self.fresh()
        script = self.dumps / script_name
        run = run_timed(["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(script),
                         self.url(db.name, admin=True)])
        return self._checked(run, db, '"ChatMessages"')

    def server_share(self) -> Run:
        return self.floor("server.sql")

    def _checked(self, run: Run, db, table: str) -> Run:
        try:
            if run.ok:
                import psycopg
                with psycopg.connect(self.url(db.name, admin=True)) as conn:
                    found = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                if found != self.messages:
                    run = Run(run.seconds, run.max_rss_kb, False,
                              f"{found} chat messages, not {self.messages}")
        finally:
            self.cluster.drop_database(db)
        return run

    def prepare_floor(self) -> None:
        """Untimed: copy-to once, then each table's rows into a server-side file, and a psql
        script that makes the schema and COPYs the files back in."""
        db = self.fresh()
        exe = program("orchestra-schema")
        run = run_timed([exe, "-q", "--database", str(self.source), "copy-to", self.url(db.name),
                         "--truncate-long-text"])
        if not run.ok:
            raise SystemExit(f"copy-to failed while preparing the floor: {run.error}")
        self.dumps.mkdir(exist_ok=True)
        os.chmod(self.dumps, 0o777)
        lines = [SQL.joinpath(f).read_text() for f in sorted(os.listdir(SQL))
                 if not f.endswith(".rollback.sql")]
        tables = [r[0] for r in db.rows(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
            "'public'::regnamespace AND relname NOT LIKE '\\_%' AND relname NOT LIKE 'yoyo%' "
            "ORDER BY oid")]  # creation order: parents before children
        for table in tables:  # text for the floor; binary, as copy-to sends, for its share
            path = self.dumps / f"{table}.copy"
            self.cluster.admin(f"COPY \"{table}\" TO '{path}'", dbname=db.name)
            self.cluster.admin(f"COPY \"{table}\" TO '{path}.bin' (FORMAT binary)", dbname=db.name)
        copies = [f"COPY \"{t}\" FROM '{self.dumps / f'{t}.copy'}';" for t in tables]
        binary = [f"COPY \"{t}\" FROM '{self.dumps / f'{t}.copy.bin'}' (FORMAT binary);"
                  for t in tables]
        (self.dumps / "floor.sql").write_text("\n".join(lines + copies))
        (self.dumps / "server.sql").write_text(
            "\n".join(self._server_share(db, tables, lines, binary)))
        self.cluster.drop_database(db)

    def _server_share(self, db, tables: list[str], migrations: list[str],
                      copies: list[str]) -> list[str]:
        """copy-to's statements on the server, with the rows from files: its settings, the
        migrations, keys and indexes dropped, COPY, keys rebuilt, the proof's queries."""
        from orchestra_schema.copy_to import transfer as copy_to
        from orchestra_schema.address import parse
        from orchestra_schema.engines.postgresql.driver import PgDriver
        with PgDriver.connect(parse(self.url(db.name)), timeout=30) as driver:
            conn = driver.conn
            source = apsw.Connection(str(self.source), flags=apsw.SQLITE_OPEN_READONLY)
            in_source = {r[0] for r in source.execute("SELECT name FROM sqlite_schema")}
            source.close()
            tables = [t for t in tables if t in in_source]  # what copy-to copies
            keys = copy_to.key_plan(driver, tables)
            proofs = [copy_to.proof_sql(driver, t, copy_to._target_columns(driver, t))
                      for t in tables]
            text = [s.as_string(conn) + ";" for s in [*keys.drops(), *keys.rebuilds(), *proofs]]
        drops, rebuilds, proofs = (text[:len(keys.drops())],
                                   text[len(keys.drops()):-len(proofs)], text[-len(proofs):])
        settings = [f"SET LOCAL {s};" for s in copy_to.SETTINGS] + [
            "SET LOCAL default_toast_compression = 'lz4';"]
        return settings + migrations + drops + copies + rebuilds + proofs


def _machine() -> str:
    import report  # bench/report.py: the CPU as every result names it
    return f"{report._cpu()}, SHA extensions: {report._sha_extensions()}"


def _count(path: Path, table: str) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    finally:
        conn.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    exe = program("orchestra-schema")
    built = ensure_built(args.size_mb, [exe], say=lambda m: print(m, file=sys.stderr))
    cluster = Cluster()
    try:
        cluster.start()
        bench = Bench(cluster, built.ef, cluster.dir / "dumps")  # the server writes them
        bench.prepare_floor()
        contenders = {"orchestra-schema copy-to (reference)": bench.copy_to,
                      "pgloader (defaults)": bench.pgloader,
                      f"pgloader --with '{PGLOADER_BOUNDED}'": bench.pgloader_bounded,
                      "floor: psql -1, migrations + COPY from files": bench.floor,
                      SERVER_SHARE: bench.server_share}
        runs: dict[str, list[Run]] = {name: [] for name in contenders}
        for round_ in range(args.warmup + args.reps):
            for name, contender in contenders.items():
                bench.warm()
                r = contender()
                print(f"  {name}: {r.seconds:.2f} s, {r.max_rss_kb} KB{'' if r.ok else ' FAILED ' + r.error}",
                      file=sys.stderr, flush=True)
                if round_ >= args.warmup:
                    runs[name].append(r)
    finally:
        cluster.stop()
    text = render(args, built, bench.messages, runs)
    output = args.output or CACHE / f"copy-to-{args.size_mb}.md"
    output.write_text(text)
    print(text)


def render(args, built, messages: int, runs: dict[str, list[Run]]) -> str:
    load = os.getloadavg()[0]
    lines = [f"### copy-to: {built.info['ef_bytes'] // 2**20} MB orchestra.db, {messages:,} chat "
             f"messages ({args.reps} trials after {args.warmup} warm-up; load average "
             f"{load:.1f} at the end; {os.cpu_count()} cores, {_machine()})", "",
             "| Contender | Median (s) | Range (s) | vs reference | Peak memory (MB) | OK |",
             "|---|---:|---:|---:|---:|---|"]
    ok_runs = {n: [r for r in rs if r.ok] for n, rs in runs.items()}
    medians = {n: statistics.median(r.seconds for r in rs) for n, rs in ok_runs.items() if rs}
    reference = medians.get(next(iter(runs)))
    for name, rs in runs.items():
        times = [r.seconds for r in ok_runs[name]]
        rss = max((r.max_rss_kb or 0) for r in rs) / 1024
        failed = [r.error for r in rs if not r.ok]
        ok = "yes" if not failed else f"{len(failed)} of {len(rs)} failed: {failed[0]}"
        if not times:
            lines.append(f"| {name} | - | - | - | {rss:.1f} | {ok} |")
            continue
        ratio = f"{medians[name] / reference:.2f}x" if reference else "-"
        lines.append(f"| {name} | {medians[name]:.2f} | {min(times):.2f}-{max(times):.2f} | "
                     f"{ratio} | {rss:.1f} | {ok} |")
    reference_name, *others = list(runs)
    loaders = [n for n in others if n.startswith("pgloader") and n in medians]
    if reference_name not in medians or not loaders:
        return "\n".join(lines) + "\n\nTarget: not measurable (a contender never finished).\n"
    fastest = min(loaders, key=medians.get)
    ratio = medians[reference_name] / medians[fastest]
    rss = max((r.max_rss_kb or 0) for r in runs[reference_name]) / 1024
    lines += ["", f"Target: {TARGET}: {ratio:.2f}x {fastest}, {rss:.1f} MB: "
                  f"{'met' if ratio <= 0.5 and rss < 100 else 'NOT met'}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
