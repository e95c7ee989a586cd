"""Dispatch latency and end-to-end throughput of one-phase `true` runs, beside Celery + Redis.

Run: uv run python bench/dispatch.py [--runs N] [--latency-runs N] [--workers 1,2,4]
         [--skip nats,celery,bwrap] [--poll-only] [--limit SECONDS]
(about 4 minutes with the defaults; ``--poll-only`` shows the figures with runs created on
the plain platform: no wake-up on commit and, embedded, no enqueueing in the creating
transaction, i.e. with the outbox relay's 50 ms poll alone.)

Method. Opsicle is driven in this one process, composed as ``opsicle start standalone``
composes itself (``entrypoints.bootstrap``) and on the roles' event loop (uvloop,
``entrypoints.eventloop``): the platform on its stores (embedded: its units of work put queue
messages straight on the SQL queue, ``enqueuing``), ``coordination`` (outbox relay + lease
reaper) over the run queues wrapped by the embedded worker's publish signal,
and a ``PullWorker`` with ``concurrency=K`` slots on the ``InProcessCoordinatorClient``.
Runs are created through the controller's use case ``runs.create_run`` (authorization,
template resolution, the run and its outbox message in one transaction, the audit record)
as a member of an org, from an org template with one phase whose command is `true`. Two
backends: the embedded default (SQLite file + the SQL queue) and NATS JetStream (the
``nats_topics`` adapter standalone uses when ``nats-url`` is set) + MariaDB (a throwaway
database, stream and subject prefix, removed at the end). The HTTP hops (CLI → controller,
worker → coordinator) are not in these figures: this is the standalone path, where the
embedded worker calls the coordinator's use cases in-process.

Timestamps are ``time.perf_counter()`` in this process:
  accepted  the controller's unit of work has committed the run (a wrapper around the unit of
            work notes the commit; the caller gets its answer right after the audit record),
  spawn     the worker hands the first phase to the runner (which forks `/bin/sh -c true`,
            inside bubblewrap when sandboxed) -- the runner is wrapped to note this,
  exited    the runner returns: the phase's process has started and exited.
Dispatch latency is accepted → spawn (and accepted → exited, which brackets the process
start from the other side), one run at a time with a random 0-20 ms pause between runs so
that polling loops are met at random phases, after a warm-up. Throughput is N runs created
back to back by one producer while K worker slots execute them: N / (time from the first
create to the last completion reported by the worker), every run checked to have succeeded;
a figure that takes longer than ``--limit`` is cut off and says so. The producer's own rate
is printed beside it: when the two are close, run creation is what limits the figure. The
producer shares the worker's event loop and, the embedded store's statements being calls in
that loop's thread (``adapters.sql.sqlite_driver``), does not let it run while it creates runs
back to back: embedded, the runs are mostly created first and executed after, so with K=1 the
figure is about 1 / (the CPU time to create one run + one run's turn through the one slot,
its phase process included). Beside
each throughput figure, per run: this process's CPU time (``time.process_time``: every
thread; not the phases' processes) and the SQL statements (BEGIN not counted) and
transactions the engine sent, figures the host's load skews less than rates and latencies.
The CPU per run is also given apart for its two halves: N runs created back to back with the
worker not yet started, then executed once it starts with the largest K (the queue is N deep
meanwhile, which makes both halves dearer than when they interleave).

Celery 5 with a Redis broker and result backend (a unique key prefix, removed at the end)
runs the same command, ``subprocess.run(["true"])`` inside a task, in a worker started as a
subprocess with the prefork pool and ``--concurrency K``; latency is ``apply_async`` returned
→ the task's stamp before ``subprocess.run`` (wall clock, same host), throughput is N tasks sent
back to back until every result is back. Both sides run the process unsandboxed in the
throughput figures; Opsicle's latency is also given with bubblewrap when it works here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib.metadata
import os
import platform
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.nats.connection import NatsOptions, connect
from adapters.nats.topics import NatsTopicsConfig, nats_topics
from adapters.runners.process import ProcessRunner
from adapters.template_reader import read_template
from domain.automations import PhaseResult, RunStatus
from domain.ports import Claim, CoordinatorClient, LineSink, Mount, PhaseJob, PhaseOutcome, Queue
from domain.ports import Runner as RunnerPort
from domain.resources import AutomationSpec
from domain.services import orgs, runs, templates
from domain.services.dispatch import run_topic
from domain.services.platform import Caller, Platform
from domain.users import User
from entrypoints import eventloop
from entrypoints import settings as settings_module
from entrypoints.bootstrap import (
    RELAY_INTERVAL,
    STANDALONE_RELAY_INTERVAL,
    _embedded_stores,
    _queues,
    coordination,
    enqueuing,
)
from entrypoints.embedded_worker import POLL_SECONDS, InProcessCoordinatorClient, PublishSignal
from entrypoints.settings import Settings
from entrypoints.version import VERSION
from entrypoints.worker import PullWorker, WorkerOptions, runner_factory

BENCH_DIR = Path(__file__).resolve().parent
TEMPLATE = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: bench-true
spec:
  template:
    phases:
      - name: noop
        image: busybox:latest
        commands: ['true']
"""
WARMUP = 10


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ----------------------------------------------------------------------------- Opsicle side

_accepted: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "accepted", default=None
)


class CommitStamp:
    """A unit of work that notes when it committed, for whoever set ``_accepted``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> CommitStamp:
        self._inner = await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._inner.commit()
        stamps = _accepted.get()
        if stamps is not None:
            stamps.append(time.perf_counter())


class StampingRunner:
    """The worker's runner, noting when each run's first phase is handed over and returns."""

    def __init__(self, inner: RunnerPort, book: Stamps) -> None:
        self._inner = inner
        self._book = book

    @property
    def name(self) -> str:
        return self._inner.name

    def describe(self) -> str:
        return self._inner.describe()

    async def prepare(self, spec: AutomationSpec, mounts: Sequence[Mount]) -> None:
        await self._inner.prepare(spec, mounts)

    async def run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        self._book.spawn.setdefault(job.run_id, time.perf_counter())
        outcome = await self._inner.run_phase(job, sink)
        self._book.exited.setdefault(job.run_id, time.perf_counter())
        return outcome


@dataclass
class Stamps:
    spawn: dict[str, float] = field(default_factory=dict)
    exited: dict[str, float] = field(default_factory=dict)
    runner: str = ""


class CountingClient:
    """The coordinator client, counting the runs the worker reported as ended."""

    def __init__(self, inner: CoordinatorClient) -> None:
        self._inner = inner
        self.ended: Counter[RunStatus] = Counter()
        self._changed = asyncio.Event()

    @property
    def done(self) -> int:
        return sum(self.ended.values())

    async def wait_done(self, count: int) -> None:
        while self.done < count:
            self._changed.clear()
            await self._changed.wait()

    async def claim(self, wait_seconds: float) -> Claim | None:
        return await self._inner.claim(wait_seconds)

    async def heartbeat(self, claim: Claim) -> bool:
        return await self._inner.heartbeat(claim)

    async def send_log(self, claim: Claim, offset: int, data: bytes) -> bool:
        return await self._inner.send_log(claim, offset, data)

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None:
        await self._inner.report_phase(claim, result)

    async def complete(
        self,
        claim: Claim,
        status: RunStatus,
        reason: str = "",
        phases: Sequence[PhaseResult] = (),
    ) -> None:
        await self._inner.complete(claim, status, reason, phases)
        self.ended[status] += 1
        self._changed.set()

    async def release(self, claim: Claim) -> None:
        await self._inner.release(claim)


QueuesFactory = Callable[
    [AsyncEngine, list[str], AsyncExitStack], Awaitable[Callable[[str], Queue]]
]


@dataclass
class Backend:
    name: str
    settings: Settings
    open_queues: QueuesFactory
    detail: str = ""
    principal: tuple[Caller, str, str] | None = None  # caller, org code, org id


async def principal(p: Platform) -> tuple[Caller, str, str]:
    """A verified user who founded an org holding the one-phase `true` template."""
    now = p.clock.now()
    email = f"bench-{p.ids.new_id().lower()}@example.com"
    user = User(p.ids.new_id(), email, p.passwords.hash(secrets.token_hex(16)), now, now)
    async with p.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    caller = Caller(user.id, "127.0.0.1", "bench/dispatch.py", email)
    code = f"bench-{secrets.token_hex(3)}"
    org = await orgs.create_org(p, caller, "Dispatch benchmark", code)
    await templates.submit_template(
        p, caller, TEMPLATE, read=read_template, source="bench.yaml", org_ref=code
    )
    return caller, code, org.id


class StatementCounter:
    """Counts the SQL statements an engine sends (BEGIN, which drivers send themselves, not
    among them) and the transactions it begins: figures of the work per run that the host's
    load does not skew."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements = 0
        self.transactions = 0
        self._engine = engine.sync_engine
        sa.event.listen(self._engine, "before_cursor_execute", self._seen)
        sa.event.listen(self._engine, "begin", self._begun)

    def _seen(self, *args: Any) -> None:
        self.statements += 1

    def _begun(self, *args: Any) -> None:
        self.transactions += 1

    def remove(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._seen)
        sa.event.remove(self._engine, "begin", self._begun)


@dataclass
class Harness:
    controller: Platform
    caller: Caller
    org_code: str
    client: CountingClient
    stamps: Stamps
    counter: StatementCounter
    start_worker: Callable[[], None]

    async def submit(self) -> tuple[str, float]:
        """Create a run as the controller does; its id and when its creation committed."""
        committed: list[float] = []
        token = _accepted.set(committed)
        try:
            view = await runs.create_run(
                self.controller,
                self.caller,
                "bench-true",
                org_ref=self.org_code,
                read=read_template,
            )
        finally:
            _accepted.reset(token)
        return view.run.id, committed[-1]


RunnerChoice = Callable[[Settings], Callable[[AutomationSpec], Awaitable[RunnerPort]]]


def unsandboxed(_: Settings) -> Callable[[AutomationSpec], Awaitable[RunnerPort]]:
    runner = ProcessRunner(sandbox=False)

    async def runner_for(spec: AutomationSpec) -> RunnerPort:
        return runner

    return runner_for


def as_configured(settings: Settings) -> Callable[[AutomationSpec], Awaitable[RunnerPort]]:
    """The worker's own choice, per run (``--runner process``: bubblewrap when it works)."""
    return runner_factory(settings.with_flags(runner="process"))


@asynccontextmanager
async def opsicle(
    backend: Backend,
    concurrency: int,
    choose: RunnerChoice,
    *,
    poll_only: bool = False,
    held_back: bool = False,
) -> AsyncIterator[Harness]:
    """Opsicle composed as standalone composes itself; with ``held_back`` the worker starts
    only at ``Harness.start_worker``."""
    async with AsyncExitStack() as stack:
        p, _, engine, _ = await stack.enter_async_context(_embedded_stores(backend.settings))
        # Listening starts before anything runs on the engine and stops after it all stopped:
        # SQLAlchemy's event lists must not change while a listener awaits.
        counter = StatementCounter(engine)
        stack.callback(counter.remove)
        if backend.principal is None:
            backend.principal = await principal(p)
        caller, code, org_id = backend.principal
        signal_ = PublishSignal()
        queues = await backend.open_queues(engine, [run_topic(org_id)], stack)
        # As standalone: on the SQL queue, units of work enqueue their messages themselves.
        direct, enqueued = enqueuing(p, engine, backend.settings)
        # The relay polls as standalone's does, or with --poll-only as a coordinator role's,
        # which looks every 50 ms for what the controllers (other processes) committed.
        relay_interval = RELAY_INTERVAL if poll_only else STANDALONE_RELAY_INTERVAL
        c = await stack.enter_async_context(
            coordination(
                direct,
                signal_.wrap(queues),
                relay_interval=relay_interval,
                on_queued=signal_.notify,
                enqueued=enqueued,
            )
        )
        # The controller's use cases run on the platform whose commits wake the outbox relay,
        # as in standalone; --poll-only gives them the plain one (the relay polls every 50 ms).
        base = p if poll_only else c.platform
        controller = attrs.evolve(base, uow=lambda: CommitStamp(base.uow()))
        stamps = Stamps()
        chosen = choose(backend.settings)

        async def runner_for(spec: AutomationSpec) -> RunnerPort:
            inner = await chosen(spec)
            stamps.runner = inner.describe()
            return StampingRunner(inner, stamps)

        client = CountingClient(
            InProcessCoordinatorClient(
                c.dispatch, p.sealer, signal_, name="bench", worker_id=f"bench-{os.getpid()}"
            )
        )
        worker = PullWorker(
            client, runner_for, p.clock, WorkerOptions(concurrency=concurrency, drain_seconds=5)
        )
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        def start_worker() -> None:
            tasks.append(asyncio.create_task(worker.run(stop)))

        if not held_back:
            start_worker()
        try:
            yield Harness(controller, caller, code, client, stamps, counter, start_worker)
        finally:
            stop.set()
            if tasks:
                await tasks[0]


async def latency(h: Harness, count: int, rng: random.Random) -> tuple[list[float], list[float]]:
    to_spawn, to_exit = [], []
    for i in range(WARMUP + count):
        await asyncio.sleep(rng.uniform(0, 0.02))
        # Counted before submitting: the run may end before the controller has answered.
        target = h.client.done + 1
        run_id, accepted = await h.submit()
        await h.client.wait_done(target)
        if i >= WARMUP:
            to_spawn.append(h.stamps.spawn[run_id] - accepted)
            to_exit.append(h.stamps.exited[run_id] - accepted)
    return to_spawn, to_exit


@dataclass
class Rate:
    """A throughput figure: runs/s end to end, runs/s the producer alone created, and per run
    the CPU time of this process (all its threads; not the phases' processes) and the SQL
    statements and transactions; ``note`` says when the runs did not all end in time."""

    rate: float
    created: float
    cpu_ms: float
    statements: float
    transactions: float
    note: str


async def throughput(h: Harness, count: int, limit: float) -> Rate:
    """Runs ``count`` runs back to back; the rate is of those that ended within ``limit``."""
    base = h.client.done
    statements, transactions = h.counter.statements, h.counter.transactions
    cpu = time.process_time()
    started = time.perf_counter()
    created = 0.0
    made = 0

    async def produce() -> None:
        nonlocal created, made
        for _ in range(count):
            await h.submit()
            made += 1
        created = time.perf_counter() - started

    note = ""
    try:
        async with asyncio.timeout(limit):
            await asyncio.gather(produce(), h.client.wait_done(base + count))
    except TimeoutError:
        note = f"; CUT OFF after {limit:.0f} s: {h.client.done - base} of {count} runs ended"
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    created = created or elapsed
    ended = max(1, h.client.done - base)
    return Rate(
        (h.client.done - base) / elapsed,
        made / created,
        cpu * 1000 / ended,
        (h.counter.statements - statements) / ended,
        (h.counter.transactions - transactions) / ended,
        note,
    )


@dataclass
class Split:
    """CPU of this process per run: creating runs with no worker running, then executing
    them once the worker starts (its K slots, the relay and the reaper running as usual)."""

    create_ms: float
    execute_ms: float
    note: str


async def split(h: Harness, count: int, limit: float) -> Split:
    base = h.client.done
    cpu = time.process_time()
    for _ in range(count):
        await h.submit()
    created = time.process_time()
    h.start_worker()
    note = ""
    try:
        async with asyncio.timeout(limit):
            await h.client.wait_done(base + count)
    except TimeoutError:
        note = f"; CUT OFF after {limit:.0f} s: {h.client.done - base} of {count} runs ended"
    ended = max(1, h.client.done - base)
    return Split(
        (created - cpu) * 1000 / count, (time.process_time() - created) * 1000 / ended, note
    )


def bench_settings(folder: str, database_url: str | None, nats_url: str | None) -> Settings:
    loaded = settings_module.load(None, {"XDG_CONFIG_HOME": str(Path(folder) / "config")})
    return loaded.with_flags(
        data_dir=folder,
        database_url=database_url,
        nats_url=nats_url,
        log_level="warning",
        migrate=True,
    )


async def sql_queues(
    engine: AsyncEngine, topics: list[str], stack: AsyncExitStack
) -> Callable[[str], Queue]:
    return _queues(engine)


@asynccontextmanager
async def embedded_backend() -> AsyncIterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="opsicle-bench-") as folder:
        yield Backend(
            "embedded (SQLite + SQL queue)",
            bench_settings(folder, None, None),
            sql_queues,
            f"SQLite {sqlite3.sqlite_version} file in {folder}",
        )


@asynccontextmanager
async def nats_mariadb_backend(mariadb: str, nats_url: str) -> AsyncIterator[Backend]:
    name = f"opsicle_bench_{secrets.token_hex(4)}"
    stream = f"opsicle-bench-{secrets.token_hex(4)}"
    options = NatsOptions(servers=(nats_url,), name="opsicle-bench")
    streams: list[str] = []
    server = create_async_engine(f"{mariadb}/")
    try:
        async with server.connect() as conn:
            version = (await conn.execute(sa.text("SELECT VERSION()"))).scalar_one()
            await conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        probe = await connect(options)
        nats_version = str(probe.connected_server_version)
        await probe.close()

        async def open_queues(
            engine: AsyncEngine, topics: list[str], stack: AsyncExitStack
        ) -> Callable[[str], Queue]:
            # The adapter standalone uses with nats-url set, on a stream and subjects of its own.
            config = NatsTopicsConfig(stream=stream, prefix=stream)
            queues, _ = await stack.enter_async_context(nats_topics(options, config))
            streams[:] = [stream]
            return queues

        with tempfile.TemporaryDirectory(prefix="opsicle-bench-") as folder:
            backend = Backend(
                "NATS JetStream + MariaDB",
                bench_settings(folder, f"{mariadb}/{name}", nats_url),
                open_queues,
                f"MariaDB {version} (database {name}, dropped at the end), NATS "
                f"{nats_version} (stream {stream}, deleted at the end)",
            )
            yield backend
    finally:
        async with server.connect() as conn:
            await conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        await server.dispose()
        if streams:
            client = await connect(options)
            try:
                js = client.jetstream()
                for made in streams:
                    await js.delete_stream(made)
            finally:
                await client.close()


# ------------------------------------------------------------------------------ Celery side


@dataclass
class CeleryFigures:
    concurrency: int
    rate: float = 0.0
    to_start: list[float] = field(default_factory=list)
    to_exit: list[float] = field(default_factory=list)


class CeleryWorker:
    """``celery worker`` as a subprocess of its own session, stopped by its PID."""

    def __init__(self, concurrency: int, env: dict[str, str], log: Path) -> None:
        self.concurrency = concurrency
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CeleryWorker:
        argv = [
            sys.executable, "-m", "celery", "-A", "celery_tasks", "worker",
            "--pool", "prefork", "--concurrency", str(self.concurrency),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "WARNING", "--hostname", f"opsicle-bench-{os.getpid()}@%h",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=BENCH_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # warm shutdown: the pool children go with it
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            proc.wait()


def bench_celery(
    concurrencies: Sequence[int], runs: int, latency_runs: int, redis_url: str, rng: random.Random
) -> tuple[list[CeleryFigures], str]:
    import redis

    prefix = f"opsicle-bench-{secrets.token_hex(4)}:"
    os.environ["OPSICLE_BENCH_REDIS_URL"] = redis_url
    os.environ["OPSICLE_BENCH_PREFIX"] = prefix
    sys.path.insert(0, str(BENCH_DIR))
    import celery_tasks
    from celery.result import ResultSet

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), *sys.path[1:]])}
    client = redis.Redis.from_url(redis_url)
    server = str(client.info("server").get("redis_version"))
    figures = []
    with tempfile.TemporaryDirectory(prefix="opsicle-bench-celery-") as folder:
        try:
            for k in concurrencies:
                fig = CeleryFigures(k)
                with CeleryWorker(k, env, Path(folder) / "celery.log") as worker:
                    try:
                        celery_tasks.run_true.delay().get(timeout=60)  # the worker is up
                    except Exception:
                        print((Path(folder) / "celery.log").read_text(), file=sys.stderr)
                        raise
                    assert worker.proc is not None and worker.proc.poll() is None
                    if k == concurrencies[0]:
                        for i in range(WARMUP + latency_runs):
                            time.sleep(rng.uniform(0, 0.02))
                            result = celery_tasks.run_true.apply_async()
                            sent = time.time()
                            before, after = result.get(timeout=60)
                            if i >= WARMUP:
                                fig.to_start.append(before - sent)
                                fig.to_exit.append(after - sent)
                    started = time.perf_counter()
                    results = [celery_tasks.run_true.delay() for _ in range(runs)]
                    ResultSet(results).get(timeout=600)
                    fig.rate = runs / (time.perf_counter() - started)
                figures.append(fig)
        finally:
            stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(stale), 500):
                client.delete(*stale[start : start + 500])
            client.close()
    return figures, f"Redis {server} at {redis_url}, key prefix {prefix} (removed)"


# --------------------------------------------------------------------------------- printing


def duration(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:g} s"


def ms_line(label: str, seconds: Sequence[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"  {label:<46} n={len(ms):<4} p50={percentile(ms, 0.5):6.1f} ms  "
        f"p99={percentile(ms, 0.99):6.1f} ms  mean={statistics.fmean(ms):6.1f} ms  "
        f"max={max(ms):6.1f} ms"
    )


def bwrap_version() -> str:
    path = shutil.which("bwrap")
    if path is None:
        return "bubblewrap not installed"
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or path


async def bench_opsicle(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Every Opsicle figure: {backend: {"latency": {...}, "rates": {k: (e2e, created)}}}."""
    results: dict[str, Any] = {}
    backends: list[Callable[[], Any]] = [embedded_backend]
    if "nats" not in args.skip:
        backends.append(lambda: nats_mariadb_backend(args.mariadb, args.nats))
    choices: list[tuple[str, RunnerChoice]] = [("unsandboxed", unsandboxed)]
    if "bwrap" not in args.skip:
        choices.append(("as the worker chooses (--runner process)", as_configured))
    for make in backends:
        async with make() as backend:
            print(f"# {backend.name} ...", file=sys.stderr, flush=True)
            figures: dict[str, Any] = {"latency": {}, "rates": {}}
            for label, choose in choices:
                async with opsicle(backend, 1, choose, poll_only=args.poll_only) as h:
                    spawn, exited = await latency(h, args.latency_runs, rng)
                    figures["latency"][label] = (
                        h.stamps.runner,
                        spawn,
                        exited,
                        dict(h.client.ended),
                    )
            for k in args.workers:
                async with opsicle(backend, k, unsandboxed, poll_only=args.poll_only) as h:
                    figures["rates"][k] = (
                        await throughput(h, args.runs, args.limit),
                        dict(h.client.ended),
                    )
            k = max(args.workers)
            async with opsicle(
                backend, k, unsandboxed, poll_only=args.poll_only, held_back=True
            ) as h:
                figures["split"] = (k, await split(h, args.runs, args.limit))
            results[backend.name] = (backend.detail, figures)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per throughput figure")
    parser.add_argument("--latency-runs", type=int, default=300, help="runs per latency figure")
    parser.add_argument(
        "--workers", type=lambda s: [int(k) for k in s.split(",")], default=[1, 2, 4],
        help="worker slots (Celery concurrency), comma-separated",
    )  # fmt: skip
    parser.add_argument("--skip", default="", help="comma-separated: nats, celery, bwrap")
    parser.add_argument("--mariadb", default="mysql+asyncmy://root@127.0.0.1:3306")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--limit", type=float, default=30.0,
        help="seconds a throughput figure may take before it is cut off (and says so)",
    )  # fmt: skip
    parser.add_argument(
        "--poll-only", action="store_true",
        help="runs created without waking the outbox relay: it finds them at its 50 ms poll",
    )  # fmt: skip
    args = parser.parse_args()
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rng = random.Random(args.seed)
    began = time.perf_counter()
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())

    opsicle_figures = eventloop.run(bench_opsicle(args, rng))
    celery_figures: list[CeleryFigures] = []
    celery_detail = "skipped"
    if "celery" not in args.skip:
        print("# Celery ...", file=sys.stderr, flush=True)
        celery_figures, celery_detail = bench_celery(
            args.workers, args.runs, args.latency_runs, args.redis, rng
        )

    print("# bench/dispatch.py: dispatch latency and throughput of one-phase `true` runs")
    print(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()})")
    print(
        f"# load average at the start {load_at_start}, at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the host skews figures)"
    )
    print(
        f"# versions: opsicle {VERSION}, Python {platform.python_version()} on uvloop "
        f"{version_of('uvloop')} (Opsicle's side), SQLAlchemy "
        f"{version_of('sqlalchemy')}, SQLite {sqlite3.sqlite_version}, asyncmy "
        f"{version_of('asyncmy')}, nats-py {version_of('nats-py')}, celery "
        f"{version_of('celery')}, kombu {version_of('kombu')}, redis-py {version_of('redis')}, "
        f"{bwrap_version()}"
    )
    print(
        f"# counts: latency {args.latency_runs} runs after {WARMUP} warm-up, one worker slot; "
        f"throughput {args.runs} runs per K, K = {', '.join(map(str, args.workers))}"
    )
    wakeup = "off (--poll-only)" if args.poll_only else "on"
    relay = RELAY_INTERVAL if args.poll_only else STANDALONE_RELAY_INTERVAL
    print(
        f"# settings: lease 30 s, outbox relay poll {duration(relay)} (jittered ±20%), wake-up "
        f"on commit {wakeup} (embedded: runs enqueued in their creating transaction; NATS: the "
        f"relay is woken), embedded worker fallback poll {duration(POLL_SECONDS)}, process runner"
    )
    for name, (detail, figures) in opsicle_figures.items():
        print(f"\n## Opsicle, {name}: {detail}")
        print("  dispatch latency, run accepted (creation committed) → first phase process:")
        for label, (runner, spawn, exited, ended) in figures["latency"].items():
            print(f"  [{label}] {runner}; runs ended: {fmt_ended(ended)}")
            print(ms_line("accepted → runner starts the process", spawn))
            print(ms_line("accepted → the process has exited", exited))
        print("  throughput, unsandboxed, end to end (first create → last completion):")
        for k, (r, ended) in figures["rates"].items():
            print(
                f"  K={k}: {r.rate:7.1f} runs/s  (the producer alone created {r.created:6.1f} "
                f"runs/s; runs ended: {fmt_ended(ended)}{r.note})"
            )
            print(
                f"        per run: {r.cpu_ms:5.1f} ms CPU in this process, "
                f"{r.statements:5.1f} SQL statements in {r.transactions:4.1f} transactions"
            )
        k, sp = figures["split"]
        total = sp.create_ms + sp.execute_ms
        print(
            f"  CPU per run, apart ({args.runs} runs created with no worker running, then "
            f"executed by K={k} slots):\n        creating {sp.create_ms:5.2f} ms + executing "
            f"{sp.execute_ms:5.2f} ms = {total:5.2f} ms (the queue is {args.runs} deep "
            f"meanwhile){sp.note}"
        )
    print(f"\n## Celery + Redis: {celery_detail}")
    for fig in celery_figures:
        if fig.to_start:
            print(
                "  latency, apply_async returned → task about to run `true`, concurrency "
                f"{fig.concurrency}:"
            )
            print(ms_line("sent → subprocess.run starts", fig.to_start))
            print(ms_line("sent → the process has exited", fig.to_exit))
    for fig in celery_figures:
        print(f"  K={fig.concurrency}: {fig.rate:7.1f} runs/s")
    if celery_figures:
        print("\n## Opsicle / Celery")
        by_k = {f.concurrency: f for f in celery_figures}
        for name, (_, figures) in opsicle_figures.items():
            for k, (r, _) in figures["rates"].items():
                if k in by_k and by_k[k].rate:
                    print(f"  {name}, K={k}: throughput ratio {r.rate / by_k[k].rate:5.2f}")
            first = celery_figures[0]
            label, (_, spawn, _, _) = next(iter(figures["latency"].items()))
            if first.to_start:
                print(
                    f"  {name}: latency p50 ratio [{label}] "
                    f"{percentile(spawn, 0.5) / percentile(first.to_start, 0.5):5.2f}, "
                    f"p99 ratio {percentile(spawn, 0.99) / percentile(first.to_start, 0.99):5.2f}"
                )
    print("\n# targets (embedded, this 2-core machine): p50 ≤ 15 ms, p99 ≤ 60 ms, ≥ 300 runs/s")
    print(f"# took {time.perf_counter() - began:.0f} s")


def fmt_ended(ended: dict[RunStatus, int]) -> str:
    return ", ".join(f"{n} {s.value}" for s, n in sorted(ended.items(), key=lambda i: i[0].value))


if __name__ == "__main__":
    main()
