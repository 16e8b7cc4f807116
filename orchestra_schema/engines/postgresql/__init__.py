"""PostgreSQL behind the seam: psycopg 3 connections, pg_dump archives, catalog checks."""
