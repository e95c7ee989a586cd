"""Platform data, run logs and the audit log on SQL: MySQL/MariaDB, or SQLite embedded."""
