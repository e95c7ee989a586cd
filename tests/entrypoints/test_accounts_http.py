"""Every account route through the controller app in-process (httpx.ASGITransport)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from itertools import count

import attrs
import httpx
import pyotp
import pytest

from adapters.http.accounts_client import AccountsClient
from adapters.http.controller_client import ControllerClient
from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from domain.errors import Conflict, Forbidden, Invalid, RateLimited, Unauthenticated
from domain.services.platform import Limits, Platform
from entrypoints.bootstrap import memory_platform
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_routes

PASSWORD = "p@ssw0rd!!Opsicle"
NEW_PASSWORD = "N3w-p@ssword!!"
BASE = "http://controller.test"
_numbers = count(1)


@attrs.define
class Server:
    p: Platform
    mail: InMemoryMailer
    clock: FakeClock
    transport: httpx.ASGITransport
    http: httpx.AsyncClient

    def sdk(self, token: str | None = None) -> AccountsClient:
        return AccountsClient(ControllerClient(BASE, token, transport=self.transport))

    def code(self, address: str) -> str:
        found = re.search(r"--code (\S+)", self.mail.to(address)[-1].text)
        assert found
        return found.group(1)

    async def user(self, *, verified: bool = True) -> tuple[str, str]:
        """A new account (verified and logged in unless told otherwise): email and token."""
        email = f"http{next(_numbers)}@example.com"
        await self.sdk().register(email, PASSWORD)
        if not verified:
            return email, ""
        await self.sdk().verify_email(self.code(email))
        login = await self.sdk().login(email, PASSWORD)
        assert login.session_token
        return email, login.session_token


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    clock = FakeClock()
    p, mail = memory_platform(clock, limits=Limits(login_attempts_per_account=3))
    transport = httpx.ASGITransport(app=build_app("controller", controller_routes(p), []))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Server(p, mail, clock, transport, http)


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_every_account_route_is_in_the_openapi_document(server: Server) -> None:
    paths = (await server.http.get("/api/v1/openapi.json")).json()["paths"]
    expected = {
        ("/api/v1/users", "post"),
        ("/api/v1/users/me", "get"),
        ("/api/v1/whoami", "get"),
        ("/api/v1/verification", "post"),
        ("/api/v1/verification/{code}", "get"),
        ("/api/v1/verification/resend", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/mfa", "post"),
        ("/api/v1/sessions/current", "delete"),
        ("/api/v1/users/me/password", "put"),
        ("/api/v1/password-resets", "post"),
        ("/api/v1/password-resets/complete", "post"),
        ("/api/v1/users/me/mfa", "post"),
        ("/api/v1/users/me/mfa", "get"),
        ("/api/v1/users/me/mfa", "delete"),
        ("/api/v1/users/me/mfa/confirm", "post"),
        ("/api/v1/users/me/mfa/recovery-codes", "post"),
    }
    assert expected <= {(path, m) for path, ops in paths.items() for m in ops}


async def test_register_answers_201_with_the_account_and_no_secrets(server: Server) -> None:
    reply = await server.http.post(
        "/api/v1/users", json={"email": "a+b@example.com", "password": PASSWORD}
    )
    assert reply.status_code == 201
    body = reply.json()
    assert set(body) == {"id", "email", "verified", "createdAt"}
    assert body["email"] == "a+b@example.com" and body["verified"] is False


async def test_register_problems_name_the_fields(server: Server) -> None:
    reply = await server.http.post("/api/v1/users", json={"email": "x", "password": "weak"})
    assert reply.status_code == 422
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert set(reply.json()["errors"]) == {"email", "password"}
    reply = await server.http.post("/api/v1/users", json={"email": "x@example.com"})
    assert reply.status_code == 422 and "password" in reply.json()["errors"]


async def test_register_twice_is_409(server: Server) -> None:
    email, _ = await server.user(verified=False)
    with pytest.raises(Conflict) as err:
        await server.sdk().register(email, PASSWORD)
    assert err.value.code == "email_exists"


async def test_verification_by_link_and_by_code(server: Server) -> None:
    email, _ = await server.user(verified=False)
    reply = await server.http.get(f"/api/v1/verification/{server.code(email)}")
    assert reply.status_code == 200 and reply.json()["verified"] is True
    assert "passwordHash" not in reply.json()  # the original leaked it here
    # The owner opening the link after a mail scanner did is told the address is verified.
    again = await server.http.get(f"/api/v1/verification/{server.code(email)}")
    assert again.status_code == 200 and again.json()["verified"] is True
    wrong = await server.http.get("/api/v1/verification/not-a-code")
    assert wrong.status_code == 422 and wrong.json()["code"] == "invalid_verify_email_code"
    other, _ = await server.user(verified=False)
    assert (await server.sdk().verify_email(server.code(other))).verified


async def test_resend_verification_answers_202_whatever_the_address(server: Server) -> None:
    email, _ = await server.user(verified=False)
    for address in (email, "nobody@example.com"):
        reply = await server.http.post("/api/v1/verification/resend", json={"email": address})
        assert reply.status_code == 202
    assert len(server.mail.to(email)) == 2
    assert (await server.sdk().resend_verification(email)).message


async def test_login_whoami_and_logout(server: Server) -> None:
    email, token = await server.user()
    me = await server.sdk(token).whoami()
    assert me.email == email and me.verified
    assert (await server.sdk(token).me()).id == me.id
    await server.sdk(token).logout()
    reply = await server.http.get("/api/v1/whoami", headers=auth(token))
    assert reply.status_code == 401 and reply.json()["code"] == "session_expired"
    assert reply.headers["www-authenticate"].startswith("Bearer")


async def test_login_refusals(server: Server) -> None:
    email, _ = await server.user(verified=False)
    with pytest.raises(Forbidden) as unverified:
        await server.sdk().login(email, PASSWORD)
    assert unverified.value.code == "email_unverified"
    with pytest.raises(Unauthenticated) as wrong:
        await server.sdk().login("nobody@example.com", PASSWORD)
    assert wrong.value.code == "invalid_credentials"
    reply = await server.http.get("/api/v1/whoami")
    assert reply.status_code == 401


async def test_too_many_logins_answer_429_with_retry_after(server: Server) -> None:
    email, _ = await server.user()
    for _ in range(3):
        reply = await server.http.post(
            "/api/v1/sessions", json={"email": email, "password": "Wr0ng-pass!!x"}
        )
        assert reply.status_code == 401
    reply = await server.http.post("/api/v1/sessions", json={"email": email, "password": PASSWORD})
    assert reply.status_code == 429 and reply.json()["code"] == "rate_limited"
    assert 0 < int(reply.headers["retry-after"]) <= 15 * 60
    with pytest.raises(RateLimited) as err:
        await server.sdk().login(email, PASSWORD)
    assert err.value.retry_after > 0


async def test_change_password(server: Server) -> None:
    email, token = await server.user()
    reply = await server.http.put(
        "/api/v1/users/me/password",
        headers=auth(token),
        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
    )
    assert reply.status_code == 204
    await server.sdk(token).whoami()  # this session stays
    with pytest.raises(Forbidden):
        await server.sdk(token).change_password("Wr0ng-pass!!x", PASSWORD)
    assert (await server.sdk().login(email, NEW_PASSWORD)).session_token


async def test_password_reset(server: Server) -> None:
    email, token = await server.user()
    for address in (email, "nobody@example.com"):
        reply = await server.http.post("/api/v1/password-resets", json={"email": address})
        assert reply.status_code == 202
        assert reply.json() == {"message": "if the address has an account, an email is on its way"}
    reply = await server.http.post(
        "/api/v1/password-resets/complete",
        json={"code": server.code(email), "newPassword": NEW_PASSWORD},
    )
    assert reply.status_code == 204
    assert (await server.http.get("/api/v1/whoami", headers=auth(token))).status_code == 401
    with pytest.raises(Invalid):
        await server.sdk().complete_password_reset(server.code(email), NEW_PASSWORD)
    await server.sdk().request_password_reset(email)
    await server.sdk().complete_password_reset(server.code(email), PASSWORD)
    assert (await server.sdk().login(email, PASSWORD)).session_token


async def test_mfa_from_enrolment_to_removal(server: Server) -> None:
    email, token = await server.user()
    me = server.sdk(token)
    assert not (await me.mfa_status()).enrolled
    reply = await server.http.post(
        "/api/v1/users/me/mfa", headers=auth(token), json={"password": PASSWORD}
    )
    assert reply.status_code == 201
    setup = await me.enrol_mfa(PASSWORD)  # a second enrolment replaces the unconfirmed one
    app = pyotp.parse_uri(setup.uri)
    recovery = await me.confirm_mfa(app.at(server.clock.now()))
    assert len(recovery.codes) == 10
    status = await me.mfa_status()
    assert status.active and status.recovery_codes_left == 10 and status.confirmed_at

    server.clock.advance(30)
    first = await server.sdk().login(email, PASSWORD)
    assert first.mfa_required and first.ticket and first.session_token is None
    done = await server.sdk().login_with_code(first.ticket, app.at(server.clock.now()))
    assert done.session_token and not done.mfa_required
    reply = await server.http.post(
        "/api/v1/sessions/mfa", json={"ticket": first.ticket, "code": app.at(server.clock.now())}
    )
    assert reply.status_code == 401 and reply.json()["code"] == "login_expired"

    server.clock.advance(30)
    fresh = await me.regenerate_recovery_codes(app.at(server.clock.now()))
    assert not set(fresh.codes) & set(recovery.codes)
    with pytest.raises(Invalid):
        await me.remove_mfa(PASSWORD, recovery.codes[0])
    reply = await server.http.request(
        "DELETE",
        "/api/v1/users/me/mfa",
        headers=auth(token),
        json={"password": PASSWORD, "code": fresh.codes[0]},
    )
    assert reply.status_code == 204
    assert not (await me.mfa_status()).enrolled


async def test_mfa_routes_need_a_session(server: Server) -> None:
    for method, path in (
        ("GET", "/api/v1/users/me/mfa"),
        ("POST", "/api/v1/users/me/mfa"),
        ("POST", "/api/v1/users/me/mfa/confirm"),
        ("POST", "/api/v1/users/me/mfa/recovery-codes"),
        ("DELETE", "/api/v1/users/me/mfa"),
        ("PUT", "/api/v1/users/me/password"),
        ("DELETE", "/api/v1/sessions/current"),
        ("GET", "/api/v1/users/me"),
    ):
        reply = await server.http.request(method, path, json={})
        assert reply.status_code == 401, (method, path)
