"""The typed SDK's transport: JSON over HTTP to a controller, problems mapped to domain errors."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from adapters.serialization import from_json, to_json
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

T = TypeVar("T")
_BY_STATUS: Mapping[int, type[OpsicleError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


class ControllerClient:
    """One connection pool to a controller; area clients (accounts, orgs, …) wrap it."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        user_agent: str = "opsicle-cli",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"user-agent": user_agent}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout, headers=headers
        )

    async def __aenter__(self) -> ControllerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, object] | None = None,
        response: type[T] | None = None,
    ) -> Any:
        """Send one request; return the response structured as ``response`` (or None)."""
        if "//" in path or path.endswith("/"):
            # An empty name or id would address another resource (or a redirect to it).
            raise Invalid(
                "a name or id is empty",
                errors=(FieldError("path", f"{method} {path}: every name and id is needed"),),
            )
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            reply = await self._http.request(
                method,
                path,
                json=None if body is None else to_json(body),
                params=query,
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the controller at {self.base_url} did not answer ({type(exc).__name__}: {exc})"
            ) from exc
        if not reply.is_success:
            raise problem_error(reply)
        if response is None or reply.status_code == 204:
            return None
        return from_json(reply.json(), response)


def problem_error(reply: httpx.Response) -> OpsicleError:
    """The domain error an RFC 9457 problem response stands for."""
    try:
        data = reply.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    title = str(data.get("title") or f"the controller answered {reply.status_code}")
    code = data.get("code")
    status = reply.status_code
    if status == 429:
        retry = reply.headers.get("retry-after", "")
        return RateLimited(title, retry_after=int(retry) if retry.isdigit() else 60)
    if status in (400, 422):
        errors = data.get("errors") or {}
        return Invalid(
            title, code=code, errors=tuple(FieldError(str(k), str(v)) for k, v in errors.items())
        )
    kind = _BY_STATUS.get(status, OpsicleError)
    return kind(title, code=code if isinstance(code, str) else None)
