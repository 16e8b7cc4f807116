"""Copy bench/results/latest.md into the README between its bench markers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

readme = (ROOT / "README.md").read_text()
latest = (ROOT / "bench" / "results" / "latest.md").read_text().strip()
head, rest = readme.split(START, 1)
_, tail = rest.split(END, 1)
(ROOT / "README.md").write_text(f"{head}{START}\n{latest}\n{END}{tail}")
