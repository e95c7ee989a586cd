"""The coordinator role's HTTP app: the worker API under /api/v1/worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from domain.ports import HealthCheck
from domain.services.dispatch import Dispatch
from domain.services.platform import Platform
from entrypoints.http.api import Api
from entrypoints.http.common import build_app
from entrypoints.http.routes import worker_api
from entrypoints.http.routes.worker_api import worker_authenticator
from entrypoints.version import VERSION


def coordinator_api(p: Platform, d: Dispatch, stopping: asyncio.Event) -> Api:
    """Workers authenticate with their org token; ``stopping`` answers held claims at once."""
    api = Api("Opsicle coordinator", VERSION, worker_authenticator(p))
    worker_api.register(api, p, d, stopping)
    return api


def coordinator_routes(
    p: Platform,
    d: Dispatch,
    stopping: asyncio.Event,
    *,
    beside_controller: bool = False,
) -> list[Route]:
    """The worker API's routes; ``beside_controller`` (standalone) serves its OpenAPI document
    at /api/v1/worker/openapi.json, since the controller's owns /api/v1/openapi.json."""
    api = coordinator_api(p, d, stopping)
    routes = api.routes()
    if not beside_controller:
        return routes

    async def openapi(request: Request) -> Response:
        return JSONResponse(api.openapi())

    shared = ("/api/v1/openapi.json", "/api/v1/docs")
    return [
        *(r for r in routes if r.path not in shared),
        Route("/api/v1/worker/openapi.json", openapi, methods=["GET"]),
    ]


def create_app(
    p: Platform,
    d: Dispatch,
    checks: Sequence[HealthCheck],
    stopping: asyncio.Event,
    *,
    collectors: Sequence[Collector] = (),
) -> ASGIApp:
    return build_app(
        "coordinator", coordinator_routes(p, d, stopping), checks, collectors, platform=p
    )
