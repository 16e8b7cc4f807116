"""The house stays as ARCHITECTURE.md draws it: imports run only downward.

Every import of the package is read (module level and inside functions; those under
`if TYPE_CHECKING:` never run and are left out), then checked against the layers:

    cli             cli, entry, __main__
    commands        commands/*: each command written once, against the seam
    above engines   context (picks the engine), copy_to/* (reads one engine, writes the
                    other), lint/* (replays SQL on each engine's scratch database)
    engines         engines/ (the seam: base.Driver and base.Engine, runner, drift),
                    engines/sqlite/*, engines/postgresql/*
    rules           migrations, sqlsplit, ef, schema, address, errors, background, files/*

A module imports its own layer or one below. No command imports a module inside
engines/sqlite/ or engines/postgresql/ (it asks engines.of(...) instead), and neither
engine's folder imports the other's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orchestra_schema

PACKAGE = Path(orchestra_schema.__file__).parent
LAYERS = [  # lowest first
    ("rules", ("migrations", "sqlsplit", "ef", "schema", "address", "errors", "background",
               "files")),
    ("engines", ("engines",)),
    ("above engines", ("context", "copy_to", "lint")),
    ("commands", ("commands",)),
    ("cli", ("cli", "entry", "__main__", "")),
]
ENGINE_FOLDERS = ("engines.sqlite", "engines.postgresql")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for rank, (_, roots) in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in roots if r) or module in roots:
            return rank
    raise AssertionError(f"{module}: in no layer; add it to LAYERS (and ARCHITECTURE.md)")


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import of the package by the module at path; `from X import
    name` counts as X.name when X.name is a module, else X."""
    here = module_name(path).split(".") if path.name == "__init__.py" else \
        module_name(path).split(".")[:-1]
    tree = ast.parse(path.read_text())
    skipped, found = _type_checking_only(tree), []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = [p for p in here if p][:len([p for p in here if p]) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("orchestra_schema"):
                source = node.module.removeprefix("orchestra_schema").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}".lstrip(".")
                found.append((node.lineno, full if is_module(full) else source))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("orchestra_schema").lstrip("."))
                      for a in node.names if a.name.startswith("orchestra_schema")]
    return found


def is_module(name: str) -> bool:
    where = PACKAGE.joinpath(*name.split("."))
    return where.with_suffix(".py").exists() or (where / "__init__.py").exists()


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}: {importer or '__init__'} imports {imported}"
            if layer(imported) > layer(importer):
                out.append(f"{where}, a higher layer ({LAYERS[layer(imported)][0]})")
            if importer.startswith("commands") and imported.startswith(ENGINE_FOLDERS):
                out.append(f"{where}, inside an engine's folder: ask engines.of(...)")
            for mine, other in (ENGINE_FOLDERS, ENGINE_FOLDERS[::-1]):
                if importer.startswith(mine) and imported.startswith(other):
                    out.append(f"{where}, the other engine's folder")
    return out


def test_imports_run_only_downward():
    assert violations() == []


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer(module_name(path))


def test_the_reader_sees_imports_inside_functions(tmp_path):
    """The check reads what a lazy import hides (the start-up time keeps many lazy)."""
    found = dict((m, n) for n, m in imports(PACKAGE / "cli.py"))
    assert "commands.migrate" in found  # imported inside the status command's function
