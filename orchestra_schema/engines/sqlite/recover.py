"""SQLite's recover: the rollback procedure's "If Database Corruption Occurs", automated.

A fresh database is built under a temporary name beside the damaged one: the
migrations the source had applied, then every table the source has (foreign
ones such as Hangfire's from their own CREATE statements), then its rows, from
a verified backup or salvaged from the damaged file itself (page by page,
salvage.py: SQLite never opens the damaged file for this). Only when the new
file passes integrity_check is the damaged one moved aside with its -wal/-shm
(orchestra.db.corrupted_TIMESTAMP) and the new one given its name by one
rename (staging.Staged.swap_in), so a crash at any moment leaves one or the
other at the live name, and the old one stays under the aside name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
from yoyo.migrations import default_migration_table

from . import pages, salvage, files as sqlitefile, wal
from ...files import staging
from .backup import health, trusted_backup
from .copying import Progress, integrity_of
from .database import Database, connect, open_immutable, quote, translated
from ..runner import HISTORY_TABLES, applied_migrations, apply_one
from ...errors import CheckFailed, DatabaseUnavailable, OrchestraError, Refused
from ...migrations import ancestors

if TYPE_CHECKING:
    from ...context import Context


@dataclass
class TableRecovery:
    table: str
    copied: int
    lost: int  # rows certainly lost (all of them when lost_exact)
    lost_exact: bool = True
    lost_at_most: int | None = 0  # an upper bound when not exact (None: none known)
    note: str = ""
    lost_and_found: int = 0  # rows of this table read but kept in lost_and_found (not lost)

    def lost_text(self) -> str:
        if self.lost_exact:
            return str(self.lost)
        if self.lost_at_most is not None:
            return f"{self.lost} to {self.lost_at_most}"
        return f"at least {self.lost}" if self.lost else "unknown"


def _unknown(table: str, note: str) -> TableRecovery:
    return TableRecovery(table, 0, 0, False, None, note)


@dataclass
class RecoverResult:
    database: Path
    source: Path  # the backup, or the damaged file where it now lies
    from_backup: bool
    live_integrity: str  # what the damaged database's quick_check said
    backup: Path | None = None  # the original, moved aside (its safety copy)
    moved_aside: list[Path] = field(default_factory=list)
    applied_migrations: list[str] = field(default_factory=list)
    tables: list[TableRecovery] = field(default_factory=list)
    rows_copied: int = 0
    rows_lost: int = 0  # certainly lost
    rows_lost_at_most: int | None = 0  # None: some table's loss has no upper bound
    foreign_key_violations: int = 0
    integrity: str = "not checked"
    warnings: list[str] = field(default_factory=list)
    rows_in_lost_and_found: int = 0  # read from the damaged file, kept in table lost_and_found
    incomplete: list[str] = field(default_factory=list)  # why this is not everything (exit 1)
    # committed -wal frames SQLite ignores, read from the file (wal.py): transactions, pages, summary
    wal_ignored: dict | None = None


def recover(ctx: Context, source: Path | None = None, yes: bool = False,
            progress: Progress | None = None) -> RecoverResult:
    """Rebuild ctx.database from `source` (a backup) or from what it still holds."""
    migrations = ctx.migrations()
    database = ctx.database
    if source is None and not database.exists():
        raise DatabaseUnavailable(f"{database}: not found, nothing to salvage; "
                                  "use --from BACKUP to rebuild it from a backup")
    live = health(ctx)
    ignored = wal.ignored(database) if source is None else wal.Walk()
    if live == "ok" and not ignored.transactions and not yes:
        raise Refused(f"{database}: passes its quick_check, nothing to recover; nothing changed; "
                      "use `restore BACKUP` to go back to a backup, or --yes to rebuild it anyway")
    if source is not None:
        trusted_backup(Path(source), database, "recover")
    staging.check_writable_dir(database.parent, "recovered database")
    sqlitefile.refuse_in_use(database, "recover")
    result = RecoverResult(database, Path(source or database), source is not None, live)
    result.wal_ignored = _wal_ignored(ignored)
    staging.clean_stale(database.parent)  # what killed runs left there
    with staging.Staged(database) as staged:
        with staging.writing(database.parent, "rebuilding the database"):
            _rebuild(ctx, staged.path, migrations, result, progress)
        if result.integrity != "ok":
            raise CheckFailed(f"{database}: the rebuilt copy failed its integrity_check "
                              f"({result.integrity}); nothing changed; report this as a bug")
        sqlitefile.refuse_in_use(database, "recover")  # again: the rebuild may have taken a while
        if database.exists():
            _swap_in(database, staged, result)
        else:
            staged.publish([database])
    return result


def _swap_in(database: Path, staged: staging.Staged, result: RecoverResult) -> None:
    staging.copy_owner_and_mode(database, staged.path)  # the application's user must open it
    kind = "pre-recover" if result.live_integrity == "ok" and not result.wal_ignored else "corrupted"
    aside = staging.aside_name(database, kind, datetime.now(timezone.utc))
    result.moved_aside = staged.swap_in(database, aside)
    result.backup = result.moved_aside[0]
    if not result.from_backup:
        result.source = result.backup


def _rebuild(ctx: Context, path: Path, migrations, result: RecoverResult, progress) -> None:
    fresh = Database.open(path, timeout=ctx.timeout)
    try:
        fresh.execute("PRAGMA synchronous = OFF")  # one fsync when it is published
        if result.from_backup or (result.live_integrity == "ok" and not result.wal_ignored):
            _rebuild_from_sqlite(ctx, fresh, migrations, result, progress)
        else:  # damaged, or the -wal holds commits SQLite ignores: read page by page
            _rebuild_from_pages(ctx, fresh, migrations, result, progress)
        _summarize(fresh, result)
        # The application chose the live file's journal mode; a backup's header may differ.
        model = result.database if result.database.exists() else result.source
        if sqlitefile.is_sqlite(model) and sqlitefile.journal_mode(model) == "wal":
            fresh.execute("PRAGMA journal_mode = WAL").fetchall()
    finally:
        fresh.close()


def _rebuild_from_sqlite(ctx: Context, fresh: Database, migrations, result: RecoverResult,
                         progress) -> None:
    """From a verified backup, or a live file that passes its quick_check."""
    src = _open_source(ctx, result)
    try:
        _copy_settings(src, fresh)
        result.applied_migrations = _apply(fresh, migrations, _source_history(src, result), result)
        schema = _source_schema(src, result)
        tables = [(name, sql) for kind, name, _, sql in schema
                  if kind == "table" and not name.startswith("sqlite_")]
        with _triggers_off(fresh), _indexes_after(fresh):
            for done, (name, sql) in enumerate(tables, 1):
                result.tables.append(_copy_table(src, fresh, name, sql, result))
                if progress:
                    progress(done, len(tables))
        _create_others(fresh, schema, result)
        _copy_sequences(_sequences(src), fresh)
    finally:
        src.close()


def _rebuild_from_pages(ctx: Context, fresh: Database, migrations, result: RecoverResult,
                        progress) -> None:
    """From the damaged file's pages (salvage.py): every row on a readable leaf page."""
    with pages.PageFile(ctx.database) as pf:
        with contextlib.suppress(apsw.Error):
            fresh.execute(f"PRAGMA page_size = {pf.page_size}")
        found = salvage.scan(pf, progress)
        _page_warnings(found, result)
        schema = [(r.type, r.name, r.tbl_name, r.sql) for r in found.schema]
        result.applied_migrations = _apply(fresh, migrations, _page_history(found, result), result)
        roots = {r.rootpage: r.name for r in found.schema if r.type == "table"}
        for name in roots.values():
            if not _create_table(fresh, name, dict((n, q) for _, n, _, q in schema).get(name), result):
                result.incomplete.append(f"{name}: not created, its rows are in lost_and_found")
        if not found.schema:
            result.incomplete.append("no sqlite_master record survived: which tables the file had "
                                     "is unknown; the migrations' tables were rebuilt")
        shapes = {t: salvage.shape_of(fresh.connection, t) for t in sorted(fresh.table_names())}
        shapes = {t: s for t, s in shapes.items() if s is not None}
        whole = {name for root, name in roots.items() if found.whole(root, table=True)}
        kept_history = {t for t in HISTORY_TABLES & set(roots.values()) if t not in whole}
        writer = salvage.Writer(fresh.connection, shapes)
        with _triggers_off(fresh), _indexes_after(fresh), fresh.connection:
            for name in set(roots.values()) & set(shapes) - kept_history:
                # The source's rows replace what the migrations inserted (see _copy_table).
                fresh.execute(f"DELETE FROM {quote(name)}")
            out = salvage.copy_rows(found, writer, roots, kept_history, progress)
            candidates = [t for t in shapes if t not in whole | HISTORY_TABLES | {salvage.LOST_AND_FOUND}
                          and (t in roots.values() or not found.schema_whole)]
            salvage.place_orphans(writer, out, candidates)
        by_name = {name: root for root, name in roots.items()}
        for table in sorted(set(roots.values()) - set(shapes) - {salvage.LOST_AND_FOUND}):
            if not table.startswith("sqlite_") and table in fresh.table_names():
                result.tables.append(_unknown(table, "WITHOUT ROWID or virtual: not salvaged"))
                result.incomplete.append(f"{table}: a WITHOUT ROWID or virtual table's rows are "
                                         "not salvaged from pages")
        for table in sorted(set(shapes) - {salvage.LOST_AND_FOUND}):
            if table in kept_history:
                result.tables.append(_unknown(table, "damaged; kept the history of the rebuild"))
            else:
                result.tables.append(_page_account(found, fresh, table, by_name.get(table), out, result))
        _lost_and_found(fresh, out, result)
        _create_others(fresh, schema, result)
        _copy_sequences(out.sequences, fresh)


def _open_source(ctx: Context, result: RecoverResult) -> Database:
    if result.from_backup:
        return Database(result.source, open_immutable(result.source), readonly=True)
    return Database.open(ctx.database, readonly=True, timeout=ctx.timeout)


def _page_warnings(found: salvage.Scan, result: RecoverResult) -> None:
    pf = found.pf
    _wal_read(pf.wal.walk, pf.path, result)
    if not pf.header.magic_ok:
        result.warnings.append(f"{pf.path}: its header does not say SQLite; read it as pages of "
                               f"{pf.page_size} bytes")
    elif pf.size_detected:
        result.warnings.append(f"{pf.path}: the header's page size is wrong; the pages parse as "
                               f"{pf.page_size} bytes")
    if not found.schema_whole:
        result.warnings.append(f"sqlite_master is damaged; its schema was rebuilt from "
                               f"{len(found.schema)} surviving record(s)")
    cut = sqlitefile.truncation(pf.path) if pf.header.magic_ok and not pf.size_detected else None
    if cut:  # the header's page count or page size says pages are missing
        result.warnings.append(f"{pf.path}: {cut}; the pages past its end are read as damaged ones")
        result.incomplete.append(f"the file is {cut}")
    if not found.freelist_known:
        result.warnings.append("the list of free pages is unreadable: rows of deleted pages may "
                               "be among the rows kept in lost_and_found")


def _wal_read(walk: wal.Walk, path: Path, result: RecoverResult) -> None:
    """Say which committed -wal frames SQLite ignores were read, and what stays lost."""
    result.wal_ignored = _wal_ignored(walk)
    lost = walk.lost_pages
    if lost:
        result.incomplete.append(
            f"{path}-wal: damaged frame(s) of page(s) {', '.join(map(str, lost))} (as their "
            "headers say) inside committed transactions, not replaced later: those pages were "
            "read as they were before, rows only the damaged frames held are lost")


def _wal_ignored(walk: wal.Walk) -> dict | None:
    if not walk.transactions:
        return None
    return {"transactions": walk.transactions, "pages": len(walk.ignored), "summary": walk.summary()}


def _page_history(found: salvage.Scan, result: RecoverResult) -> set[str] | None:
    """The ids in yoyo's history table, if its tree is intact; None: unknown."""
    row = next((r for r in found.schema if r.name == default_migration_table and r.sql), None)
    if row is None or not found.whole(row.rootpage, table=True):
        result.warnings.append("migration history unreadable in the damaged file; "
                               "applied every migration")
        return None
    memory = connect(Path(":memory:"))
    try:
        memory.execute(row.sql)
        column = salvage.shape_of(memory, default_migration_table).columns.index("migration_id")
    except (apsw.Error, ValueError):  # its CREATE statement is damaged too
        result.warnings.append("migration history's schema record damaged in the damaged file; "
                               "applied every migration")
        return None
    finally:
        memory.close()
    return {cell.values[column] for cell in found.tree_cells(row.rootpage)
            if cell is not None and len(cell.values) > column}


def _page_account(found: salvage.Scan, fresh: Database, table: str, root: int | None,
                  out: salvage.Salvaged, result: RecoverResult) -> TableRecovery:
    """Rows copied, and lost: exact where the tree or an intact index tells, else bounded or unknown."""
    copied, kept, bad = out.copied[table], out.kept[table], out.bad_cells[table]
    t = TableRecovery(table, copied, bad, True, bad, lost_and_found=kept)
    notes = [f"{kept} row(s) kept in lost_and_found"] if kept else []
    if bad:
        notes.append(f"{bad} unreadable cell(s)")
    if root is None:
        t.lost_exact, t.lost_at_most = False, None
        notes.append("no schema record: rows placed by their shape")
    elif not found.whole(root, table=True):
        listed, exact = _listed_missing(found, fresh, table, copied + kept)
        if exact:
            t.lost, t.lost_at_most = listed, listed
            notes.append("loss counted from an intact index")
        else:
            least, most = _bound(found, fresh, table, root, bad)
            t.lost = max(least, listed)  # the evidence overlaps: the larger is certain
            t.lost_at_most = most if most is not None and most >= t.lost else None
            t.lost_exact = t.lost == t.lost_at_most
            notes.append("tree damaged: " + ("no bound on the loss" if t.lost_at_most is None
                                             else "upper bound from rowid keys"))
        if not _kind(found, root) and copied + kept == 0 and t.lost_at_most != 0:
            result.incomplete.append(f"{table}: no row could be read")
    t.note = "; ".join(notes)
    return t


def _listed_missing(found: salvage.Scan, fresh: Database, table: str, held: int) -> tuple[int, bool]:
    """Rowids the surviving entries of `table`'s indexes list that are neither in it nor in
    lost_and_found (rows certainly lost), and whether that is exact: an intact index lists
    every row, so the `held` rows (copied or kept) and the lost add up to its entries."""
    fresh.execute("CREATE TEMP TABLE IF NOT EXISTS listed (id INTEGER PRIMARY KEY)")
    fresh.execute("DELETE FROM temp.listed")
    def whole(ix) -> bool:
        return found.whole(ix.rootpage, table=False) and not (ix.sql and " WHERE " in ix.sql.upper())

    complete = False
    for ix in sorted((ix for ix in found.schema if ix.type == "index" and ix.tbl_name == table),
                     key=whole, reverse=True):  # an intact one first: it lists every row
        unread: list = []
        with fresh.connection:
            fresh.connection.executemany("INSERT OR IGNORE INTO temp.listed VALUES (?)",
                                         ((r,) for r in salvage.index_rowids(found, ix.rootpage, unread)))
        complete = not unread and whole(ix)
        if complete:
            break
    missing = fresh.scalar(
        f"SELECT count(*) FROM temp.listed WHERE id NOT IN (SELECT rowid FROM {quote(table)}) "
        f"AND id NOT IN (SELECT original_rowid FROM {salvage.LOST_AND_FOUND} WHERE (guess = ? "
        "OR guess IS NULL) AND original_rowid IS NOT NULL)", (table,))
    return missing, complete and held + missing == fresh.scalar("SELECT count(*) FROM temp.listed")


def _bound(found: salvage.Scan, fresh: Database, table: str, root: int,
           bad: int) -> tuple[int, int | None]:
    """(at least, at most) how many rows the damaged pages of a table tree held (None: unknown).

    Each page the tree points at but cannot read held a row or more (SQLite frees a page
    it empties): one lost where no row of its rowid range came back; at most every rowid
    of its range that did not come back.
    """
    if not _kind(found, root):
        return bad, None
    least, most = bad, bad
    for up, child in salvage.bad_children(found, root):
        low, high = found.key_range(child, up)
        if low is None:
            most = None
            continue
        held = _held(fresh, table, low, high)
        least += held == 0
        if high is None or most is None:
            most = None
        else:
            most += max(high - low - held, 0)
    return least, most


def _held(fresh: Database, table: str, low: int, high: int | None) -> int:
    """Rows with a rowid in (low, high] in the table or kept for it (or for no table)."""
    high = (1 << 63) - 1 if high is None else high
    return fresh.scalar(
        f"SELECT (SELECT count(*) FROM {quote(table)} WHERE rowid > ?1 AND rowid <= ?2) + "
        f"(SELECT count(*) FROM {salvage.LOST_AND_FOUND} WHERE (guess = ?3 OR guess IS NULL) "
        "AND original_rowid > ?1 AND original_rowid <= ?2)", (low, high, table))


def _kind(found: salvage.Scan, page: int) -> int:
    return found.kind[page] if 0 < page <= found.pf.page_count else 0


def _lost_and_found(fresh: Database, out: salvage.Salvaged, result: RecoverResult) -> None:
    result.rows_in_lost_and_found = fresh.scalar(f"SELECT count(*) FROM {salvage.LOST_AND_FOUND}")
    if not result.rows_in_lost_and_found:
        fresh.execute(f"DROP TABLE {salvage.LOST_AND_FOUND}")
        return
    if out.unplaced:
        result.incomplete.append(f"{out.unplaced} row(s) of unknown tables kept in table "
                                 f"{salvage.LOST_AND_FOUND}")
    placed_elsewhere = result.rows_in_lost_and_found - out.unplaced
    if placed_elsewhere:
        result.incomplete.append(f"{placed_elsewhere} row(s) their tables refused or that were cut "
                                 f"short kept in table {salvage.LOST_AND_FOUND}")
    if out.bad_cells[None]:
        result.warnings.append(f"{out.bad_cells[None]} unreadable cell(s) on pages of unknown tables")


def _copy_settings(src: Database, fresh: Database) -> None:
    """Settings that must be set before the first table exists."""
    for pragma in ("page_size", "auto_vacuum", "user_version"):
        with contextlib.suppress(apsw.Error):
            fresh.execute(f"PRAGMA {pragma} = {int(src.scalar(f'PRAGMA {pragma}'))}")
    encoding = src.scalar("PRAGMA encoding")  # text is copied as its stored bytes (_copy_table)
    if encoding in ("UTF-8", "UTF-16le", "UTF-16be"):
        fresh.execute(f"PRAGMA encoding = '{encoding}'")


def _source_history(src: Database | None, result: RecoverResult) -> set[str] | None:
    if src is None:
        return None
    try:
        return set(applied_migrations(src))
    except (apsw.Error, OrchestraError, UnicodeDecodeError) as err:
        result.warnings.append(f"migration history unreadable ({err}); applied every migration")
        return None


def _apply(fresh: Database, migrations, wanted: set[str] | None, result: RecoverResult) -> list[str]:
    """Apply the migrations the source had applied (all, if that is unknown)."""
    for mid in sorted((wanted or set()) - {m.id for m in migrations}):
        result.warnings.append(f"{mid}: applied to the source but not in the sql dir; its tables "
                               "were created from the source's own CREATE statements")
    whole = None
    if wanted is not None:  # with what they depend on: apply_one refuses a migration without
        by_id = {m.id: m for m in migrations}
        whole = set().union(*(ancestors(mid, by_id) for mid in wanted & set(by_id)))
        for mid in sorted(whole - wanted):
            result.warnings.append(f"{mid}: not in the source's history, but migrations there "
                                   "depend on it; applied, so that the rebuilt history is whole")
    applied = []
    for m in migrations:
        if whole is None or m.id in whole:
            apply_one(fresh, m)
            applied.append(m.id)
    return applied


def _source_schema(src: Database | None, result: RecoverResult) -> list[tuple]:
    if src is None:
        return []
    try:  # as bytes: SQLite keeps a statement whose text is not UTF-8 (a flipped bit)
        rows = src.rows("SELECT CAST(type AS BLOB), CAST(name AS BLOB), CAST(tbl_name AS BLOB), "
                        "CAST(sql AS BLOB) FROM sqlite_schema ORDER BY rowid")
    except apsw.Error as err:
        result.warnings.append(f"source schema unreadable ({err}); no rows could be copied")
        result.incomplete.append("the source's schema is unreadable: no rows were copied")
        return []
    codec = {"UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}.get(src.scalar("PRAGMA encoding"), "utf-8")
    schema = []
    for row in rows:
        try:
            schema.append(tuple(None if v is None else bytes(v).decode(codec) for v in row))
        except UnicodeDecodeError:
            name = bytes(row[1] or b"").decode(errors="replace")
            result.incomplete.append(f"{name}: its schema record is not UTF-8, so it was not "
                                     "rebuilt from it and its rows were not copied")
    return schema


@contextlib.contextmanager
def _triggers_off(fresh: Database):
    """Copied rows must not fire triggers (SQLite cannot disable them, so drop and recreate)."""
    triggers = fresh.rows("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")
    for name, _ in triggers:
        fresh.execute(f"DROP TRIGGER {quote(name)}")
    yield
    for _, sql in triggers:
        fresh.execute(sql)


def _create_table(fresh: Database, name: str, sql: str | None, result: RecoverResult) -> bool:
    """The source's table in the fresh database, unless a migration made it already."""
    if name in fresh.table_names() or name.startswith("sqlite_"):
        return True
    try:
        fresh.execute(sql)
        return True
    except (apsw.Error, TypeError) as err:
        result.warnings.append(f"{name}: could not be created ({err}); its rows were not copied")
        return False


@contextlib.contextmanager
def _indexes_after(fresh: Database):
    """Non-unique indexes built after the rows are in: one sort each, not a random insert per row.

    Unique ones stay: they refuse a duplicate row as it comes (it goes to lost_and_found).
    """
    indexes = fresh.rows("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL "
                         "AND upper(sql) NOT LIKE 'CREATE UNIQUE%'")
    for name, _ in indexes:
        fresh.execute(f"DROP INDEX {quote(name)}")
    yield
    for _, sql in indexes:
        fresh.execute(sql)


def _copy_table(src: Database, fresh: Database, name: str, sql: str,
                result: RecoverResult) -> TableRecovery:
    kind, without_rowid = _table_kind(src, name)
    if kind != "table":
        return _unknown(name, f"{kind} table, not copied")
    if not _create_table(fresh, name, sql, result):
        return _unknown(name, "not created")
    wanted = set(_columns(src, name))
    columns = [c for c in _columns(fresh, name) if c in wanted]
    # Text as its stored bytes (apsw refuses to decode text that is not UTF-8), text again
    # on the way in; every other value as it is.
    selected = ", ".join(f"iif(typeof({c}) = 'text', CAST({c} AS BLOB), NULL), "
                         f"iif(typeof({c}) = 'text', NULL, {c})" for c in map(quote, columns)) or "NULL"
    insert = (f"INSERT OR IGNORE INTO {quote(name)} ({', '.join(map(quote, columns))}) "
              f"VALUES ({', '.join(['coalesce(CAST(? AS TEXT), ?)'] * len(columns))})")
    with fresh.connection, translated(result.source, f"reading {name}"):
        read = src.rows(f"SELECT {selected} FROM {quote(name)}")
        # The source's rows replace what the migrations inserted: a seeded row
        # (EF Core's HasData) may have been changed or deleted since.
        fresh.execute(f"DELETE FROM {quote(name)}")
        before = fresh.connection.total_changes()
        fresh.connection.executemany(insert, read)
        copied = fresh.connection.total_changes() - before
    rejected = len(read) - copied
    return TableRecovery(name, copied, rejected, True, rejected,
                         f"{rejected} row(s) rejected by constraints" if rejected else "")


def _table_kind(src: Database, name: str) -> tuple[str, bool]:
    for _, tname, kind, _, wr, _ in src.rows("PRAGMA main.table_list"):
        if tname == name:
            return kind, bool(wr)
    return "table", False


def _columns(db: Database, table: str) -> list[str]:
    # hidden 0: ordinary columns; generated ones (2, 3) cannot be inserted
    return [row[1] for row in db.rows(f"PRAGMA table_xinfo({quote(table)})") if row[6] == 0]


def _create_others(fresh: Database, schema: list[tuple], result: RecoverResult) -> None:
    """The source's own indexes, views and triggers that the migrations did not create."""
    existing = {name for (name,) in fresh.rows("SELECT name FROM sqlite_schema")}
    for kind, name, _, sql in schema:
        if kind in ("index", "view", "trigger") and sql and name not in existing:
            try:
                fresh.execute(sql)
            except apsw.Error as err:
                result.warnings.append(f"{kind} {name}: not recreated ({err})")


def _sequences(src: Database) -> list:
    try:
        return src.rows("SELECT name, seq FROM sqlite_sequence")
    except (apsw.Error, UnicodeDecodeError):  # a name that is not UTF-8 names no table
        return []


def _copy_sequences(sequences: list, fresh: Database) -> None:
    """AUTOINCREMENT counters: never hand out an id the old database already used."""
    for entry in sequences:
        if len(entry) != 2:
            continue
        name, seq = entry
        with contextlib.suppress(apsw.Error):
            fresh.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
            fresh.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                          "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (name, seq, name))


def _summarize(fresh: Database, result: RecoverResult) -> None:
    result.rows_copied = sum(t.copied for t in result.tables)
    result.rows_lost = sum(t.lost for t in result.tables)
    bounds = [t.lost_at_most for t in result.tables]
    result.rows_lost_at_most = None if None in bounds else sum(bounds)
    named = list(result.incomplete)  # a table already named there is not named twice
    result.incomplete += [f"{t.table}: {t.lost_text()} row(s) lost" for t in result.tables
                          if (t.lost or not t.lost_exact)
                          and not any(line.startswith(f"{t.table}: ") for line in named)]
    result.foreign_key_violations = len(fresh.rows("PRAGMA foreign_key_check"))
    if result.foreign_key_violations:
        result.warnings.append(f"{result.foreign_key_violations} foreign key violation(s) where "
                               "parent rows were lost; PRAGMA foreign_key_check lists them")
    result.integrity = integrity_of(fresh.connection, "integrity_check")
