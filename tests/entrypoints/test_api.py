"""Declared endpoints: body parsing, auth, problem responses, OpenAPI and the offline docs page."""

from __future__ import annotations

import re

import attrs
import httpx
from starlette.requests import Request

from domain.errors import Conflict, Unauthenticated
from domain.services.platform import Caller
from entrypoints.http.api import Api, Call, QueryParam
from entrypoints.http.common import build_app


@attrs.frozen
class Greeting:
    name: str
    times: int = 1


@attrs.frozen
class Reply:
    text: str
    caller: str


async def authenticate(request: Request, caller: Caller) -> tuple[Caller, str]:
    if request.headers.get("authorization") != "Bearer good":
        raise Unauthenticated("log in first")
    return attrs.evolve(caller, user_id="u1"), "s1"


def make_api() -> Api:
    api = Api("Test", "1.0", authenticate)

    @api.endpoint(
        "POST",
        "/api/v1/greetings/{who}",
        summary="Greet",
        tag="demo",
        body=Greeting,
        response=Reply,
        status=201,
        query=(QueryParam("loud", "shout?"),),
    )
    async def greet(call: Call) -> Reply:
        text = f"hello {call.body.name} " * call.body.times + call.path["who"]
        return Reply(text.upper() if call.query.get("loud") else text, call.caller.actor)

    @api.endpoint("DELETE", "/api/v1/greetings/{who}", summary="Forget", tag="demo", auth=False)
    async def forget(call: Call) -> None:
        if call.path["who"] == "taken":
            raise Conflict("cannot forget that one")

    return api


async def request(method: str, url: str, **kwargs: object) -> httpx.Response:
    app = build_app("test", make_api().routes(), [])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]


async def test_bodies_are_parsed_and_replies_serialised() -> None:
    reply = await request(
        "POST",
        "/api/v1/greetings/bob?loud=1",
        json={"name": "ann"},
        headers={"authorization": "Bearer good"},
    )
    assert reply.status_code == 201
    assert reply.json() == {"text": "HELLO ANN BOB", "caller": "u1"}


async def test_bad_bodies_get_field_errors() -> None:
    reply = await request(
        "POST",
        "/api/v1/greetings/bob",
        json={"name": 3, "extra": 1},
        headers={"authorization": "Bearer good"},
    )
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "invalid"
    assert reply.json()["errors"] == {"body": "unknown field: extra", "name": "expected a string"}
    broken = await request(
        "POST",
        "/api/v1/greetings/bob",
        content=b"{not json",
        headers={"authorization": "Bearer good"},
    )
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["errors"]["body"]


async def test_auth_is_required_where_declared() -> None:
    reply = await request("POST", "/api/v1/greetings/bob", json={"name": "a"})
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert (await request("DELETE", "/api/v1/greetings/x")).status_code == 204
    conflict = await request("DELETE", "/api/v1/greetings/taken")
    assert conflict.status_code == 409 and conflict.json()["title"] == "cannot forget that one"


def test_openapi_lists_every_route_with_its_schemas() -> None:
    api = make_api()
    doc = api.openapi()
    assert doc["openapi"] == "3.1.0"
    ops = doc["paths"]["/api/v1/greetings/{who}"]
    assert set(ops) == {"post", "delete"}
    assert ops["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Greeting"
    }
    assert ops["post"]["security"] == [{"session": []}] and "security" not in ops["delete"]
    assert doc["components"]["schemas"]["Greeting"]["required"] == ["name"]
    served = {(r.path, m) for r in api.routes() for m in (r.methods or ()) if m != "HEAD"}
    declared = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    assert declared <= served


async def test_the_docs_page_needs_no_network() -> None:
    page = (await request("GET", "/api/v1/docs")).text
    assert "openapi.json" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert (await request("GET", "/api/v1/openapi.json")).json()["info"]["title"] == "Test"
