"""Alembic migrations of the SQL schema (run by `rankpulse migrate` and at start).

`env.py` runs on a connection handed in by `store/migrate.py`, never on a URL of its own, so the
caller's lock (PostgreSQL advisory lock, SQLite file lock) covers the whole migration.
"""
