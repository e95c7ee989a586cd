"""The pull worker: claims runs, executes them, streams their logs and reports their ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import socket
import tempfile
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import attrs

from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus
from domain.errors import (
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    OpsicleError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from domain.grants import GrantRefused, GrantVerifier, check_run_grant
from domain.ports import Claim, Clock, CoordinatorClient, Mount, Runner
from domain.resources import AutomationSpec
from domain.services.execution import (
    Execution,
    PhaseFinished,
    PhaseOutput,
    PhaseStarted,
    Progress,
    execute,
)
from domain.variables import Redactor
from entrypoints.eventloop import describe
from entrypoints.loops import Backoff, pause
from entrypoints.settings import Settings

log = logging.getLogger("opsicle.worker")
T = TypeVar("T")

PEM_PUBLIC_KEY = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
CHUNK_BYTES = 64 * 1024
FLUSH_SECONDS = 0.5
# How long a phase's start waits to be reported, in case the phase ends meanwhile.
START_REPORT_HOLD_SECONDS = 0.05
CLAIM_WAIT_SECONDS = 30.0

RunnerFactory = Callable[[AutomationSpec], Awaitable[Runner]]


@attrs.frozen
class WorkerOptions:
    concurrency: int = 1
    claim_wait: float = CLAIM_WAIT_SECONDS
    drain_seconds: float = 30.0
    chunk_bytes: int = CHUNK_BYTES
    flush_seconds: float = FLUSH_SECONDS
    work_root: str | None = None
    backoff: Backoff = attrs.field(factory=Backoff)


class LeaseLost(Exception):
    """The run is no longer ours: stop it here and tell nobody."""


def log_record(event: PhaseOutput) -> bytes:
    """One line of a run's stored log: JSON with time, phase, stream and (masked) text."""
    record = {"t": event.at.isoformat(), "p": event.phase, "s": event.stream.value, "m": event.text}
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


class LogUploader:
    """Buffers log records up to ``limit`` bytes and sends them as offset-addressed chunks.

    Memory stays bounded whatever the output size: the buffer never exceeds ``limit`` (a
    writer waits while a full buffer is sent, which in turn slows the phase's pipe), and a
    record larger than ``limit`` goes out in ``limit``-sized slices.
    """

    def __init__(
        self, send: Callable[[int, bytes], Awaitable[None]], offset: int, limit: int
    ) -> None:
        self._send = send
        self._offset = offset
        self._limit = limit
        self._buffer = bytearray()
        self._lock = asyncio.Lock()
        self.largest_chunk = 0
        self.peak_buffer = 0
        self.sent = 0

    async def write(self, record: bytes) -> None:
        async with self._lock:
            if len(self._buffer) + len(record) > self._limit:
                await self._flush()
            while len(record) > self._limit:
                await self._chunk(record[: self._limit])
                record = record[self._limit :]
            self._buffer += record
            self.peak_buffer = max(self.peak_buffer, len(self._buffer))

    async def flush(self) -> None:
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        await self._chunk(data)

    async def _chunk(self, data: bytes) -> None:
        await self._send(self._offset, data)
        self._offset += len(data)
        self.sent += len(data)
        self.largest_chunk = max(self.largest_chunk, len(data))


@attrs.frozen
class LogStats:
    run_id: str
    sent: int
    largest_chunk: int
    peak_buffer: int


class PhaseReports:
    """A run's phase reports, sent in order in the background so no phase waits for one.

    A phase's start is held back for ``hold`` seconds: a phase that ends meanwhile is reported
    once, ended (short phases then cost one report, not two). ``settle`` ends the sending: it
    waits for the report in flight and hands back those not sent yet, which travel with the
    run's completion (one request, one store transaction). A lost lease stops the sending and
    calls ``lost``; any other error (``send`` retries while the coordinator is unreachable, so
    this one is for good) stops it and calls ``failed``.
    """

    def __init__(
        self,
        send: Callable[[PhaseResult], Awaitable[None]],
        lost: Callable[[], None],
        failed: Callable[[Exception], None],
        hold: float = START_REPORT_HOLD_SECONDS,
    ) -> None:
        self._send = send
        self._lost = lost
        self._failed = failed
        self._hold = hold
        self._pending: deque[PhaseResult] = deque()
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settled = False

    def put(self, result: PhaseResult) -> None:
        self._pending.append(result)
        self._more.set()
        if not self._settled and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        held = False
        while self._pending and not self._settled:
            head = self._pending[0]
            if head.status is PhaseStatus.RUNNING:
                if len(self._pending) > 1 and self._pending[1].name == head.name:
                    self._pending.popleft()  # the phase ended: its end says it all
                    continue
                if not held:
                    held = True
                    self._more.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._hold):
                            await self._more.wait()
                    continue
            held = False
            try:
                await self._send(head)
            except LeaseLost:
                self._settled = True
                self._lost()
                return
            except Exception as exc:  # whatever it is, the run must not hang
                self._settled = True
                self._failed(exc)
                return
            self._pending.popleft()

    async def settle(self) -> list[PhaseResult]:
        self._settled = True
        self._more.set()
        if self._task is not None:
            await self._task
        unsent = list(self._pending)
        self._pending.clear()
        return unsent

    async def cancel(self) -> None:
        self._settled = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@attrs.define
class _Held:
    """A run this worker executes: its claim and the flags that steer it."""

    claim: Claim
    lease_deadline: float
    cancel: asyncio.Event = attrs.field(factory=asyncio.Event)
    # Set to send the next heartbeat now rather than at its interval.
    beat: asyncio.Event = attrs.field(factory=asyncio.Event)
    lost: asyncio.Event = attrs.field(factory=asyncio.Event)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)
    hand_back: bool = False
    # The error a background request about the run failed with for good.
    refused: Exception | None = None

    def lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("run %s: %s; stopping it here", self.claim.run.id, why)
        self.lost.set()
        self.cancel.set()

    def cancelled(self) -> None:
        """The coordinator answered that the run was cancelled: stop its phase."""
        if not self.cancel.is_set():
            log.info("run %s: cancelled by the coordinator", self.claim.run.id)
            self.cancel.set()

    def refuse(self, error: Exception) -> None:
        self.refused = self.refused or error
        self.cancel.set()


class PullWorker:
    """``concurrency`` claim slots; each claims a run, executes it to its end, and claims again.

    Stopping (``stop`` set) is ordered: no new claims, running runs get ``drain_seconds`` to
    finish, then they are cancelled and handed back to the coordinator (``release``).
    """

    def __init__(
        self,
        client: CoordinatorClient,
        runner_for: RunnerFactory,
        clock: Clock,
        options: WorkerOptions = WorkerOptions(),
        rng: random.Random | None = None,
        *,
        grants: GrantVerifier | None = None,
        require_grants: bool = False,
    ) -> None:
        self.client = client
        # The approver's pinned public keys: a run carrying a grant executes only if it
        # verifies and matches; ``require_grants`` refuses every run without one.
        self.grants = grants
        self.require_grants = require_grants
        self.runner_for = runner_for
        self.clock = clock
        self.options = options
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self.held: dict[str, _Held] = {}
        self.failure: OpsicleError | None = None
        # The last runs' ends and log figures, for status and tests.
        self.finished: deque[Run] = deque(maxlen=100)
        # Runs this worker ended, by how: a terminal status, handed_back, or lease_lost.
        self.outcomes: Counter[str] = Counter()
        self.log_stats: deque[LogStats] = deque(maxlen=100)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then drain; return when every run is handed over."""
        slots = [
            asyncio.create_task(self._slot(stop), name=f"worker-slot-{i}")
            for i in range(self.options.concurrency)
        ]
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([*slots, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            # A slot ended on its own (the token was refused): stop the others too.
            stop.set()
        await stopper
        _, pending = await asyncio.wait(slots, timeout=self.options.drain_seconds)
        if pending:
            log.info("drain period over: cancelling %d run(s) and handing them back", len(pending))
            for held in list(self.held.values()):
                held.hand_back = True
                held.cancel.set()
            await asyncio.wait(pending)
        for slot in slots:
            with contextlib.suppress(asyncio.CancelledError):
                slot.result()

    def heartbeat_now(self, run_id: str) -> None:
        """Send the heartbeat of run ``run_id`` now, if this worker holds it: its reply says
        whether the run was cancelled."""
        held = self.held.get(run_id)
        if held is not None:
            held.beat.set()

    async def _slot(self, stop: asyncio.Event) -> None:
        failures = 0
        # One task waits for the stop while the slot lives; each claim races it.
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                try:
                    claim = await self._claim(stopping)
                except (Unauthenticated, Forbidden) as exc:
                    self.failure = exc
                    log.error("the coordinator refused this worker: %s", exc.message)
                    return
                except OpsicleError as exc:
                    failures += 1
                    delay = self.options.backoff.delay(failures, self.rng)
                    log.warning("claim failed: %s; trying again in %.1f s", exc.message, delay)
                    await pause(self.clock, delay, stop)
                    continue
                failures = 0
                if claim is not None:
                    await self._execute(claim)
        finally:
            stopping.cancel()

    async def _claim(self, stopping: asyncio.Task[bool]) -> Claim | None:
        claiming = asyncio.create_task(self.client.claim(self.options.claim_wait))
        await asyncio.wait({claiming, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not claiming.done():
            # Stopping: a claim the coordinator grants after this returns to the queue when
            # its lease runs out.
            claiming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claiming
            return None
        return claiming.result()

    # ------------------------------------------------------------------ one run

    async def _execute(self, claim: Claim) -> None:
        run_id = claim.run.id
        held = _Held(claim, self.clock.monotonic() + claim.lease_seconds)
        self.held[run_id] = held

        async def send_log(offset: int, data: bytes) -> None:
            keep = await self._call(held, lambda: self.client.send_log(claim, offset, data))
            if not keep:
                held.cancelled()

        uploader = LogUploader(send_log, claim.log_offset, self.options.chunk_bytes)
        workdir = Path(
            tempfile.mkdtemp(prefix=f"opsicle-run-{run_id}-", dir=self.options.work_root)
        )

        async def report(result: PhaseResult) -> None:
            await self._call(held, lambda: self.client.report_phase(claim, result))

        reports = PhaseReports(report, lambda: held.lose("the lease was lost"), held.refuse)
        helpers = [
            asyncio.create_task(self._heartbeats(held)),
            asyncio.create_task(self._flushes(held, uploader)),
        ]
        log.info("run %s (%s): claimed, attempt %d", run_id, claim.run.name, claim.fencing_token)
        try:
            status, reason = await self._run(held, uploader, workdir, reports)
            unsent = await reports.settle()
            if held.lost.is_set():
                self.outcomes["lease_lost"] += 1
                return
            if held.refused is not None:
                raise held.refused
            # Heartbeats go on until the end is reported: the lease must outlive a slow report.
            await uploader.flush()
            if held.hand_back and status is RunStatus.CANCELLED:
                for result in unsent:
                    await report(result)
                await self._call(held, lambda: self.client.release(claim))
                held.done.set()
                self.outcomes["handed_back"] += 1
                log.info("run %s: handed back", run_id)
            else:
                await self._call(
                    held, lambda: self.client.complete(claim, status, reason, unsent)
                )
                held.done.set()
                self.outcomes[status.value] += 1
                log.info("run %s: %s%s", run_id, status.value, f" ({reason})" if reason else "")
        except LeaseLost:
            held.lose("the lease was lost")
            self.outcomes["lease_lost"] += 1
        except Exception as exc:  # one run's error must not end the worker
            await self._give_up(held, exc)
        finally:
            held.done.set()
            await reports.cancel()
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:
                os.rmdir(workdir)  # a run that left nothing behind: one system call
            except OSError:
                # On a thread: removing a directory tree blocks for a while.
                await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
            del self.held[run_id]
            self.log_stats.append(
                LogStats(run_id, uploader.sent, uploader.largest_chunk, uploader.peak_buffer)
            )

    async def _run(
        self, held: _Held, uploader: LogUploader, workdir: Path, reports: PhaseReports
    ) -> tuple[RunStatus, str]:
        claim = held.claim
        spec = claim.run.spec
        try:
            check_run_grant(
                self.grants, claim.run, claim.env, self.clock.now(), required=self.require_grants
            )
        except GrantRefused as exc:
            log.warning("run %s: refused: %s", claim.run.id, exc.reason)
            return RunStatus.FAILED, exc.message
        try:
            runner = await self.runner_for(spec)
            mounts = _mounts(spec, workdir)
            await runner.prepare(spec, mounts)
        except OpsicleError as exc:
            return RunStatus.FAILED, exc.message
        secrets = [claim.env[name] for name in claim.secret_env if name in claim.env]
        parts = {p for s in secrets for p in (s, *s.splitlines()) if p.strip()}
        ctx = Execution(
            runner=runner,
            clock=self.clock,
            workdir=str(workdir),
            mounts=mounts,
            env=dict(claim.env),
            redactor=Redactor(tuple(sorted(parts, key=len, reverse=True))),
        )

        async def sink(event: Progress) -> None:
            if held.lost.is_set():
                return
            try:
                if isinstance(event, PhaseOutput):
                    await uploader.write(log_record(event))
                elif isinstance(event, PhaseStarted):
                    reports.put(PhaseResult(event.phase.name, PhaseStatus.RUNNING, None, event.at))
                elif isinstance(event, PhaseFinished):
                    reports.put(event.result)
            except LeaseLost:
                held.lose("the lease was lost")

        # execute() takes the run as queued and moves it to running itself.
        queued = attrs.evolve(
            claim.run,
            status=RunStatus.QUEUED,
            phases=tuple(PhaseResult(p.name) for p in spec.phases),
        )
        try:
            ended = await execute(queued, ctx, sink, held.cancel)
        except Exception as exc:
            log.exception("run %s: the worker failed while executing it", claim.run.id)
            return RunStatus.FAILED, f"the worker failed: {type(exc).__name__}: {exc}"
        self.finished.append(ended)
        return ended.status, ended.reason

    async def _heartbeats(self, held: _Held) -> None:
        claim = held.claim
        interval = claim.heartbeat_seconds or claim.lease_seconds / 3
        delay = interval
        while not await pause(self.clock, delay, held.done, held.beat):
            held.beat.clear()
            delay = interval
            try:
                keep = await self.client.heartbeat(claim)
            except (Conflict, NotFound):
                if not held.done.is_set():
                    held.lose("the coordinator says the lease is gone")
                return
            except OpsicleError as exc:
                if self.clock.monotonic() >= held.lease_deadline:
                    # Someone else may hold the run now: never run it twice at once.
                    held.lose(f"the lease ran out while the coordinator was unreachable ({exc})")
                    return
                delay = min(interval, max(0.05, held.lease_deadline - self.clock.monotonic()) / 3)
                continue
            held.lease_deadline = self.clock.monotonic() + claim.lease_seconds
            if not keep:
                held.cancelled()

    async def _flushes(self, held: _Held, uploader: LogUploader) -> None:
        try:
            while not await pause(self.clock, self.options.flush_seconds, held.done):
                await uploader.flush()
        except LeaseLost:
            pass
        except Exception as exc:  # the run is given up, see _execute
            held.refuse(exc)

    async def _give_up(self, held: _Held, error: Exception) -> None:
        """A request about the run failed for good (neither a lost lease nor an unreachable
        coordinator, which are retried): hand the run back so that another attempt runs it."""
        run_id = held.claim.run.id
        try:
            await self._call(held, lambda: self.client.release(held.claim))
        except LeaseLost:
            self.outcomes["lease_lost"] += 1
            return
        except Exception as exc:
            log.error(
                "run %s: a request about it failed (%s); stopped it here, and handing it back "
                "failed too (%s): the coordinator queues it again when its lease runs out",
                run_id,
                _describe(error),
                _describe(exc),
            )
            self.outcomes["lease_lost"] += 1
            return
        log.error(
            "run %s: a request about it failed (%s); stopped it here and handed it back",
            run_id,
            _describe(error),
        )
        self.outcomes["handed_back"] += 1

    async def _call(self, held: _Held, request: Callable[[], Awaitable[T]]) -> T:
        """Send a fenced request; retry with backoff while the coordinator is unreachable and
        the lease may still be ours; ``LeaseLost`` when it is not."""
        failures = 0
        while True:
            if held.lost.is_set():
                raise LeaseLost
            try:
                return await request()
            except (Conflict, NotFound) as exc:
                held.lose(exc.message)
                raise LeaseLost from exc
            except (Unavailable, RateLimited):
                failures += 1
                if self.clock.monotonic() >= held.lease_deadline:
                    held.lose("the lease ran out while the coordinator was unreachable")
                    raise LeaseLost from None
                delay = self.options.backoff.delay(failures, self.rng)
                delay = min(delay, max(0.05, held.lease_deadline - self.clock.monotonic()))
                if await pause(self.clock, delay, held.lost):
                    raise LeaseLost from None


def _describe(error: BaseException) -> str:
    return error.message if isinstance(error, OpsicleError) else f"{type(error).__name__}: {error}"


def _mounts(spec: AutomationSpec, workdir: Path) -> tuple[Mount, ...]:
    """Volume mounts: absolute host paths as given, relative ones inside the run's directory."""
    mounts = []
    for m in spec.volume_mounts:
        host = Path(m.host).expanduser()
        host = host if host.is_absolute() else workdir / host
        host.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(host=str(host.resolve()), container=m.container))
    return tuple(mounts)


# ---------------------------------------------------------------------- the worker command


def runner_factory(settings: Settings) -> RunnerFactory:
    """The runner for each claimed run, chosen the way ``opsicle run`` chooses it; processes
    run on one process runner (which probes bubblewrap the first time only)."""
    from adapters.runners.process import ProcessRunner
    from entrypoints.runner_choice import choose_runner

    grace = float(settings["grace-seconds"])
    process = ProcessRunner(grace_seconds=grace)

    async def runner_for(spec: AutomationSpec) -> Runner:
        return await choose_runner(
            str(settings["runner"]),
            spec,
            docker_host=settings["docker-host"],
            pull=False,
            grace_seconds=grace,
            note=log.info,
            process=process,
        )

    return runner_for


def read_token_file(path: Path) -> tuple[str | None, str | None]:
    """Token id and secret from a file ``opsicle create org token --output-dir`` wrote:
    ``<id>.env`` (OPSICLE_TOKEN_ID and OPSICLE_TOKEN) or ``<id>.token`` (the secret)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(
            f"the token file {path} cannot be read",
            errors=(FieldError("token-file", f"cannot be read: {exc.strerror or exc}"),),
        ) from exc
    if path.suffix == ".token":
        return path.stem, text.strip() or None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    return values.get("OPSICLE_TOKEN_ID"), values.get("OPSICLE_TOKEN")


def coordinator_urls(value: object) -> list[str]:
    """URLs from flags (a list), the environment (comma-separated) or the config (either)."""
    items = value if isinstance(value, list | tuple) else str(value or "").split(",")
    return [str(u).strip() for u in items if str(u).strip()]


def pinned_verifier(value: object) -> GrantVerifier | None:
    """The verifier of the ``approver-keys`` setting's PEM files, or None when none is set.

    Raises ``Invalid`` naming the file that cannot be read or holds no Ed25519 public key.
    """
    from adapters.crypto.grants import Ed25519GrantVerifier, load_public_key

    paths = coordinator_urls(value) if value else []
    keys = []
    for path in paths:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise Invalid(
                f"the approver key {path} cannot be read",
                errors=(FieldError("approver-keys", f"cannot be read: {exc}", path),),
            ) from exc
        # What `opsicle get approver-key > FILE` writes: '# key …' lines and one PEM block
        # per key (retired keys too); a file of base64 raw bytes has no block.
        blocks = PEM_PUBLIC_KEY.findall(text) or [text]
        keys += [load_public_key(block, source=path) for block in blocks]
    return Ed25519GrantVerifier(keys) if keys else None


def resolve_token(settings: Settings, token_file: str | None) -> tuple[str, str]:
    """The worker's token id and secret: flags > environment > config file > ``--token-file``."""
    token_id, token = settings["token-id"], settings["token"]
    if token_file:
        file_id, file_token = read_token_file(Path(token_file).expanduser())
        # Flags, environment and config name the token more precisely than a file does.
        token_id = token_id if settings.origin("token-id") != "default" else file_id
        token = token if settings.origin("token") != "default" else file_token
    missing = [n for n, v in (("token-id", token_id), ("token", token)) if not v]
    if missing:
        raise Invalid(
            "the worker needs its org token",
            errors=tuple(
                FieldError(
                    n,
                    "is required: --token-id and --token, OPSICLE_TOKEN_ID and OPSICLE_TOKEN, "
                    "the config file, or --token-file",
                )
                for n in missing
            ),
        )
    return str(token_id), str(token)


async def serve_worker(settings: Settings, *, name: str | None, token: tuple[str, str]) -> int:
    """Pull and execute runs until SIGINT or SIGTERM, then drain; the exit code says why."""
    from entrypoints.listen import listen_socket

    listen = settings["metrics-listen"]
    if not listen:
        return await _serve_worker(settings, name=name, token=token)
    # Taken now and held: a port in use stops the command here, before any run is claimed.
    with listen_socket(str(listen), "metrics-listen") as metrics:
        return await _serve_worker(settings, name=name, token=token, metrics=metrics)


async def _serve_worker(
    settings: Settings,
    *,
    name: str | None,
    token: tuple[str, str],
    metrics: socket.socket | None = None,
) -> int:
    import os
    import secrets as random_ids
    import signal

    from adapters.http.coordinator_client import HttpCoordinatorClient
    from adapters.http.schemas.worker import parse_labels
    from adapters.system import SystemClock
    from entrypoints.exitcodes import ExitCode, for_error
    from entrypoints.version import VERSION

    urls = coordinator_urls(settings["coordinator-url"])
    worker_name = name or socket.gethostname() or "worker"
    worker_id = f"{worker_name}-{os.getpid()}-{random_ids.token_hex(3)}"
    client = HttpCoordinatorClient(
        urls,
        *token,
        worker_id=worker_id,
        name=worker_name,
        version=VERSION,
        labels=parse_labels(str(settings["labels"] or "")),
    )
    worker = PullWorker(
        client,
        runner_factory(settings),
        SystemClock(),
        WorkerOptions(
            concurrency=int(settings["concurrency"]),
            drain_seconds=float(settings["drain-seconds"]),
        ),
        grants=pinned_verifier(settings["approver-keys"]),
    )
    try:
        # Started with no coordinator to reach, the worker says so and exits (code 5).
        await client.reachable()
    except OpsicleError as exc:
        await client.aclose()
        raise Unavailable(f"worker cannot start: {exc.message}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker %s (%s) pulling from %s with %d slot(s) (event loop: %s)",
        worker_name,
        worker_id,
        ", ".join(urls),
        worker.options.concurrency,
        describe(),
    )
    metrics_died = False
    try:
        if metrics is not None:
            listen = str(settings["metrics-listen"])
            metrics_died = await work_with_metrics(
                worker, stop, serve_metrics(worker, listen, metrics, stop), listen
            )
        else:
            await worker.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await client.aclose()
    log.info("worker stopped")
    if worker.failure:
        return int(for_error(worker.failure))
    return int(ExitCode.ERROR if metrics_died else ExitCode.OK)


async def work_with_metrics(
    worker: PullWorker, stop: asyncio.Event, serving: Awaitable[None], listen: str
) -> bool:
    """Run ``worker`` until ``stop`` is set, its metrics server (``serving``) beside it; a
    server that ends first stops the worker (it drains) with one line. True when it did."""
    working = asyncio.create_task(worker.run(stop))
    server = asyncio.ensure_future(serving)
    await asyncio.wait({working, server}, return_when=asyncio.FIRST_COMPLETED)
    died = server.done() and not stop.is_set()
    if died:
        error = server.exception()
        log.error(
            "the metrics server on %s (--metrics-listen) stopped%s; stopping the worker",
            listen,
            f": {_describe(error)}" if error else "",
        )
        stop.set()
    try:
        await working
    finally:
        stop.set()
        await asyncio.wait({server})
    return died


async def serve_metrics(
    worker: PullWorker, listen: str, sock: socket.socket, stop: asyncio.Event
) -> None:
    """/healthz and /metrics (with ``opsicle_worker_runs_total{outcome}``) on ``sock``, which
    listens on ``listen``, until ``stop`` is set; the server takes the socket over."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from entrypoints.http.common import build_app, worker_runs

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    app = build_app("worker", [], [], [worker_runs(worker.outcomes)])
    log.info("worker metrics on http://%s/metrics", listen)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
