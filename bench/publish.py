"""Join benchmark results into bench/results/latest.md.

    python bench/publish.py [RESULT.md ...]

The results files are read by the documentation (docs/benchmarks.md includes them
when the pages are built), so nothing is copied into the README. Several results (for
example one run per size and CPU mode) are joined, in the order given, into
bench/results/latest.md. An argument `TITLE=RESULT.md` puts the part
under a `#### TITLE` heading, e.g.

    python bench/publish.py "Backup and status, 30 MB, CPU with SHA extensions=bench/results/cpu/sha-ext-30/latest.md" ...
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.md"


def part(arg: str) -> str:
    title, _, path = arg.rpartition("=")
    text = Path(path).read_text().strip()
    return f"#### {title}\n\n{text}" if title else text


parts = [part(a) for a in sys.argv[1:]]
if parts:
    LATEST.write_text("\n\n---\n\n".join(parts) + "\n")
