"""The documentation builds, covers every command and every lint rule, and its lint examples
are true.

docs/ is built with Sphinx as a user builds it (python -m sphinx, a real process), as HTML and
as man pages, with every warning an error (-W --keep-going) and every reference checked (-n).
Each command of the CLI must have a man page (a new command without a page fails); each rule
the linter can report must have a section on the lint page, whose bad example the rule reports
and whose good example it does not (run through `orchestra-schema lint` on a temporary sql dir).
Without Sphinx the test skips, saying how to install it; under CI=true it fails instead.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, unavailable

from orchestra_schema.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINT_PAGE = DOCS / "reviewing.md"


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("sphinx") is None:
        unavailable("Sphinx not installed (pip install '.[docs]')")  # a failure under CI=true
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", builder,
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def man_pages(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("man")
    done = _sphinx("man", out)
    assert done.returncode == 0, done.stderr
    return out


def test_the_html_builds_without_a_warning(tmp_path):
    done = _sphinx("html", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "index.html").is_file()
    assert "--secure-delete" in (tmp_path / "commands" / "rollback.html").read_text()


def test_every_command_has_a_man_page_with_its_options(man_pages):
    assert (man_pages / "orchestra-schema.1").is_file()
    for name, command in main.commands.items():
        page = man_pages / f"orchestra-schema-{name}.1"
        assert page.is_file(), f"no man page for {name}: add docs/commands/{name}.md"
        text = page.read_text()
        for param in command.params:  # sphinx-click read them from the command itself
            for opt in param.opts if param.param_type_name == "option" else ():
                assert opt.replace("-", r"\-") in text, (name, opt)


def test_the_man_pages_are_one_per_command_and_the_overview(man_pages):
    made = {p.name for p in man_pages.glob("*.1")}
    assert made == {"orchestra-schema.1"} | {f"orchestra-schema-{n}.1" for n in main.commands}


def _lint_rules() -> set[str]:
    """Every rule name the linter can report: the string passed as the `rule` argument of the
    functions that make a finding (any function of the package with a parameter `rule`)."""
    package = Path(importlib.util.find_spec("orchestra_schema").origin).parent
    trees = [ast.parse(p.read_text()) for p in package.rglob("*.py")]
    takes_rule = {}  # function name -> index of `rule` among the positional arguments of a call
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                names = [a.arg for a in node.args.posonlyargs + node.args.args]
                if "rule" in names:
                    takes_rule[node.name] = names.index("rule") - (names[:1] == ["self"])
    rules = set()
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            at = takes_rule.get(name)
            if at is None:
                continue
            arg = node.args[at] if at < len(node.args) else next(
                (k.value for k in node.keywords if k.arg == "rule"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                rules.add(arg.value)
    return rules


def _blocks() -> dict[str, tuple[str, str]]:
    """The lint page's named code blocks: name -> (language, text)."""
    found = {}
    pattern = r"^```\{code-block\} (\w+)\n((?::\w+:[^\n]*\n)*)\n?(.*?)^```"
    for m in re.finditer(pattern, LINT_PAGE.read_text(), re.M | re.S):
        options = dict(re.findall(r"^:(\w+): *([^\n]*)$", m.group(2), re.M))
        if "name" in options:
            found[options["name"]] = (m.group(1), m.group(3))
    return found


def test_the_rules_are_found_in_the_linter():
    rules = _lint_rules()
    assert {"round-trip", "no-rollback", "data-loss", "header", "rebuild-loses",
            "index-blocks-writes", "syntax"} <= rules, rules


def test_every_lint_rule_has_a_section_and_a_bad_and_a_good_example():
    page, blocks = LINT_PAGE.read_text(), _blocks()
    for rule in sorted(_lint_rules()):
        assert f"\n### `{rule}`\n" in page, f"no section for lint rule {rule} in {LINT_PAGE.name}"
        assert f"{rule}-bad" in blocks and f"{rule}-good" in blocks, rule


def _lint(tmp_path: Path, name: str, blocks) -> set[str]:
    language, text = blocks[name]
    dialect = "postgresql" if language == "postgresql" else "sqlite"
    d = tmp_path / name
    d.mkdir()
    (d / "0001_base.sql").write_text(blocks[f"base-{dialect}"][1])
    (d / "0001_base.rollback.sql").write_text(blocks[f"base-{dialect}-rollback"][1])
    (d / "0002_change.sql").write_text(text)
    if f"{name}-rollback" in blocks:
        (d / "0002_change.rollback.sql").write_text(blocks[f"{name}-rollback"][1])
    result = cli("--sql-dir", d, "--json", "lint", "--dialect", dialect)
    assert result.exit_code in (0, 1), result.stderr
    return {f["rule"] for f in json.loads(result.stdout)}


@pytest.mark.parametrize("rule", sorted(_lint_rules()))
def test_each_rules_bad_example_is_reported_and_its_good_one_is_not(rule, tmp_path):
    blocks = _blocks()
    assert rule in _lint(tmp_path, f"{rule}-bad", blocks)
    assert rule not in _lint(tmp_path, f"{rule}-good", blocks)


def test_the_base_migrations_of_the_examples_are_clean(tmp_path):
    blocks = _blocks()
    for dialect in ("sqlite", "postgresql"):
        d = tmp_path / dialect
        d.mkdir()
        (d / "0001_base.sql").write_text(blocks[f"base-{dialect}"][1])
        (d / "0001_base.rollback.sql").write_text(blocks[f"base-{dialect}-rollback"][1])
        result = cli("--sql-dir", d, "--json", "lint", "--dialect", dialect)
        assert (result.exit_code, json.loads(result.stdout)) == (0, []), result.stdout
