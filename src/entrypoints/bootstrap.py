"""Composition roots: one async context manager per role, owning every client it creates."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from starlette.types import ASGIApp

from adapters.crypto.passwords import Argon2PasswordHasher
from adapters.crypto.sealing import FernetSealer
from adapters.crypto.secrets import KeyedSecrets
from adapters.crypto.tokens import JwtTokenSigner
from adapters.crypto.totp import PyotpTotp
from adapters.health import CacheHealthCheck
from adapters.mail.outbox import FileOutboxMailer
from adapters.memory.audit import InMemoryAuditLog
from adapters.memory.cache import InMemoryCache
from adapters.memory.mail import InMemoryMailer
from adapters.memory.repositories import InMemoryPlatformStore
from adapters.memory.run_logs import InMemoryRunLogStore
from adapters.sql.audit import audit_log as sql_audit_log
from adapters.sql.engine import create_engine
from adapters.sql.health import SqlHealthCheck
from adapters.sql.migrate import migrate
from adapters.sql.repositories import unit_of_work_factory
from adapters.sql.run_logs import SqlRunLogStore
from adapters.system import SystemClock, UlidIdGenerator
from domain.errors import FieldError, Invalid
from domain.ports import Clock, HealthCheck, PasswordHasher
from domain.services.platform import Limits, Platform
from entrypoints.settings import Settings


@attrs.frozen
class Role:
    name: str
    app: ASGIApp


def derive_key(master: bytes, purpose: str) -> bytes:
    """A separate key per purpose, so one leaked derived key exposes nothing else."""
    return hmac.new(master, f"opsicle {purpose}".encode(), hashlib.sha256).digest()


def master_key(settings: Settings) -> bytes:
    """The secret key from the settings, or one kept (created once, mode 0600) in data-dir.

    Controllers behind one load balancer must share it: set ``secret-key`` for them.
    """
    configured = settings["secret-key"]
    if configured:
        key = str(configured).encode()
        if len(key) < 32:
            raise Invalid(
                "the secret key is too short",
                errors=(FieldError("secret-key", "expected at least 32 characters"),),
            )
        return key
    path = settings.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


@asynccontextmanager
async def embedded_platform(
    settings: Settings,
) -> AsyncIterator[tuple[Platform, list[HealthCheck]]]:
    """The platform on embedded stores: SQLite (migrated on start), in-process cache, SQL
    audit log, and a file outbox for email that ``opsicle list emails`` shows."""
    url = settings.database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate(url)
    engine = create_engine(url)
    try:
        clock = SystemClock()
        key = master_key(settings)
        cache = InMemoryCache(clock)
        platform = Platform(
            uow=unit_of_work_factory(engine),
            clock=clock,
            ids=UlidIdGenerator(clock),
            passwords=Argon2PasswordHasher(),
            signer=JwtTokenSigner(derive_key(key, "session tokens"), clock),
            secrets=KeyedSecrets(derive_key(key, "stored secrets")),
            totp=PyotpTotp(),
            cache=cache,
            audit=sql_audit_log(engine),
            mailer=FileOutboxMailer(settings.data_dir / "outbox", clock),
            logs=SqlRunLogStore(engine),
            sealer=FernetSealer(derive_key(key, "sealed values")),
            public_url=settings.public_url,
        )
        checks: list[HealthCheck] = [
            SqlHealthCheck(engine, name="database"),
            CacheHealthCheck(cache),
        ]
        yield platform, checks
    finally:
        await engine.dispose()


@asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[Role]:
    """Every role in one process on embedded stores."""
    from entrypoints.http.common import build_app
    from entrypoints.http.controller import controller_routes

    async with embedded_platform(settings) as (platform, checks):
        yield Role("standalone", build_app("standalone", controller_routes(platform), checks))


@asynccontextmanager
async def controller(settings: Settings) -> AsyncIterator[Role]:
    """The controller role."""
    from entrypoints.http.controller import create_app

    async with embedded_platform(settings) as (platform, checks):
        yield Role("controller", create_app(platform, checks))


class FastPasswordHasher:
    """Argon2id with minimal cost, for tests only: the real cost makes suites crawl."""

    def __init__(self) -> None:
        self._inner = Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

    def hash(self, password: str) -> str:
        return self._inner.hash(password)

    def verify(self, hashed: str, password: str) -> bool:
        return self._inner.verify(hashed, password)


def memory_platform(
    clock: Clock | None = None,
    *,
    limits: Limits | None = None,
    passwords: PasswordHasher | None = None,
) -> tuple[Platform, InMemoryMailer]:
    """The whole platform on in-memory adapters, for service and HTTP tests."""
    clock = clock or SystemClock()
    mailer = InMemoryMailer()
    key = secrets.token_bytes(32)
    platform = Platform(
        uow=InMemoryPlatformStore().unit_of_work,
        clock=clock,
        ids=UlidIdGenerator(clock),
        passwords=passwords or FastPasswordHasher(),
        signer=JwtTokenSigner(derive_key(key, "session tokens"), clock),
        secrets=KeyedSecrets(derive_key(key, "stored secrets")),
        totp=PyotpTotp(),
        cache=InMemoryCache(clock),
        audit=InMemoryAuditLog(),
        mailer=mailer,
        logs=InMemoryRunLogStore(),
        sealer=FernetSealer(derive_key(key, "sealed values")),
        limits=limits or Limits(),
    )
    return platform, mailer
