"""Composition roots: one async context manager per role, owning every client it creates."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import attrs
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

from adapters.crypto.grants import StoredKeyRing
from adapters.crypto.passwords import Argon2PasswordHasher
from adapters.crypto.sealing import FernetSealer
from adapters.crypto.secrets import KeyedSecrets
from adapters.crypto.tokens import JwtTokenSigner
from adapters.crypto.totp import PyotpTotp
from adapters.health import CacheHealthCheck
from adapters.mail.outbox import FileOutboxMailer
from adapters.mail.smtp import SmtpSettings, StartTls, smtp_mailer
from adapters.memory.audit import InMemoryAuditLog
from adapters.memory.cache import InMemoryCache
from adapters.memory.mail import InMemoryMailer
from adapters.memory.repositories import InMemoryPlatformStore
from adapters.memory.run_logs import InMemoryRunLogStore
from adapters.mongo.audit import audit_log as mongo_audit_log
from adapters.mongo.audit import health_check as mongo_health_check
from adapters.mongo.audit import mongo_client
from adapters.redis.cache import RedisCache, RedisHealthCheck
from adapters.sql.audit import audit_log as sql_audit_log
from adapters.sql.audit import audit_outbox as sql_audit_outbox
from adapters.sql.engine import create_engine
from adapters.sql.grant_keys import sql_grant_keys
from adapters.sql.health import SqlHealthCheck
from adapters.sql.migrate import prepare_schema
from adapters.sql.repositories import unit_of_work_factory
from adapters.sql.run_logs import SqlRunLogStore
from adapters.system import SystemClock, UlidIdGenerator
from domain.approvals import Approval
from domain.automations import Run
from domain.errors import FieldError, Invalid, Unavailable
from domain.ports import (
    AuditLog,
    AuditOutbox,
    Cache,
    Clock,
    HealthCheck,
    Mailer,
    PasswordHasher,
    Queue,
    Sealer,
    UnitOfWork,
)
from domain.services.audit import AuditTrail
from domain.services.dispatch import Dispatch
from domain.services.grants import sign_grant_for
from domain.services.platform import ApprovalHook, Limits, Platform
from entrypoints.database import database_options
from entrypoints.settings import Settings

if TYPE_CHECKING:
    from adapters.nats.connection import NatsOptions

# How often the outbox relay looks for messages other processes committed (this process's
# own commits wake it): a coordinator's come from controllers and approvers, which are other
# processes by design; standalone's only from a process that shares its database.
RELAY_INTERVAL = 0.05
STANDALONE_RELAY_INTERVAL = 1.0
RELAY_BATCH = 100


@attrs.frozen
class Role:
    """A role's app; ``stopping`` (when set by the server) tells it to take no new work."""

    name: str
    app: ASGIApp
    stopping: asyncio.Event | None = None


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


async def _cache(
    settings: Settings, clock: Clock, stack: AsyncExitStack
) -> tuple[Cache, HealthCheck]:
    """Redis when ``redis-url`` is set (needed by several controllers), else in-process."""
    if settings["redis-url"]:
        redis = RedisCache(str(settings["redis-url"]), prefix=str(settings["redis-prefix"]))
        stack.push_async_callback(redis.aclose)
        return redis, RedisHealthCheck(redis)
    cache = InMemoryCache(clock)
    return cache, CacheHealthCheck(cache)


def _mailer(settings: Settings, clock: Clock) -> Mailer:
    """SMTP when ``smtp-host`` is set, else a file outbox that ``opsicle list emails`` shows."""
    if not settings["smtp-host"]:
        return FileOutboxMailer(settings.data_dir / "outbox", clock)
    return smtp_mailer(
        SmtpSettings(
            host=str(settings["smtp-host"]),
            port=int(settings["smtp-port"]),
            starttls=StartTls(settings["smtp-starttls"]),
            username=settings["smtp-username"],
            password=settings["smtp-password"],
            from_address=str(settings["smtp-from"]),
        ),
        clock=clock,
    )


@attrs.frozen
class _AuditStores:
    log: AuditLog
    checks: list[HealthCheck]
    # Set when the log is a separate store: events wait in the SQL outbox for the forwarder.
    outbox: AuditOutbox | None = None
    separate_log: AuditLog | None = None


def _audit_in_outbox(settings: Settings) -> bool:
    """Whether audit events wait in the SQL audit outbox: the log is MongoDB."""
    return bool(settings["mongo-url"])


async def _audit(settings: Settings, engine: AsyncEngine, stack: AsyncExitStack) -> _AuditStores:
    """MongoDB when ``mongo-url`` is set, reached through the SQL audit outbox; else the audit
    table in the SQL store, written in each change's own transaction."""
    if _audit_in_outbox(settings):
        client = mongo_client(str(settings["mongo-url"]))
        stack.push_async_callback(client.close)
        log = mongo_audit_log(client, str(settings["mongo-database"]))
        outbox = sql_audit_outbox(engine)
        return _AuditStores(AuditTrail(log, outbox), [mongo_health_check(client)], outbox, log)
    return _AuditStores(sql_audit_log(engine), [])


# How often the audit forwarder looks for events in the outbox when none were announced.
AUDIT_FORWARD_INTERVAL = 0.5


@asynccontextmanager
async def _audit_forwarder(audit: _AuditStores, clock: Clock) -> AsyncIterator[None]:
    """The loop that moves the audit outbox into the separate audit store, while inside."""
    if audit.outbox is None or audit.separate_log is None:
        yield
        return
    from domain.services.audit import FORWARD_BATCH, Forwarder, forward
    from entrypoints.loops import service_loop, stop_tasks

    f = Forwarder(audit.outbox, audit.separate_log, clock, f"{os.getpid()}-{secrets.token_hex(6)}")

    async def step() -> None:
        # A full batch means more are waiting: keep going before the next pause.
        while await forward(f) >= FORWARD_BATCH:
            pass

    stop = asyncio.Event()
    task = asyncio.create_task(
        service_loop("audit forwarder", step, stop=stop, clock=clock,
                     interval=AUDIT_FORWARD_INTERVAL)
    )
    try:
        yield
    finally:
        stop.set()
        await stop_tasks([task], grace=5.0)
        with contextlib.suppress(Unavailable):  # else another process waits out the lease
            await audit.outbox.release(f.owner)


def grant_keys(settings: Settings, engine: AsyncEngine, sealer: Sealer) -> StoredKeyRing:
    """The approver's signing keys, in the SQL store that every role shares; the key files of
    older releases (data-dir/approver-keys) are imported into an empty store once."""
    return StoredKeyRing(
        sql_grant_keys(engine), sealer, legacy_dir=settings.data_dir / "approver-keys"
    )


def grant_hook(keys: StoredKeyRing, sealer: Sealer, clock: Clock) -> ApprovalHook:
    """``Platform.on_approved``: the approved run carries the grant its approvers signed,
    with the ring's current key as the store has it now (another process may have rotated)."""

    async def on_approved(uow: UnitOfWork, approval: Approval, run: Run) -> tuple[Approval, Run]:
        at = clock.now()
        return approval, sign_grant_for(run, approval, await keys.ring(at), sealer, at)

    return on_approved


@asynccontextmanager
async def _platform_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the platform database, its schema brought to the head or checked."""
    url = settings.database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The derived SQLite database is the zero-setup default: it is always brought forward.
    options = database_options(settings)
    await prepare_schema(
        url, may_migrate=bool(settings["migrate"]) or settings.origin("database-url") == "default",
        options=options,
    )
    engine = create_engine(url, options)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def approver_keys(settings: Settings) -> AsyncIterator[StoredKeyRing]:
    """The approver's key ring on the settings' store, as the server roles use it."""
    async with _platform_engine(settings) as engine:
        sealer = FernetSealer(derive_key(master_key(settings), "sealed values"))
        yield grant_keys(settings, engine, sealer)


@asynccontextmanager
async def embedded_platform(
    settings: Settings,
) -> AsyncIterator[tuple[Platform, list[HealthCheck]]]:
    """The platform on embedded stores: SQLite (migrated on start), in-process cache, SQL
    audit log, and a file outbox for email that ``opsicle list emails`` shows."""
    async with _embedded_stores(settings) as (platform, checks, _, _):
        yield platform, checks


@asynccontextmanager
async def _embedded_stores(
    settings: Settings,
) -> AsyncIterator[tuple[Platform, list[HealthCheck], AsyncEngine, StoredKeyRing]]:
    async with _platform_engine(settings) as engine:
        clock = SystemClock()
        key = master_key(settings)
        async with AsyncExitStack() as stack:
            cache, cache_check = await _cache(settings, clock, stack)
            audit = await _audit(settings, engine, stack)
            await stack.enter_async_context(_audit_forwarder(audit, clock))
            sealer = FernetSealer(derive_key(key, "sealed values"))
            keys = grant_keys(settings, engine, sealer)
            await keys.ring(clock.now())  # the first key exists before any role serves
            platform = Platform(
                uow=unit_of_work_factory(engine, audit_outbox=audit.outbox is not None),
                clock=clock,
                ids=UlidIdGenerator(clock),
                passwords=Argon2PasswordHasher(),
                signer=JwtTokenSigner(derive_key(key, "session tokens"), clock),
                secrets=KeyedSecrets(derive_key(key, "stored secrets")),
                totp=PyotpTotp(),
                cache=cache,
                audit=audit.log,
                mailer=_mailer(settings, clock),
                logs=SqlRunLogStore(engine),
                sealer=sealer,
                public_url=settings.public_url,
                on_approved=grant_hook(keys, sealer, clock),
            )
            checks: list[HealthCheck] = [
                SqlHealthCheck(engine, name="database"),
                cache_check,
                *audit.checks,
            ]
            yield platform, checks, engine, keys


@attrs.define
class DispatchFigures:
    """What this process's dispatch loops did, for /metrics."""

    lease_expiries: int = 0


@attrs.frozen
class Coordination:
    """The coordinator's use cases and the flag that tells its endpoints to take no work.

    ``platform`` is the given one whose units of work wake the outbox relay when they commit
    a queue message: use cases in this process that queue runs should use it.
    """

    dispatch: Dispatch
    stopping: asyncio.Event
    platform: Platform
    figures: DispatchFigures = attrs.field(factory=DispatchFigures)


# How often pending approval requests are checked for expiry.
APPROVAL_EXPIRY_INTERVAL = 5.0


@asynccontextmanager
async def coordination(
    platform: Platform,
    queues: Callable[[str], Queue],
    *,
    lease_seconds: float = 30.0,
    relay_interval: float = RELAY_INTERVAL,
    reap_interval: float | None = None,
    loop_clock: Clock | None = None,
    on_queued: Callable[[Collection[str]], None] | None = None,
    enqueued: bool = False,
) -> AsyncIterator[Coordination]:
    """Dispatch over ``platform`` with its outbox relay and lease reaper running.

    ``on_queued`` is called with their topics after a unit of work of the returned platform
    commits queue messages. ``enqueued`` says the platform's outbox puts messages on the queue
    itself (see ``enqueuing``): its commits do not wake the relay, which then only polls for
    what other processes left in the outbox. On exit, in order: endpoints stop taking work
    (held claims are answered), then the loops finish their iteration (or are cancelled after
    a grace period).
    """
    from domain.services import dispatch
    from entrypoints.loops import service_loop, stop_tasks
    from entrypoints.outbox_wakeup import waking

    # A run queued in this process is published at once; the poll finds the other processes'.
    announced = asyncio.Event()

    def queued(topics: Collection[str]) -> None:
        if not enqueued:
            announced.set()
        if on_queued is not None:
            on_queued(topics)

    platform = attrs.evolve(platform, uow=waking(platform.uow, queued))
    d = Dispatch(
        platform.uow,
        platform.clock,
        platform.ids,
        queues,
        platform.logs,
        lease_seconds,
        queues_in_store=enqueued,
    )
    stopping = asyncio.Event()
    loops_stop = asyncio.Event()
    ticks = loop_clock or d.clock

    async def relay() -> None:
        # A full batch means more are waiting: keep going before the next pause.
        while await dispatch.relay_outbox(d) >= RELAY_BATCH:
            pass

    figures = DispatchFigures()

    async def reap() -> None:
        figures.lease_expiries += await dispatch.reap(d)

    async def expire_approvals() -> None:
        from domain.services.approvals import expire_due

        await expire_due(platform)

    tasks = [
        asyncio.create_task(
            service_loop(
                "outbox relay",
                relay,
                stop=loops_stop,
                clock=ticks,
                interval=relay_interval,
                wake=announced,
            )
        ),
        asyncio.create_task(
            service_loop(
                "lease reaper",
                reap,
                stop=loops_stop,
                clock=ticks,
                interval=reap_interval or max(0.2, lease_seconds / 4),
            )
        ),
        asyncio.create_task(
            service_loop(
                "approval expiry",
                expire_approvals,
                stop=loops_stop,
                clock=ticks,
                interval=APPROVAL_EXPIRY_INTERVAL,
            )
        ),
    ]
    try:
        yield Coordination(d, stopping, platform, figures)
    finally:
        stopping.set()
        loops_stop.set()
        await stop_tasks(tasks, grace=5.0)


def enqueuing(
    platform: Platform, engine: AsyncEngine, settings: Settings
) -> tuple[Platform, bool]:
    """``platform`` whose units of work put queue messages straight on the SQL queue when
    the run queues are that queue (no ``nats-url``): no relay hop between commit and claim.
    The flag says whether they do (``coordination``'s ``enqueued``)."""
    if settings["nats-url"]:
        return platform, False
    units = unit_of_work_factory(engine, audit_outbox=_audit_in_outbox(settings), enqueue=True)
    return attrs.evolve(platform, uow=units), True


def _coordinating(
    settings: Settings,
    platform: Platform,
    engine: AsyncEngine,
    queues: Callable[[str], Queue],
    on_queued: Callable[[Collection[str]], None] | None = None,
    relay_interval: float = RELAY_INTERVAL,
) -> AbstractAsyncContextManager[Coordination]:
    """``coordination`` as the coordinator and standalone roles run it: the lease from the
    settings and, on the SQL queue, units of work that enqueue their messages themselves."""
    direct, enqueued = enqueuing(platform, engine, settings)
    return coordination(
        direct,
        queues,
        lease_seconds=float(settings["lease-seconds"]),
        relay_interval=relay_interval,
        on_queued=on_queued,
        enqueued=enqueued,
    )


def _queues(engine: AsyncEngine) -> Callable[[str], Queue]:
    from adapters.sql.queue import sql_queue

    made: dict[str, Queue] = {}

    def queue(topic: str) -> Queue:
        if topic not in made:
            made[topic] = sql_queue(engine, topic)
        return made[topic]

    return queue


def nats_options(settings: Settings, role: str) -> NatsOptions:
    """How to reach NATS, from the ``nats-*`` settings."""
    from adapters.nats.connection import NatsOptions

    servers = tuple(s.strip() for s in str(settings["nats-url"] or "").split(",") if s.strip())
    return NatsOptions(
        servers=servers,
        user=settings["nats-user"] or None,
        password=settings["nats-password"] or None,
        nkey_seed_file=settings["nats-nkey-seed-file"] or None,
        tls_ca_file=settings["nats-tls-ca"] or None,
        tls_cert_file=settings["nats-tls-cert"] or None,
        tls_key_file=settings["nats-tls-key"] or None,
        name=f"opsicle-{role}",
    )


@asynccontextmanager
async def _run_queues(
    settings: Settings, engine: AsyncEngine, role: str
) -> AsyncIterator[tuple[Callable[[str], Queue], list[HealthCheck]]]:
    """NATS JetStream when ``nats-url`` is set (one stream, a durable consumer per topic, the
    connection closed on exit), else the durable queue on the SQL store."""
    if not settings["nats-url"]:
        yield _queues(engine), []
        return
    from adapters.nats.topics import NatsTopicsConfig, nats_topics

    config = NatsTopicsConfig(
        stream=str(settings["nats-stream"]),
        ack_wait_seconds=max(1.0, float(settings["nats-ack-wait-seconds"])),
    )
    async with nats_topics(nats_options(settings, role), config) as (queues, check):
        yield queues, [check]


def _webhook_delivery(settings: Settings, platform: Platform) -> AbstractAsyncContextManager[None]:
    """The webhook delivery loop as the settings tune it."""
    from datetime import timedelta

    from entrypoints.webhook_delivery import webhook_delivery

    return webhook_delivery(platform, timeout_seconds=float(settings["webhook-timeout"]),
                            retention=timedelta(days=int(settings["webhook-retention-days"])))


@asynccontextmanager
async def coordinator(settings: Settings) -> AsyncIterator[Role]:
    """The coordinator role on embedded stores: the worker API, outbox relay, lease reaper."""
    from entrypoints.http.common import lease_expiries
    from entrypoints.http.coordinator import create_app

    async with (
        _embedded_stores(settings) as (platform, checks, engine, _),
        _run_queues(settings, engine, "coordinator") as (queues, queue_checks),
        _coordinating(settings, platform, engine, queues) as c,
        _webhook_delivery(settings, c.platform),
    ):
        checks = [*checks, *queue_checks]
        app = create_app(
            platform, c.dispatch, checks, c.stopping, collectors=[lease_expiries(c.figures)]
        )
        yield Role("coordinator", app, c.stopping)


@asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[Role]:
    """Every role in one process on embedded stores, with one embedded worker.

    The embedded worker needs no token: it is part of this process and claims, through the
    dispatch use cases directly, the runs of every org of the instance (see
    ``entrypoints.embedded_worker``). Remote workers still connect with org tokens to the
    worker API served here too.
    """
    from entrypoints.approver import approval_chats
    from entrypoints.embedded_worker import PublishSignal, embedded_worker
    from entrypoints.http.common import build_app, lease_expiries
    from entrypoints.http.controller import controller_routes
    from entrypoints.http.coordinator import coordinator_routes

    signal = PublishSignal()
    async with (
        _embedded_stores(settings) as (platform, checks, engine, keys),
        _run_queues(settings, engine, "standalone") as (queues, queue_checks),
        _coordinating(
            settings, platform, engine, signal.wrap(queues), signal.notify,
            relay_interval=STANDALONE_RELAY_INTERVAL,
        ) as c,
        _webhook_delivery(settings, c.platform),
    ):
        checks = [*checks, *queue_checks]
        # A cancel asked for here reaches the embedded worker at once, not at its heartbeat.
        here = attrs.evolve(c.platform, on_cancel_asked=signal.cancel_asked)
        routes = [
            *controller_routes(here),
            *coordinator_routes(here, c.dispatch, c.stopping, beside_controller=True),
        ]
        async with (
            # The embedded worker verifies grants with the ring this process signs with.
            embedded_worker(here, c.dispatch, settings, c.stopping, signal, grants=keys),
            # Telegram and Slack as the approver role runs them, when their tokens are set.
            approval_chats(settings, here, engine, asyncio.Event()) as chat_routes,
        ):
            app = build_app(
                "standalone",
                [*routes, *chat_routes],
                checks,
                [lease_expiries(c.figures)],
                platform=here,
            )
            yield Role("standalone", app, c.stopping)


@asynccontextmanager
async def controller(settings: Settings) -> AsyncIterator[Role]:
    """The controller role."""
    from entrypoints.http.controller import create_app

    async with (
        embedded_platform(settings) as (platform, checks),
        _webhook_delivery(settings, platform),
    ):
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
    audit = InMemoryAuditLog()
    platform = Platform(
        uow=InMemoryPlatformStore(audit).unit_of_work,
        clock=clock,
        ids=UlidIdGenerator(clock),
        passwords=passwords or FastPasswordHasher(),
        signer=JwtTokenSigner(derive_key(key, "session tokens"), clock),
        secrets=KeyedSecrets(derive_key(key, "stored secrets")),
        totp=PyotpTotp(),
        cache=InMemoryCache(clock),
        audit=audit,
        mailer=mailer,
        logs=InMemoryRunLogStore(),
        sealer=FernetSealer(derive_key(key, "sealed values")),
        limits=limits or Limits(),
    )
    return platform, mailer
