"""The app, writing: one chat session and its three messages per transaction, until killed.

Usage: pg_writer.py SOCKET_DIR PORT DBNAME PASSWORD (prints "writing" once connected).
"""

import sys
import uuid

import psycopg

socket_dir, port, dbname, password = sys.argv[1:5]
with psycopg.connect(host=socket_dir, port=port, dbname=dbname, user="orchestra",
                     password=password) as conn:
    print("writing", flush=True)
    while True:
        session = uuid.uuid4()
        with conn.transaction():
            conn.execute("""INSERT INTO "ChatSessions" VALUES (%s, 'u', 'i', 't', now(), now())""",
                         (session,))
            for _ in range(3):
                conn.execute("""INSERT INTO "ChatMessages" VALUES (%s, %s, 'user', 'hi', 0, now(),
                                NULL)""", (uuid.uuid4(), session))
