"""The CLI's commands as module attributes, for sphinx-click's `module:attribute` paths.

`orchestra_schema.cli:main` is the stable entry point; each command is read from its
`commands`, so a page documents the option list click itself parses.
"""

from orchestra_schema.cli import main

for _name, _command in main.commands.items():
    globals()[_name.replace("-", "_")] = _command
