"""round-trip, for both engines: each migration run forward, rolled back and run
forward again on a scratch database built from the migrations before it.

The rollback must give back exactly the schema before; forward again must give
the same schema as the first time. An engine supplies a Scratch: run statements
in one transaction (or each in its own, for a file whose migration says
`-- transactional: false`), take a snapshot, name the differences of two. A Scratch that
can also give a digest of its whole state (schema text and every row) runs the
rollback in a transaction it holds open: when that gives back the state before
the forward file exactly, it is undone instead of running the forward file a
second time (the same statements on the same state do the same), so a data
migration's rows run once in the replay, not twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Protocol

from .findings import ERROR, Finding, finding, first_line
from .sqltext import SqlFile

# (file, schema before it, schema after it) -> findings: the engine's own schema rules
FileCheck = Callable[[SqlFile, object, object], list[Finding]]


class Scratch(Protocol):
    # (index, error) on failure, rolled back; hold: leave the transaction open for end();
    # each: each statement in its own transaction (a `-- transactional: false` file)
    def run(self, statements, hold: bool = False,
            each: bool = False) -> tuple[int, str] | None: ...
    def end(self, keep: bool) -> None: ...  # commit (keep) or roll back a held transaction
    def snapshot(self): ...
    def differences(self, before, after) -> list[str]: ...
    def state(self) -> bytes | None: ...  # digest of schema text and rows; None: cannot tell


# Statements that change rows only: schema_only leaves them out of the replay (apply's lint:
# apply runs them next, all or nothing, on the database itself).
DATA = frozenset({"INSERT", "REPLACE", "UPDATE", "DELETE"})


def check(scratch: Scratch, migrations, files: dict[tuple[str, str], SqlFile],
          file_check: FileCheck | None = None, schema_only: bool = False) -> list[Finding]:
    """Replay every migration up to the last one linted; report on the linted ones."""
    if schema_only:
        files = {k: _replayed(f, schema_only) for k, f in files.items()}
    linted = [i for i, m in enumerate(migrations) if (m.id, "forward") in files]
    out: list[Finding] = []
    for m in migrations[: max(linted, default=-1) + 1]:
        forward = files.get((m.id, "forward"))
        if forward is None:  # only a step towards the migrations linted
            if _run_file(scratch, _replayed(SqlFile.forward(m), schema_only), "") is not None:
                break
            continue
        problems = _round_trip(scratch, forward, files.get((m.id, "rollback")), file_check)
        out += problems
        if any(p.rule == "round-trip" for p in problems):
            break  # the scratch database no longer matches the files; later ones would mislead
    return out


def _replayed(f: SqlFile, schema_only: bool) -> SqlFile:
    return replace(f, statements=[st for st in f.statements if st.word not in DATA]) \
        if schema_only else f


def _round_trip(scratch: Scratch, forward: SqlFile, rollback: SqlFile | None,
                file_check: FileCheck | None) -> list[Finding]:
    extra = file_check or (lambda f, before, after: [])
    before, state = scratch.snapshot(), scratch.state()
    if (failed := _run_file(scratch, forward, "applying it")) is not None:
        return [failed]
    after = scratch.snapshot()
    out = extra(forward, before, after)
    if rollback is None:
        return out
    hold = state is not None
    if (failed := _run_file(scratch, rollback, "rolling it back", hold)) is not None:
        return out + [failed]
    back = scratch.snapshot()
    out += extra(rollback, after, back)
    if (left := scratch.differences(before, back)):
        if hold:
            scratch.end(keep=True)
        out.append(finding(rollback, first_line(rollback), "round-trip", ERROR,
                           f"rolling back does not give back the schema before "
                           f"{forward.migration_id}: {'; '.join(left)}; make the rollback undo "
                           f"exactly what {forward.path.name} does"))
        return out  # applying again on what was left over would only fail on it
    if hold:
        same = scratch.state() == state
        scratch.end(keep=not same)
        if same:
            return out  # the forward file's result is back: a second run would repeat the first
    if (failed := _run_file(scratch, forward, "applying it again after its rollback")) is not None:
        return out + [failed]
    if (changed := scratch.differences(after, scratch.snapshot())):
        out.append(finding(forward, first_line(forward), "round-trip", ERROR,
                           f"applied again after its rollback it gives another schema: "
                           f"{'; '.join(changed)}; make the rollback undo exactly what it does"))
    return out


def _run_file(scratch: Scratch, f: SqlFile, doing: str, hold: bool = False) -> Finding | None:
    failed = scratch.run([st.sql for st in f.statements], hold, not f.transactional)
    if failed is None:
        return None
    i, error = failed
    return finding(f, f.statements[i].line, "round-trip", ERROR,
                   f"fails when {doing} on a database built from the migrations before it: "
                   f"{error}; fix the statement")
