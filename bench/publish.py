"""Put benchmark results into the README between its bench markers.

    python bench/publish.py [RESULT.md ...]

With no argument, bench/results/latest.md goes in as it is. With several (for
example one run per size and CPU mode), they are joined, in the order given,
into bench/results/latest.md first. An argument `TITLE=RESULT.md` puts the part
under a `#### TITLE` heading, e.g.

    python bench/publish.py "Backup and status, 30 MB, CPU with SHA extensions=bench/results/cpu/sha-ext-30/latest.md" ...
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"



def part(arg: str) -> str:
    title, _, path = arg.rpartition("=")
    text = Path(path).read_text().strip()
    return f"#### {title}\n\n{text}" if title else text


parts = [part(a) for a in sys.argv[1:]]
if parts:
    LATEST.write_text("\n\n---\n\n".join(parts) + "\n")
readme = (ROOT / "README.md").read_text()
latest = LATEST.read_text().strip()
head, rest = readme.split(START, 1)
_, tail = rest.split(END, 1)
(ROOT / "README.md").write_text(f"{head}{START}\n{latest}\n{END}{tail}")
