"""copy-to: every row of an SQLite orchestra.db into an empty PostgreSQL database, with proof.

It reads one engine and writes the other, so it sits beside the commands, above both
engines: transfer.py plans and proves, workers.py reads SQLite in parallel processes,
lines.py and values.py write PostgreSQL's COPY format.
"""
