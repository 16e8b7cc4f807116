"""verify's PostgreSQL checks on the throwaway server: amcheck where it can run (n/a with
the reason where it cannot), foreign keys never checked against their rows."""

from __future__ import annotations

from orchestra_schema.engines.postgresql import checks as pgcheck

from test_pg_backup import build

MANAGED = ["Agents", "ChatMessages", "ChatSessions", "Repositories", "Tasks"]


def test_amcheck_is_na_with_the_reason_when_this_user_cannot_create_it(pgdb):
    build(pgdb)
    with pgdb.connect() as conn:
        found = pgcheck.integrity(conn, "public", MANAGED)
    assert found.method == "n/a" and "superuser" in found.note
    assert not pgdb.rows("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")


def test_amcheck_checks_every_managed_table_and_index_when_installed(pg_cluster, pgdb):
    build(pgdb)
    pg_cluster.admin("CREATE EXTENSION amcheck; GRANT EXECUTE ON FUNCTION verify_heapam, "
                     "bt_index_check(regclass, boolean) TO orchestra", dbname=pgdb.name)
    with pgdb.connect() as conn:
        for full in (False, True):
            found = pgcheck.integrity(conn, "public", MANAGED, full=full)
            assert (found.method, found.problems) == (
                "amcheck heapallindexed" if full else "amcheck", [])


def test_amcheck_created_for_the_check_is_rolled_back_with_it(pg_cluster, pgdb):
    """As a superuser: amcheck exists only inside verify's transaction."""
    build(pgdb)
    import psycopg
    from pgserver import ADMIN_PASSWORD
    with psycopg.connect(host=str(pg_cluster.socket_dir), port=pg_cluster.port,
                         dbname=pgdb.name, user="postgres", password=ADMIN_PASSWORD,
                         autocommit=True) as conn:
        found = pgcheck.integrity(conn, "public", MANAGED)
    assert (found.method, found.problems) == ("amcheck", [])
    assert not pgdb.rows("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")


def test_a_foreign_key_added_not_valid_over_an_orphan_is_named(pgdb):
    build(pgdb)
    with pgdb.connect() as conn:
        assert pgcheck.foreign_key_problems(conn, "public", MANAGED) == []
        conn.execute('ALTER TABLE "ChatMessages" DROP CONSTRAINT '
                     '"FK_ChatMessages_ChatSessions_SessionId"')
        conn.execute("""INSERT INTO "ChatMessages" VALUES (gen_random_uuid(), gen_random_uuid(),
                        'user', 'orphan', 0, now(), NULL)""")
        conn.execute('ALTER TABLE "ChatMessages" ADD CONSTRAINT '
                     '"FK_ChatMessages_ChatSessions_SessionId" FOREIGN KEY ("SessionId") '
                     'REFERENCES "ChatSessions" ("Id") ON DELETE CASCADE NOT VALID')
        problems = pgcheck.foreign_key_problems(conn, "public", MANAGED)
    assert len(problems) == 1
    assert "FK_ChatMessages_ChatSessions_SessionId is NOT VALID" in problems[0]
    assert "1 row(s) reference missing rows" in problems[0]
