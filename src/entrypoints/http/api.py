"""Declared JSON endpoints: one declaration gives the route, body parsing, auth and OpenAPI."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Union

import attrs
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from adapters.serialization import camel, from_json, to_json
from domain.errors import FieldError, Invalid, Unauthenticated
from domain.services.platform import Caller

MAX_BODY = 1 << 20
# Query parameters' whole numbers: 18 digits always fit a signed 64-bit integer.
MAX_DIGITS = 18


@attrs.frozen
class Call:
    """One request as a use case sees it: who asks, the path and query parameters, the body."""

    caller: Caller
    path: Mapping[str, str]
    query: Mapping[str, str]
    body: Any
    request: Request
    session_id: str | None = None


Handler = Callable[[Call], Awaitable[Any]]
Authenticator = Callable[[Request, Caller], Awaitable[tuple[Caller, str]]]


@attrs.frozen
class QueryParam:
    name: str
    description: str = ""
    type: type = str


@attrs.frozen
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type | None = None
    response: Any = None
    status: int = 200
    auth: bool = True
    query: tuple[QueryParam, ...] = ()


class Api:
    """Collects endpoints; ``routes()`` serves them and ``openapi()`` describes them."""

    def __init__(self, title: str, version: str, authenticate: Authenticator | None = None):
        self.title = title
        self.version = version
        self.authenticate = authenticate
        self.endpoints: list[Endpoint] = []

    def endpoint(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        body: type | None = None,
        response: Any = None,
        status: int = 200,
        auth: bool = True,
        query: Sequence[QueryParam] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method.upper(),
                    path,
                    handler,
                    summary,
                    tag,
                    body,
                    response,
                    status,
                    auth,
                    tuple(query),
                )
            )
            return handler

        return register

    def routes(self) -> list[Route]:
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        routes = [
            Route(path, self._dispatch(methods), methods=list(methods))
            for path, methods in by_path.items()
        ]
        routes.append(Route("/api/v1/openapi.json", self._openapi_endpoint, methods=["GET"]))
        routes.append(Route("/api/v1/docs", self._docs_endpoint, methods=["GET"]))
        return routes

    def _dispatch(
        self, methods: Mapping[str, Endpoint]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def dispatch(request: Request) -> Response:
            ep = methods[request.method]
            caller = Caller(
                source_ip=request.client.host if request.client else "",
                user_agent=request.headers.get("user-agent", ""),
            )
            session_id = None
            if ep.auth:
                if self.authenticate is None:
                    raise Unauthenticated("this server has no authentication")
                caller, session_id = await self.authenticate(request, caller)
            body = await _read_body(request, ep.body)
            query = dict(request.query_params.items())
            result = await ep.handler(
                Call(caller, dict(request.path_params), query, body, request, session_id)
            )
            if isinstance(result, Response):
                return result
            if result is None:
                return Response(status_code=204 if ep.status == 200 else ep.status)
            return JSONResponse(to_json(result), status_code=ep.status)

        return dispatch

    async def _openapi_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.openapi())

    async def _docs_endpoint(self, request: Request) -> Response:
        return HTMLResponse(DOCS_PAGE.replace("{{TITLE}}", self.title))

    def openapi(self) -> dict[str, Any]:
        components: dict[str, Any] = {
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "code"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                    "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        }
        paths: dict[str, Any] = {}
        for ep in self.endpoints:
            op: dict[str, Any] = {
                "summary": ep.summary,
                "tags": [ep.tag],
                "operationId": ep.handler.__name__,
                "responses": {
                    "default": {
                        "description": "a problem (RFC 9457)",
                        "content": {
                            "application/problem+json": {
                                "schema": {"$ref": "#/components/schemas/Problem"}
                            }
                        },
                    }
                },
            }
            if ep.response is None:
                op["responses"][str(204 if ep.status == 200 else ep.status)] = {
                    "description": "done"
                }
            else:
                op["responses"][str(ep.status)] = {
                    "description": "success",
                    "content": {"application/json": {"schema": schema(ep.response, components)}},
                }
            if ep.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema(ep.body, components)}},
                }
            params = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_params(ep.path)
            ] + [
                {
                    "name": q.name,
                    "in": "query",
                    "required": False,
                    "description": q.description,
                    "schema": schema(q.type, components),
                }
                for q in ep.query
            ]
            if params:
                op["parameters"] = params
            if ep.auth:
                op["security"] = [{"session": []}]
            paths.setdefault(_openapi_path(ep.path), {})[ep.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"session": {"type": "http", "scheme": "bearer"}},
            },
        }


async def bounded_body(request: Request, limit: int, title: str) -> bytes:
    """The request's body, refused (``title``) as soon as it is known to pass ``limit`` bytes:
    from its declared length, else while it arrives, so an oversized body is never held."""

    def too_large() -> Invalid:
        return Invalid(title, errors=(FieldError("body", f"at most {limit} bytes"),))

    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large()
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise too_large()
    return bytes(data)


async def _read_body(request: Request, kind: type | None) -> Any:
    if kind is None:
        return None
    raw = await bounded_body(request, MAX_BODY, "the request body is too large")
    try:
        data = json.loads(raw or b"{}", parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise Invalid(
            "the request body is not JSON", errors=(FieldError("body", f"not valid JSON: {why}"),)
        ) from None
    where = _lone_surrogate(data)
    if where is not None:
        raise Invalid(
            "the request body is not valid text",
            errors=(FieldError(where, "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"),),
        )
    return from_json(data, kind)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _lone_surrogate(data: Any) -> str | None:
    """Where in ``data`` (JSON as parsed) a string holds a lone surrogate, which JSON's
    \\u escapes can write but no store can keep; None when nowhere."""
    stack: list[tuple[str, Any]] = [("body", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return where
        elif isinstance(value, dict):
            for key, item in value.items():
                inner = key if where == "body" else f"{where}.{key}"
                stack += [(inner, key), (inner, item)]
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def whole_number(raw: str, name: str, expected: str) -> int:
    """The query parameter ``name``, ``raw``, as a whole number: ASCII digits only (``int``
    takes other scripts' digits too), and few enough for a 64-bit column."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS:
        raise Invalid(
            f"the query parameter {name} is not valid", errors=(FieldError(name, expected),)
        )
    return int(raw)


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def _openapi_path(path: str) -> str:
    return "/".join(
        "{" + part[1:-1].split(":")[0] + "}" if part.startswith("{") else part
        for part in path.split("/")
    )


def schema(kind: Any, components: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema for a type used in bodies: attrs classes become named components."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (Union, types.UnionType):
        inner = [schema(a, components) for a in args if a is not type(None)]
        nullable = type(None) in args
        base = inner[0] if len(inner) == 1 else {"anyOf": inner}
        return {"anyOf": [base, {"type": "null"}]} if nullable else base
    if origin in (list, tuple, Sequence, typing.Sequence) or kind in (list, tuple):
        item = args[0] if args else Any
        return {"type": "array", "items": schema(item, components)}
    if origin in (dict, Mapping, typing.Mapping):
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": schema(value, components)}
    if isinstance(kind, type) and issubclass(kind, Enum):
        return {"type": "string", "enum": [m.value for m in kind]}
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        return {"type": "integer"}
    if kind is float:
        return {"type": "number"}
    if kind is str:
        return {"type": "string"}
    if kind is datetime:
        return {"type": "string", "format": "date-time"}
    if isinstance(kind, type) and attrs.has(kind):
        name = kind.__name__
        if name not in components:
            components[name] = {}  # placeholder, so recursive types terminate
            hints = typing.get_type_hints(kind)
            props, required = {}, []
            for field in attrs.fields(kind):
                props[camel(field.name)] = schema(hints[field.name], components)
                if field.default is attrs.NOTHING:
                    required.append(camel(field.name))
            components[name] = {
                "type": "object",
                "properties": props,
                "additionalProperties": False,
                **({"required": required} if required else {}),
            }
        return {"$ref": f"#/components/schemas/{name}"}
    return {}


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{TITLE}} API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.op{margin:.6rem 0;padding:.5rem .8rem;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:monospace}
.get{color:#0a6}.post{color:#06c}.patch,.put{color:#b60}.delete{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f6f6;padding:.6rem;overflow:auto}
details summary{cursor:pointer}
</style></head><body>
<h1>{{TITLE}} API</h1>
<p>The machine-readable description is <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).
Authenticated operations take <code>Authorization: Bearer &lt;session token&gt;</code>.</p>
<div id="ops">Loading…</div>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  const byTag = {};
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops))
      (byTag[op.tags[0]] ||= []).push({path, method, op});
  const esc = s => String(s).replace(/[&<>]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;"}[c]));
  const show = s => "<pre>" + esc(JSON.stringify(s, null, 2)) + "</pre>";
  let html = "";
  for (const [tag, ops] of Object.entries(byTag)) {
    html += "<h2>" + esc(tag) + "</h2>";
    for (const {path, method, op} of ops) {
      const body = op.requestBody ? op.requestBody.content["application/json"].schema : null;
      const ok = Object.entries(op.responses).find(([code]) => code !== "default");
      html += '<div class="op"><span class="m ' + method + '">' + method.toUpperCase() +
        "</span> <code>" + esc(path) + "</code> " + esc(op.summary) +
        (op.security ? " 🔒" : "") + "<details><summary>details</summary>" +
        (body ? "<b>Request</b>" + show(body) : "") +
        (ok ? "<b>Response " + ok[0] + "</b>" + show(ok[1].content ?
          ok[1].content["application/json"].schema : "no content") : "") + "</details></div>";
    }
  }
  html += "<h2>Schemas</h2>" + show(doc.components.schemas);
  document.getElementById("ops").innerHTML = html;
});
</script></body></html>
"""
