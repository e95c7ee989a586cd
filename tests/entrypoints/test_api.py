"""Declared endpoints: body parsing, auth, problem responses, OpenAPI and the offline docs page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
from starlette.requests import Request

from domain.errors import Conflict, FieldError, Invalid, Unauthenticated
from domain.services.platform import Caller
from entrypoints.http.api import MAX_BODY, Api, Call, QueryParam, whole_number
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


async def post_greeting(content: bytes, **headers: str) -> httpx.Response:
    return await request(
        "POST",
        "/api/v1/greetings/bob",
        content=content,
        headers={"authorization": "Bearer good", **headers},
    )


async def test_bodies_json_cannot_hold_are_refused_by_name() -> None:
    # A lone surrogate (JSON's \u escapes can write one) is refused where it is.
    surrogate = await post_greeting(b'{"name": "a\\ud800b"}')
    assert surrogate.status_code == 422
    assert "lone UTF-16 surrogate" in surrogate.json()["errors"]["name"]
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        reply = await post_greeting(b'{"name": "a", "times": ' + constant + b"}")
        assert reply.status_code == 422
        assert "is not a JSON number" in reply.json()["errors"]["body"]
    deep = await post_greeting(b"[" * 100_000 + b"]" * 100_000)
    assert deep.status_code == 422 and "nests too deeply" in deep.json()["errors"]["body"]
    huge = await post_greeting(b'{"name": "a", "times": ' + b"9" * 30 + b"}")
    assert huge.status_code == 422 and "2^63" in huge.json()["errors"]["times"]


async def test_an_oversized_body_is_refused_before_it_is_read_whole() -> None:
    too_large = {"body": f"at most {MAX_BODY} bytes"}
    declared = await post_greeting(b"{}", **{"content-length": str(MAX_BODY + 1)})
    assert declared.status_code == 422 and declared.json()["errors"] == too_large
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        # Sent without a length: the body is refused once it passes the limit.
        for _ in range(64):
            sent.append(1)
            yield b" " * (64 * 1024)

    app = build_app("test", make_api().routes(), [])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        streamed = await client.post(
            "/api/v1/greetings/bob", content=chunks(), headers={"authorization": "Bearer good"}
        )
    assert streamed.status_code == 422 and streamed.json()["errors"] == too_large
    assert len(sent) < 64


def test_whole_numbers_in_queries_are_ascii_digits_that_fit_a_store() -> None:
    assert whole_number("042", "limit", "expected a whole number") == 42
    for bad in ("²", "٣", "-1", "1.5", "", " 1", "9" * 19):
        with pytest.raises(Invalid) as caught:
            whole_number(bad, "limit", "expected a whole number")
        assert caught.value.errors == (FieldError("limit", "expected a whole number"),)


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
