"""Account use cases on in-memory adapters: every flow and every way it can be refused."""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import count

import attrs
import pyotp
import pytest

from adapters.memory.audit import InMemoryAuditLog
from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from domain.audit import AuditEvent, Outcome
from domain.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from domain.ports import AuditFilter
from domain.services import accounts
from domain.services.platform import Caller, Limits, Platform
from domain.services.sessions import authenticate
from entrypoints.bootstrap import memory_platform

PASSWORD = "p@ssw0rd!!Opsicle"
NEW_PASSWORD = "N3w-p@ssword!!"
ANON = Caller(source_ip="192.0.2.1", user_agent="pytest")
_numbers = count(1)


@attrs.define
class World:
    p: Platform
    mail: InMemoryMailer
    clock: FakeClock

    def code(self, address: str) -> str:
        """The code in the latest email to ``address``."""
        found = re.search(r"--code (\S+)", self.mail.to(address)[-1].text)
        assert found, self.mail.to(address)[-1].text
        return found.group(1)

    async def events(self, verb: str) -> list[AuditEvent]:
        page = await self.p.audit.list(AuditFilter(verb=verb), limit=1000)
        return list(page.items)


@pytest.fixture
def world() -> World:
    clock = FakeClock()
    p, mail = memory_platform(clock)
    return World(p, mail, clock)


def unique_email(domain: str = "example.com") -> str:
    return f"user{next(_numbers)}@{domain}"


async def verified_user(w: World, email: str | None = None) -> tuple[str, Caller]:
    """A registered, verified user logged in; its email and caller."""
    email = email or unique_email()
    await accounts.register(w.p, ANON, email, PASSWORD)
    await accounts.verify_email(w.p, ANON, w.code(email))
    result = await accounts.login(w.p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    caller, _ = await authenticate(w.p, result.token, ANON)
    return email, caller


async def with_mfa(w: World) -> tuple[str, Caller, str, tuple[str, ...]]:
    """A verified user with confirmed MFA: email, caller, TOTP secret, recovery codes."""
    email, caller = await verified_user(w)
    setup = await accounts.enrol_mfa(w.p, caller, PASSWORD)
    codes = await accounts.confirm_mfa(w.p, caller, totp_now(w, setup.secret))
    w.clock.advance(30)  # the confirming code was used; the next window has a fresh one
    return email, caller, setup.secret, codes


def totp_now(w: World, secret: str) -> str:
    return pyotp.TOTP(secret).at(w.clock.now())


# ---------------------------------------------------------------- registration


async def test_register_sends_a_link_and_a_cli_code(world: World) -> None:
    user = await accounts.register(world.p, ANON, "Ada@Example.COM", PASSWORD)
    assert user.email == "Ada@example.com"
    assert not user.verified
    assert user.password_hash != PASSWORD
    [mail] = world.mail.to("Ada@example.com")
    code = world.code("Ada@example.com")
    assert f"{world.p.public_url}/api/v1/verification/{code}" in mail.text
    assert f"opsicle verify email --code {code}" in mail.text
    [event] = await world.events("register")
    assert event.outcome is Outcome.SUCCESS and event.resource_id == user.id


@pytest.mark.parametrize(
    "email",
    [
        "a+tag@example.com",
        "x@sub.example.com",
        "o'neil@foo.dev",
        "someone@company.com",
        "person@mail.co.uk",
    ],
)
async def test_register_accepts_standard_addresses_including_aliases_and_com(
    world: World, email: str
) -> None:
    user = await accounts.register(world.p, ANON, email, PASSWORD)
    # The original accepted .com at sign-up and then refused it at login: not here.
    await accounts.verify_email(world.p, ANON, world.code(email))
    result = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    assert result.user.id == user.id


@pytest.mark.parametrize(
    "email", ["", "no-at-sign", "a@b", "a@@b.com", "a b@c.com", "@x.com", "x@-bad.com"]
)
async def test_register_refuses_an_invalid_email(world: World, email: str) -> None:
    with pytest.raises(Invalid) as err:
        await accounts.register(world.p, ANON, email, PASSWORD)
    assert "email" in err.value.field_map()


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("Sh0rt!", "12 characters"),
        ("alllowercase1!x", "upper-case"),
        ("ALLUPPERCASE1!X", "lower-case"),
        ("NoDigitsHere!!x", "digit"),
        ("NoSymbols123abc", "symbol"),
    ],
)
async def test_register_refuses_a_weak_password(world: World, password: str, missing: str) -> None:
    with pytest.raises(Invalid) as err:
        await accounts.register(world.p, ANON, unique_email(), password)
    assert missing in err.value.field_map()["password"]


async def test_register_reports_email_and_password_problems_together(world: World) -> None:
    with pytest.raises(Invalid) as err:
        await accounts.register(world.p, ANON, "nope", "weak")
    assert set(err.value.field_map()) == {"email", "password"}


async def test_register_refuses_a_taken_email_whatever_its_case(world: World) -> None:
    email = unique_email()
    await accounts.register(world.p, ANON, email, PASSWORD)
    with pytest.raises(Conflict) as err:
        await accounts.register(world.p, ANON, email.upper(), PASSWORD)
    assert err.value.code == "email_exists"
    outcomes = [e.outcome for e in await world.events("register")]
    assert outcomes == [Outcome.SUCCESS, Outcome.FAILURE]


# ---------------------------------------------------------------- verification


async def test_a_verification_code_verifies_once_and_then_only_answers_for_its_account(
    world: World,
) -> None:
    """A mail scanner opening the link first must not leave its owner with an error."""
    email = unique_email()
    await accounts.register(world.p, ANON, email, PASSWORD)
    code = world.code(email)
    user = await accounts.verify_email(world.p, ANON, code)
    assert user.verified
    again = await accounts.verify_email(world.p, ANON, code)
    assert again.id == user.id and again.email_verified_at == user.email_verified_at
    assert len(await world.events("verify_email")) == 1
    world.clock.advance(world.p.limits.verification_code_seconds + 1)
    with pytest.raises(Invalid) as err:
        await accounts.verify_email(world.p, ANON, code)
    assert err.value.code == "invalid_verify_email_code"


async def test_a_verification_code_expires(world: World) -> None:
    email = unique_email()
    await accounts.register(world.p, ANON, email, PASSWORD)
    world.clock.advance(world.p.limits.verification_code_seconds + 1)
    with pytest.raises(Invalid):
        await accounts.verify_email(world.p, ANON, world.code(email))


async def test_an_unknown_verification_code_is_refused(world: World) -> None:
    with pytest.raises(Invalid):
        await accounts.verify_email(world.p, ANON, "not-a-code")
    [event] = await world.events("verify_email")
    assert event.outcome is Outcome.FAILURE


async def test_resending_verification_retires_the_old_code(world: World) -> None:
    email = unique_email()
    await accounts.register(world.p, ANON, email, PASSWORD)
    old = world.code(email)
    await accounts.resend_verification(world.p, ANON, email)
    new = world.code(email)
    assert new != old
    with pytest.raises(Invalid):
        await accounts.verify_email(world.p, ANON, old)
    assert (await accounts.verify_email(world.p, ANON, new)).verified


async def test_resending_verification_answers_alike_for_unknown_and_verified(world: World) -> None:
    email, _ = await verified_user(world)
    sent = len(world.mail.sent)
    await accounts.resend_verification(world.p, ANON, email)
    await accounts.resend_verification(world.p, ANON, unique_email())
    assert len(world.mail.sent) == sent


# ---------------------------------------------------------------- login


async def test_login_opens_a_session_the_token_names(world: World) -> None:
    email, _ = await verified_user(world)
    result = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    who, session_id = await authenticate(world.p, result.token, ANON)
    assert who.user_id == result.user.id and session_id == result.session.id
    assert (await accounts.whoami(world.p, who)).email == email
    login_events = await world.events("login")
    assert login_events[-1].outcome is Outcome.SUCCESS


async def test_login_is_refused_until_the_email_is_verified(world: World) -> None:
    email = unique_email()
    await accounts.register(world.p, ANON, email, PASSWORD)
    with pytest.raises(Forbidden) as err:
        await accounts.login(world.p, ANON, email, PASSWORD)
    assert err.value.code == "email_unverified"
    [event] = await world.events("login")
    assert event.outcome is Outcome.FAILURE and event.data["reason"] == "email unverified"


async def test_wrong_password_and_unknown_email_get_the_same_answer(world: World) -> None:
    email, _ = await verified_user(world)
    with pytest.raises(Unauthenticated) as wrong:
        await accounts.login(world.p, ANON, email, "Wr0ng-password!")
    with pytest.raises(Unauthenticated) as unknown:
        await accounts.login(world.p, ANON, unique_email(), PASSWORD)
    assert wrong.value.code == unknown.value.code == "invalid_credentials"
    assert str(wrong.value) == str(unknown.value)
    failures = [e for e in await world.events("login") if e.outcome is Outcome.FAILURE]
    assert [e.data["reason"] for e in failures] == ["wrong password", "unknown email"]


async def test_a_disabled_account_cannot_log_in_or_use_its_sessions(world: World) -> None:
    email, _ = await verified_user(world)
    result = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    async with world.p.uow() as uow:
        user = await uow.users.by_email(email)
        await uow.users.update(attrs.evolve(user, disabled_at=world.clock.now()))
        await uow.commit()
    with pytest.raises(Forbidden) as err:
        await accounts.login(world.p, ANON, email, PASSWORD)
    assert err.value.code == "account_disabled"
    with pytest.raises(Unauthenticated):
        await authenticate(world.p, result.token, ANON)


async def test_an_invalid_email_at_login_is_audited(world: World) -> None:
    with pytest.raises(Invalid):
        await accounts.login(world.p, ANON, "not an email", PASSWORD)
    [event] = await world.events("login")
    assert event.data == {"reason": "invalid email"}


async def test_logout_ends_the_session(world: World) -> None:
    email, _ = await verified_user(world)
    result = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    caller, session_id = await authenticate(world.p, result.token, ANON)
    await accounts.logout(world.p, caller, session_id)
    with pytest.raises(Unauthenticated) as err:
        await authenticate(world.p, result.token, ANON)
    assert err.value.code == "session_expired"


async def test_a_session_ends_when_its_time_is_up(world: World) -> None:
    email, _ = await verified_user(world)
    result = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(result, accounts.LoggedIn)
    world.clock.advance(world.p.limits.session_seconds + 1)
    with pytest.raises(Unauthenticated):
        await authenticate(world.p, result.token, ANON)


# ---------------------------------------------------------------- rate limits


def limited(world: World, **limits: int) -> Platform:
    return attrs.evolve(world.p, limits=attrs.evolve(Limits(), **limits))


async def test_login_is_limited_per_account(world: World) -> None:
    email, _ = await verified_user(world)
    p = limited(world, login_attempts_per_account=3)
    for n in range(3):
        caller = Caller(source_ip=f"198.51.100.{n}")
        with pytest.raises(Unauthenticated):
            await accounts.login(p, caller, email, "Wr0ng-password!")
    # Even the right password from a fresh address waits: the account is under attack.
    with pytest.raises(RateLimited) as err:
        await accounts.login(p, Caller(source_ip="198.51.100.99"), email, PASSWORD)
    assert 0 < err.value.retry_after <= p.limits.attempt_window_seconds
    assert (await world.events("login"))[-1].data["reason"] == "rate limited"
    world.clock.advance(p.limits.attempt_window_seconds)
    assert isinstance(await accounts.login(p, ANON, email, PASSWORD), accounts.LoggedIn)


async def test_login_is_limited_per_address(world: World) -> None:
    p = limited(world, login_attempts_per_address=4)
    for _ in range(4):
        with pytest.raises(Unauthenticated):
            await accounts.login(p, ANON, unique_email(), PASSWORD)
    with pytest.raises(RateLimited) as err:
        await accounts.login(p, ANON, unique_email(), PASSWORD)
    assert err.value.retry_after > 0
    # Another address is not affected.
    with pytest.raises(Unauthenticated):
        await accounts.login(p, Caller(source_ip="203.0.113.7"), unique_email(), PASSWORD)


async def test_successful_logins_do_not_use_up_the_allowance(world: World) -> None:
    email, _ = await verified_user(world)
    p = limited(world, login_attempts_per_account=2, login_attempts_per_address=2)
    for _ in range(5):
        assert isinstance(await accounts.login(p, ANON, email, PASSWORD), accounts.LoggedIn)


# ---------------------------------------------------------------- passwords


async def test_change_password_needs_the_current_one_and_ends_other_sessions(world: World) -> None:
    email, caller = await verified_user(world)
    current = await accounts.login(world.p, ANON, email, PASSWORD)
    other = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(current, accounts.LoggedIn) and isinstance(other, accounts.LoggedIn)
    with pytest.raises(Forbidden):
        await accounts.change_password(
            world.p, caller, current.session.id, "Wr0ng-pass!!x", NEW_PASSWORD
        )
    with pytest.raises(Invalid) as weak:
        await accounts.change_password(world.p, caller, current.session.id, PASSWORD, "weak")
    assert "newPassword" in weak.value.field_map()
    await accounts.change_password(world.p, caller, current.session.id, PASSWORD, NEW_PASSWORD)
    await authenticate(world.p, current.token, ANON)
    with pytest.raises(Unauthenticated):
        await authenticate(world.p, other.token, ANON)
    with pytest.raises(Unauthenticated):
        await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(await accounts.login(world.p, ANON, email, NEW_PASSWORD), accounts.LoggedIn)
    outcomes = [e.outcome for e in await world.events("change_password")]
    assert outcomes == [Outcome.FAILURE, Outcome.SUCCESS]


async def test_password_reset_sets_a_new_password_and_ends_every_session(world: World) -> None:
    email, _ = await verified_user(world)
    before = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(before, accounts.LoggedIn)
    await accounts.request_password_reset(world.p, ANON, email)
    code = world.code(email)
    assert "15 minutes" in world.mail.to(email)[-1].text
    await accounts.complete_password_reset(world.p, ANON, code, NEW_PASSWORD)
    with pytest.raises(Unauthenticated):
        await authenticate(world.p, before.token, ANON)
    assert isinstance(await accounts.login(world.p, ANON, email, NEW_PASSWORD), accounts.LoggedIn)
    with pytest.raises(Invalid):  # single use
        await accounts.complete_password_reset(world.p, ANON, code, "An0ther-p@ssword")


async def test_password_reset_answers_alike_for_an_unknown_email(world: World) -> None:
    sent = len(world.mail.sent)
    assert await accounts.request_password_reset(world.p, ANON, unique_email()) is None
    assert len(world.mail.sent) == sent
    [event] = await world.events("request_password_reset")
    assert event.outcome is Outcome.FAILURE


async def test_a_reset_code_expires_after_15_minutes(world: World) -> None:
    email, _ = await verified_user(world)
    await accounts.request_password_reset(world.p, ANON, email)
    world.clock.advance(15 * 60)
    with pytest.raises(Invalid):
        await accounts.complete_password_reset(world.p, ANON, world.code(email), NEW_PASSWORD)


async def test_a_newer_reset_code_retires_the_older(world: World) -> None:
    email, _ = await verified_user(world)
    await accounts.request_password_reset(world.p, ANON, email)
    old = world.code(email)
    await accounts.request_password_reset(world.p, ANON, email)
    with pytest.raises(Invalid):
        await accounts.complete_password_reset(world.p, ANON, old, NEW_PASSWORD)
    await accounts.complete_password_reset(world.p, ANON, world.code(email), NEW_PASSWORD)


async def test_a_reset_needs_a_strong_new_password(world: World) -> None:
    email, _ = await verified_user(world)
    await accounts.request_password_reset(world.p, ANON, email)
    with pytest.raises(Invalid) as err:
        await accounts.complete_password_reset(world.p, ANON, world.code(email), "weak")
    assert "newPassword" in err.value.field_map()
    # The code was not spent on the refused attempt.
    await accounts.complete_password_reset(world.p, ANON, world.code(email), NEW_PASSWORD)


async def test_reset_requests_are_limited_per_address_asked_for(world: World) -> None:
    p = limited(world, login_attempts_per_account=2)
    email = unique_email()
    await accounts.request_password_reset(p, ANON, email)
    await accounts.request_password_reset(p, ANON, email)
    with pytest.raises(RateLimited):
        await accounts.request_password_reset(p, ANON, email)


# ---------------------------------------------------------------- MFA


async def test_mfa_enrolment_needs_the_password_and_a_code(world: World) -> None:
    _, caller = await verified_user(world)
    with pytest.raises(Forbidden):
        await accounts.enrol_mfa(world.p, caller, "Wr0ng-password!")
    setup = await accounts.enrol_mfa(world.p, caller, PASSWORD)
    assert setup.uri.startswith("otpauth://totp/")
    assert setup.secret in setup.uri
    status = await accounts.mfa_status(world.p, caller)
    assert status.enrolled and not status.active
    with pytest.raises(Invalid):
        await accounts.confirm_mfa(
            world.p, caller, "000000" if totp_now(world, setup.secret) != "000000" else "111111"
        )
    codes = await accounts.confirm_mfa(world.p, caller, totp_now(world, setup.secret))
    assert len(codes) == 10 and len(set(codes)) == 10
    status = await accounts.mfa_status(world.p, caller)
    assert status.active and status.recovery_codes_left == 10
    assert status.confirmed_at == world.clock.now()


async def test_a_new_enrolment_replaces_an_unconfirmed_one(world: World) -> None:
    _, caller = await verified_user(world)
    first = await accounts.enrol_mfa(world.p, caller, PASSWORD)
    second = await accounts.enrol_mfa(world.p, caller, PASSWORD)
    assert first.secret != second.secret
    with pytest.raises(Invalid):
        await accounts.confirm_mfa(world.p, caller, totp_now(world, first.secret))
    await accounts.confirm_mfa(world.p, caller, totp_now(world, second.secret))


async def test_enrolling_again_over_confirmed_mfa_is_a_conflict(world: World) -> None:
    _, caller, _, _ = await with_mfa(world)
    with pytest.raises(Conflict):
        await accounts.enrol_mfa(world.p, caller, PASSWORD)


async def test_status_without_mfa(world: World) -> None:
    _, caller = await verified_user(world)
    status = await accounts.mfa_status(world.p, caller)
    assert not status.enrolled and not status.active and status.recovery_codes_left == 0
    with pytest.raises(NotFound):
        await accounts.confirm_mfa(world.p, caller, "123456")


async def test_login_with_mfa_needs_a_code(world: World) -> None:
    email, _, secret, _ = await with_mfa(world)
    first = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    with pytest.raises(Invalid):
        await accounts.login_with_code(world.p, ANON, first.ticket, "12345x")
    done = await accounts.login_with_code(world.p, ANON, first.ticket, totp_now(world, secret))
    assert done.user.email == email
    await authenticate(world.p, done.token, ANON)
    with pytest.raises(Unauthenticated) as err:  # the ticket works once
        await accounts.login_with_code(world.p, ANON, first.ticket, totp_now(world, secret))
    assert err.value.code == "login_expired"
    *_, success, failure = await world.events("login")
    assert success.data["factor"] == "totp" and failure.outcome is Outcome.FAILURE


async def test_a_login_ticket_expires(world: World) -> None:
    email, _, secret, _ = await with_mfa(world)
    first = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    world.clock.advance(accounts.TICKET_SECONDS + 1)
    with pytest.raises(Unauthenticated):
        await accounts.login_with_code(world.p, ANON, first.ticket, totp_now(world, secret))


async def test_a_totp_code_is_accepted_once_per_window(world: World) -> None:
    email, _, secret, _ = await with_mfa(world)
    code = totp_now(world, secret)
    first = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    await accounts.login_with_code(world.p, ANON, first.ticket, code)
    again = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(again, accounts.MfaRequired)
    with pytest.raises(Invalid) as err:
        await accounts.login_with_code(world.p, ANON, again.ticket, code)
    assert err.value.code == "mfa_code_invalid"
    # A code of an earlier window is refused too, even if within the drift allowed.
    with pytest.raises(Invalid):
        await accounts.login_with_code(
            world.p,
            ANON,
            again.ticket,
            pyotp.TOTP(secret).at(world.clock.now() - timedelta(seconds=30)),
        )
    world.clock.advance(30)
    await accounts.login_with_code(world.p, ANON, again.ticket, totp_now(world, secret))


async def test_a_recovery_code_logs_in_once(world: World) -> None:
    email, caller, _, codes = await with_mfa(world)
    first = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    await accounts.login_with_code(world.p, ANON, first.ticket, codes[0].upper())
    assert (await accounts.mfa_status(world.p, caller)).recovery_codes_left == 9
    again = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(again, accounts.MfaRequired)
    with pytest.raises(Invalid):
        await accounts.login_with_code(world.p, ANON, again.ticket, codes[0])
    await accounts.login_with_code(world.p, ANON, again.ticket, codes[1].replace("-", ""))


async def test_mfa_attempts_are_limited_per_account(world: World) -> None:
    email, _, secret, _ = await with_mfa(world)
    p = limited(world, mfa_attempts_per_account=3)
    first = await accounts.login(p, ANON, email, PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    wrong = "000000" if totp_now(world, secret) != "000000" else "111111"
    for n in range(3):
        with pytest.raises(Invalid):
            await accounts.login_with_code(
                p, Caller(source_ip=f"198.51.100.{n}"), first.ticket, wrong
            )
    with pytest.raises(RateLimited) as err:
        await accounts.login_with_code(p, ANON, first.ticket, totp_now(world, secret))
    assert err.value.retry_after > 0


async def test_regenerating_recovery_codes_needs_a_code(world: World) -> None:
    _, caller, secret, old = await with_mfa(world)
    with pytest.raises(Invalid):
        await accounts.regenerate_recovery_codes(world.p, caller, "nonsense")
    new = await accounts.regenerate_recovery_codes(world.p, caller, totp_now(world, secret))
    assert len(new) == 10 and not set(new) & set(old)
    world.clock.advance(30)
    with pytest.raises(Invalid):  # the old ones are gone
        await accounts.regenerate_recovery_codes(world.p, caller, old[0])
    await accounts.regenerate_recovery_codes(world.p, caller, new[0])


async def test_removing_mfa_needs_password_and_code(world: World) -> None:
    email, caller, secret, codes = await with_mfa(world)
    with pytest.raises(Forbidden):
        await accounts.remove_mfa(world.p, caller, "Wr0ng-password!", totp_now(world, secret))
    with pytest.raises(Invalid):
        await accounts.remove_mfa(world.p, caller, PASSWORD, "nope-nope-nope")
    await accounts.remove_mfa(world.p, caller, PASSWORD, codes[3])
    assert not (await accounts.mfa_status(world.p, caller)).enrolled
    assert isinstance(await accounts.login(world.p, ANON, email, PASSWORD), accounts.LoggedIn)
    with pytest.raises(NotFound):
        await accounts.remove_mfa(world.p, caller, PASSWORD, totp_now(world, secret))
    outcomes = [e.outcome for e in await world.events("remove_mfa")]
    assert outcomes == [Outcome.FAILURE, Outcome.FAILURE, Outcome.SUCCESS]


# ---------------------------------------------------------------- audit hygiene


async def test_no_secret_reaches_the_audit_log(world: World) -> None:
    email, caller, secret, codes = await with_mfa(world)
    first = await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(first, accounts.MfaRequired)
    done = await accounts.login_with_code(world.p, ANON, first.ticket, codes[0])
    await accounts.request_password_reset(world.p, ANON, email)
    reset = world.code(email)
    await accounts.complete_password_reset(world.p, ANON, reset, NEW_PASSWORD)
    with pytest.raises(Unauthenticated):
        await accounts.login(world.p, ANON, email, PASSWORD)
    assert isinstance(world.p.audit, InMemoryAuditLog)
    dump = repr([e async for e in world.p.audit.all()])
    for secret_value in (PASSWORD, NEW_PASSWORD, secret, codes[0], reset, first.ticket, done.token):
        assert secret_value not in dump
    assert caller.user_id is not None
