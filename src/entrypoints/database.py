"""How every command opens the platform database: the ``database-*`` pool and TLS settings."""

from __future__ import annotations

import os
import ssl
from typing import NoReturn

from adapters.sql.engine import DatabaseOptions, is_sqlite
from domain.errors import Invalid
from entrypoints.settings import Settings

# The settings SQLite ignores; ``config show`` says so when the database is SQLite.
MYSQL_ONLY = ("database-pool-size", "database-max-overflow", "database-tls-ca",
              "database-tls-cert", "database-tls-key", "database-tls-verify")


def database_options(settings: Settings) -> DatabaseOptions:
    """The pool and TLS for a MySQL/MariaDB ``database-url``; ``Invalid`` with one line naming
    the setting and the path when a TLS file cannot be read. TLS is on when ``database-tls-ca``
    or ``database-tls-cert`` is set; URL parameters such as ``?ssl_ca=`` are not needed."""
    if is_sqlite(settings.database_url):
        return DatabaseOptions()
    return DatabaseOptions(
        pool_size=int(settings["database-pool-size"]),
        max_overflow=int(settings["database-max-overflow"]),
        tls=_tls_context(settings),
    )


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    ca, cert, key = (settings[f"database-tls-{n}"] or None for n in ("ca", "cert", "key"))
    if key and not cert:
        _invalid("database-tls-key", f"needs database-tls-cert, the certificate of {key}")
    for name, path in (("database-tls-ca", ca), ("database-tls-cert", cert),
                       ("database-tls-key", key)):
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            _invalid(name, f"no readable file at {path}")
    if not ca and not cert:
        return None
    context = ssl.create_default_context()
    if not settings["database-tls-verify"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        if ca:
            context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        _invalid("database-tls-ca", f"{ca} holds no PEM certificate ({exc.reason or exc})")
    try:
        if cert:
            # No passphrase: an encrypted key fails here instead of prompting on a terminal.
            context.load_cert_chain(str(cert), str(key) if key else None, password=b"")
    except ssl.SSLError as exc:
        _invalid("database-tls-cert", f"{cert} and its key are not a usable certificate and "
                                      f"private key ({exc.reason or exc})")
    return context


def _invalid(name: str, problem: str) -> NoReturn:
    raise Invalid(f"{name}: {problem}")


def ignored_by_sqlite(settings: Settings, name: str) -> bool:
    """Whether ``name`` has no effect because the platform database is SQLite."""
    return name in MYSQL_ONLY and is_sqlite(settings.database_url)
