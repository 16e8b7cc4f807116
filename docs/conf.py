"""Sphinx configuration: HTML and man pages from the same Markdown pages.

Build:  python -m sphinx -W -b html docs docs/_build/html
        python -m sphinx -W -b man docs docs/_build/man
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _commands import main  # noqa: E402

project = "orchestra-schema"
author = "the AI Agent Orchestra team"
copyright = "2025-2026, the AI Agent Orchestra team"
release = version = "0.1.0"

extensions = ["myst_parser", "sphinx_click"]
source_suffix = {".md": "markdown"}
myst_heading_anchors = 3
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
html_theme = "alabaster"
html_title = "orchestra-schema"
nitpicky = True

# One man page per command, from its page under commands/; a command without a page is a
# build error ("references unknown document"), and tests/test_docs.py checks the pages exist.
man_pages = [("overview", "orchestra-schema",
              "paired SQL migrations, backups and checks for the Orchestra database", [], 1)]
man_pages += [(f"commands/{name}", f"orchestra-schema-{name}",
               command.get_short_help_str(limit=200).rstrip("."), [], 1)
              for name, command in sorted(main.commands.items())]
man_make_section_directory = False
man_show_urls = False
