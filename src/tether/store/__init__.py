"""Persistence: SQLite by default, PostgreSQL at scale, one schema, Alembic migrations."""

from tether.store.db import Database

__all__ = ["Database"]
