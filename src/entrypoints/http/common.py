"""What every server role serves: probes, Prometheus metrics, request ids and problem details."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.automations import TERMINAL, RunStatus
from domain.errors import Invalid, OpsicleError, RateLimited, Unauthenticated
from domain.ports import HealthCheck
from entrypoints.logs import request_id

if TYPE_CHECKING:
    from domain.services.platform import Platform
    from entrypoints.bootstrap import DispatchFigures

log = logging.getLogger("opsicle.http")
READY_TIMEOUT = 2.0


def problem(
    status: int, code: str, title: str, detail: str = "", errors: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, object] = {
        "type": f"https://opsicle.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpsicleError)
    errors = dict(exc.field_map()) if isinstance(exc, Invalid) else None
    response = problem(exc.status, exc.code, exc.message, str(exc) if errors else "", errors)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(max(1, exc.retry_after))
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="opsicle"'
    return response


class Instrumentation:
    """Per-app metrics registry (no process-wide state) and the ASGI middleware feeding it."""

    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "opsicle_http_requests",
            "HTTP requests answered",
            ["role", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "opsicle_http_request_seconds",
            "HTTP request latency",
            ["role", "method", "route"],
            registry=self.registry,
        )
        # One series per store the role checks (a fixed, small set), set by each /readyz.
        self.store_up = Gauge(
            "opsicle_store_up",
            "1 when the store answered the last readiness check, 0 when it did not",
            ["role", "store"],
            registry=self.registry,
        )
        self.role = role
        # Read before each scrape: figures that live in the stores.
        self.refresh: list[Callable[[], Awaitable[None]]] = []

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = dict(scope.get("headers") or [])
            rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
            token = request_id.set(rid)
            status = 500
            started = time.perf_counter()

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-request-id", rid.encode("latin-1")),
                    ]
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                route = _route_template(scope)
                self.requests.labels(self.role, scope["method"], route, str(status)).inc()
                self.latency.labels(self.role, scope["method"], route).observe(
                    time.perf_counter() - started
                )
                request_id.reset(token)

        return wrapped

    async def metrics(self, request: Request) -> Response:
        if self.refresh:
            # Figures read from the stores; on a store outage the last ones are shown.
            results = await asyncio.gather(
                *(asyncio.wait_for(r(), READY_TIMEOUT) for r in self.refresh),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("metrics: a figure was not refreshed: %s", result)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def probe_routes(checks: Sequence[HealthCheck], instrumentation: Instrumentation) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        results = await asyncio.gather(*(_check(c) for c in checks))
        report = dict(zip((c.name for c in checks), results, strict=True))
        for name, result in report.items():
            instrumentation.store_up.labels(instrumentation.role, name).set(result == "ok")
        ok = all(r == "ok" for r in results)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": report},
            status_code=200 if ok else 503,
        )

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", instrumentation.metrics),
    ]


async def _check(check: HealthCheck) -> str:
    try:
        await asyncio.wait_for(check.check(), READY_TIMEOUT)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT:g} s"
    except OpsicleError as exc:
        return exc.message
    return "ok"


class _Figure:
    """A counter read at scrape time from a number the role keeps."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


def lease_expiries(figures: DispatchFigures) -> Collector:
    """``opsicle_lease_expiries_total``: runs this process's lease reaper took back."""
    return _Figure(
        "opsicle_lease_expiries",
        "Runs whose lease expired without a heartbeat, queued again or failed by the reaper",
        lambda: figures.lease_expiries,
    )


class RunFigures:
    """Queue depth and run outcomes, read from the platform store before each scrape.

    The store is shared, so every process reports the same cluster-wide totals: aggregate
    them with ``max``, not ``sum``. One series per status keeps the cardinality fixed.
    """

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._counts: dict[RunStatus, int] = {}

    async def refresh(self) -> None:
        async with self._platform.uow() as uow:
            self._counts = await uow.runs.count_by_status()

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "opsicle_queue_depth",
            "Runs queued and waiting for a worker, over every org",
            value=self._counts.get(RunStatus.QUEUED, 0),
        )
        outcomes = CounterMetricFamily(
            "opsicle_run_outcomes", "Runs that ended, by terminal status", labels=["status"]
        )
        for status in sorted(TERMINAL):
            outcomes.add_metric([status.value], self._counts.get(status, 0))
        yield outcomes


# What a worker's run can come to: a terminal status, or given up without one.
WORKER_OUTCOMES = (*sorted(s.value for s in TERMINAL), "handed_back", "lease_lost")


def worker_runs(outcomes: Mapping[str, int]) -> Collector:
    """``opsicle_worker_runs_total{outcome}``: the runs a worker ended, by how they ended."""

    class WorkerRuns:
        def collect(self) -> Iterator[Metric]:
            family = CounterMetricFamily(
                "opsicle_worker_runs", "Runs this worker executed, by outcome", labels=["outcome"]
            )
            for outcome in WORKER_OUTCOMES:
                family.add_metric([outcome], outcomes.get(outcome, 0))
            yield family

    return WorkerRuns()


def build_app(
    role: str,
    routes: list[Route],
    checks: Sequence[HealthCheck],
    collectors: Sequence[Collector] = (),
    *,
    platform: Platform | None = None,
) -> ASGIApp:
    """The role's app with probes and /metrics; with ``platform``, /metrics also reports the
    queue depth and run outcomes (``RunFigures``)."""
    instrumentation = Instrumentation(role)
    for collector in collectors:
        instrumentation.registry.register(collector)
    if platform is not None:
        figures = RunFigures(platform)
        instrumentation.registry.register(figures)
        instrumentation.refresh.append(figures.refresh)
    app = Starlette(
        routes=[*probe_routes(checks, instrumentation), *routes],
        exception_handlers={OpsicleError: _domain_error},
    )
    return instrumentation.middleware(app)
