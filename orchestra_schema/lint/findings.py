"""A lint finding, and the rules every engine shares: header, no-rollback, data-loss."""

from __future__ import annotations

from dataclasses import dataclass

from .sqltext import SqlFile

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    rule: str
    level: str
    message: str  # what is wrong; what to do

    def text(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


def finding(f: SqlFile, line: int, rule: str, level: str, message: str) -> Finding:
    return Finding(str(f.path), line, rule, level, message)


def first_line(f: SqlFile) -> int:
    """Where a finding about the whole file points: its first statement, else line 1."""
    return f.statements[0].line if f.statements else 1


def loss(f: SqlFile, line: int, table: str, what: str) -> Finding | None:
    """data-loss: an error in a forward file, a warning in a rollback, unless the header says so.

    what says how the statement loses data of table ("DROP TABLE T deletes every row").
    """
    if f.header.declares_loss_of(table):
        return None
    if f.kind == "rollback":
        return finding(f, line, "data-loss", WARNING,
                       f"{what}; name {table} on a `-- LOSES:` line of the header so the "
                       "reviewer sees the loss")
    return finding(f, line, "data-loss", ERROR,
                   f"{what} in a forward migration; if intended, say so in the header (a "
                   f"`-- LOSES:` line naming {table}), else keep the data")


def header_findings(f: SqlFile, needs_depends: bool) -> list[Finding]:
    out = []
    if not f.header.text:
        out.append(finding(f, 1, "header", ERROR,
                           "no review header; start the file with comments saying what it "
                           + ("changes and what its rollback loses" if f.kind == "forward"
                              else "drops and which rows are lost (a `-- LOSES:` line)")))
    elif "TODO" in f.header.text:
        out.append(finding(f, 1, "header", WARNING,
                           "the header still says TODO; replace it with what this file does "
                           "for the reviewer"))
    if needs_depends and f.kind == "forward" and not f.header.has_depends:
        out.append(finding(f, 1, "header", ERROR,
                           "no `-- depends:` line in a migration after the first; add "
                           "`-- depends: ID` naming the migration it builds on"))
    return out


def no_rollback(f: SqlFile) -> Finding:
    return finding(f, 1, "no-rollback", ERROR,
                   f"no rollback file {f.migration_id}.rollback.sql, so this migration cannot be "
                   "rolled back; write one that undoes it exactly")
