"""The controller role's HTTP app: the REST API for people, under /api/v1."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp

from domain.errors import Unauthenticated
from domain.ports import HealthCheck
from domain.services.platform import Caller, Platform
from domain.services.sessions import authenticate
from entrypoints.http.api import Api
from entrypoints.http.common import build_app
from entrypoints.http.routes import (
    accounts,
    approvals,
    chat_links,
    orgs,
    runs,
    templates,
    webhooks,
    workers,
)
from entrypoints.version import VERSION


def controller_api(p: Platform) -> Api:
    async def bearer(request: Request, caller: Caller) -> tuple[Caller, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("log in first: this needs 'Authorization: Bearer <token>'")
        return await authenticate(p, token.strip(), caller)

    api = Api("Opsicle controller", VERSION, bearer)
    accounts.register(api, p)
    orgs.register(api, p)
    templates.register(api, p)
    runs.register(api, p)
    approvals.register(api, p)
    chat_links.register(api, p)
    workers.register(api, p)
    webhooks.register(api, p)
    return api


def controller_routes(p: Platform) -> list[Route]:
    return controller_api(p).routes()


def create_app(p: Platform, checks: Sequence[HealthCheck]) -> ASGIApp:
    return build_app("controller", controller_routes(p), checks, platform=p)
