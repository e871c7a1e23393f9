"""Alembic migrations: the only way the memos schema changes (SQLite and PostgreSQL)."""
