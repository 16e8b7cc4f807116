"""The orchestra-schema program's start: modules load with the cyclic GC off.

Loading click, psycopg and ours makes the collector run some 80 times and find
almost nothing (10-20 ms of a 200 ms `status`). cli turns it back on when the
command begins (OrchestraGroup.invoke), with what start-up made frozen: kept for
the process's life anyway, it is never scanned again. Only the program starts
here (the console script, `python -m`); importing the package leaves the GC alone.
"""

import gc

gc.disable()

from .cli import main  # noqa: E402  (once the GC is off)


def run() -> None:
    main()
