"""Alembic migrations of the platform data schema, shared by SQLite and MySQL/MariaDB."""
