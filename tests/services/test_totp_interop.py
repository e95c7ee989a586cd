"""TOTP interoperability: codes an authenticator computes from the otpauth:// URI work, once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest

from adapters.memory.clock import FakeClock
from domain.errors import Invalid
from domain.services import accounts
from domain.services.platform import Caller, Platform
from domain.services.sessions import authenticate
from entrypoints.bootstrap import memory_platform

PASSWORD = "p@ssw0rd!!Opsicle"
ANON = Caller(source_ip="192.0.2.10")


def rfc6238(secret_b32: str, at: datetime, *, digits: int = 6, period: int = 30) -> str:
    """RFC 6238 written out from the RFC (HMAC-SHA1, dynamic truncation), as a check that
    does not share code with the server's TOTP adapter."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8), casefold=True)
    counter = struct.pack(">Q", int(at.timestamp()) // period)
    mac = hmac.new(key, counter, hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


async def enrolled(p: Platform, mail_code: str, email: str) -> tuple[Caller, str]:
    await accounts.verify_email(p, ANON, mail_code)
    result = await accounts.login(p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    caller, _ = await authenticate(p, result.token, ANON)
    setup = await accounts.enrol_mfa(p, caller, PASSWORD)
    return caller, setup.uri


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def setup_user(clock: FakeClock, email: str) -> tuple[Platform, Caller, str]:
    p, mail = memory_platform(clock)
    await accounts.register(p, ANON, email, PASSWORD)
    code = mail.to(email)[-1].text.split("--code ")[1].split()[0]
    caller, uri = await enrolled(p, code, email)
    return p, caller, uri


async def test_the_uri_says_what_authenticator_apps_need(clock: FakeClock) -> None:
    _, _, uri = await setup_user(clock, "ada+mfa@example.com")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    assert "ada+mfa@example.com" in unquote(parsed.path)
    query = parse_qs(parsed.query)
    assert query["issuer"] == ["Opsicle"]
    assert set(query.get("digits", ["6"])) == {"6"}
    assert set(query.get("period", ["30"])) == {"30"}
    assert set(query.get("algorithm", ["SHA1"])) == {"SHA1"}


async def test_codes_pyotp_computes_from_the_uri_are_accepted_once(clock: FakeClock) -> None:
    p, caller, uri = await setup_user(clock, "grace@example.com")
    app = pyotp.parse_uri(uri)
    assert isinstance(app, pyotp.TOTP)
    await accounts.confirm_mfa(p, caller, app.at(clock.now()))
    clock.advance(30)
    code = app.at(clock.now())
    first = await accounts.login(p, ANON, "grace@example.com", PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    await accounts.login_with_code(p, ANON, first.ticket, code)
    second = await accounts.login(p, ANON, "grace@example.com", PASSWORD)
    assert isinstance(second, accounts.MfaRequired)
    with pytest.raises(Invalid):
        await accounts.login_with_code(p, ANON, second.ticket, code)


async def test_codes_from_an_rfc6238_implementation_are_accepted(clock: FakeClock) -> None:
    p, caller, uri = await setup_user(clock, "linus@example.org")
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    await accounts.confirm_mfa(p, caller, rfc6238(secret, clock.now()))
    # A clock one step behind the server's is tolerated (the server allows one step of drift).
    clock.advance(60)
    behind = rfc6238(secret, clock.now() - timedelta(seconds=30))
    codes = await accounts.regenerate_recovery_codes(p, caller, behind)
    assert len(codes) == 10
    with pytest.raises(Invalid):  # that step is spent now
        await accounts.regenerate_recovery_codes(p, caller, behind)
