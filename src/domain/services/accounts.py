"""Account use cases: registration, email verification, login, passwords and TOTP MFA."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timedelta

import attrs

from domain.audit import Outcome
from domain.errors import (
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from domain.ports import Email
from domain.services.platform import Caller, Platform, record
from domain.services.sessions import close_session, end_sessions, open_session
from domain.users import (
    CodePurpose,
    MfaEnrolment,
    OneTimeCode,
    Session,
    User,
    check_password,
    normalise_email,
)

RECOVERY_CODES = 10
TICKET_SECONDS = 5 * 60
TICKET_KEY = "login-ticket:{}"
# A code accepted for a step is remembered a little longer than it can be valid (one step of
# drift either side), so a second controller refuses it too.
TOTP_USED_KEY = "totp-used:{}:{}"
TOTP_USED_SECONDS = 120
CODE_USED_KEY = "code-used:{}"
_DUMMY_PASSWORD = "not the password of anyone: spends the time a real check takes"  # noqa: S105


@attrs.frozen
class LoggedIn:
    """A login that produced a session."""

    user: User
    session: Session
    token: str


@attrs.frozen
class MfaRequired:
    """Password accepted, but the account has MFA: finish with the ticket and a code."""

    ticket: str
    expires_at: datetime


@attrs.frozen
class MfaSetup:
    """A new, unconfirmed TOTP enrolment: shown once so an authenticator app can take it."""

    secret: str
    uri: str


@attrs.frozen
class MfaStatus:
    enrolled: bool
    active: bool
    confirmed_at: datetime | None
    recovery_codes_left: int


# ---------------------------------------------------------------- rate limiting


@attrs.frozen
class _Throttle:
    """Failed attempts under one key in a fixed window.

    Every attempt is counted before it is judged (an atomic increment, so parallel guesses
    cannot all slip under the limit) and a success is counted in a second key, so only
    failures use up the allowance and a user's own good logins never lock them out.
    """

    key: str
    limit: int

    async def begin(self, p: Platform) -> None:
        window = p.limits.attempt_window_seconds
        attempts = await p.cache.incr(f"attempts:{self.key}", ttl_seconds=window)
        raw = await p.cache.get(f"successes:{self.key}")
        successes = int(raw) if raw else 0
        if attempts - successes > self.limit:
            left = await p.cache.ttl(f"attempts:{self.key}")
            raise RateLimited(
                "too many attempts; try again later",
                retry_after=max(1, math.ceil(left if left is not None else window)),
            )

    async def succeeded(self, p: Platform) -> None:
        left = await p.cache.ttl(f"attempts:{self.key}")
        window = left if left is not None and left > 0 else p.limits.attempt_window_seconds
        await p.cache.incr(f"successes:{self.key}", ttl_seconds=window)


def _login_throttles(p: Platform, caller: Caller, account: str) -> tuple[_Throttle, ...]:
    return (
        _Throttle(f"login:account:{account.lower()}", p.limits.login_attempts_per_account),
        _Throttle(f"login:address:{caller.source_ip}", p.limits.login_attempts_per_address),
    )


def _mfa_throttles(p: Platform, caller: Caller, user_id: str) -> tuple[_Throttle, ...]:
    return (
        _Throttle(f"mfa:account:{user_id}", p.limits.mfa_attempts_per_account),
        _Throttle(f"mfa:address:{caller.source_ip}", p.limits.login_attempts_per_address),
    )


async def _begin(p: Platform, throttles: tuple[_Throttle, ...]) -> None:
    for throttle in throttles:
        await throttle.begin(p)


async def _succeeded(p: Platform, throttles: tuple[_Throttle, ...]) -> None:
    for throttle in throttles:
        await throttle.succeeded(p)


# ---------------------------------------------------------------- helpers


async def _hash(p: Platform, password: str) -> str:
    # Argon2 is slow on purpose: off the event loop, so other requests are not held up.
    return await asyncio.to_thread(p.passwords.hash, password)


async def _verify(p: Platform, hashed: str, password: str) -> bool:
    return await asyncio.to_thread(p.passwords.verify, hashed, password)


def _user_id(caller: Caller) -> str:
    if caller.user_id is None:
        raise Unauthenticated("log in first")
    return caller.user_id


async def _current_user(p: Platform, caller: Caller) -> User:
    async with p.uow() as uow:
        return await uow.users.get(_user_id(caller))


async def _issue_code(p: Platform, user: User, purpose: CodePurpose, seconds: int) -> str:
    """A new single-use code for ``user``; older unused codes of that purpose stop working."""
    code = p.secrets.new_token("")
    now = p.clock.now()
    async with p.uow() as uow:
        await uow.codes.retire(user.id, purpose, now)
        await uow.codes.add(
            OneTimeCode(
                id=p.ids.new_id(),
                user_id=user.id,
                purpose=purpose,
                code_hash=p.secrets.hash(code.strip()),
                created_at=now,
                expires_at=now + timedelta(seconds=seconds),
            )
        )
        await uow.commit()
    return code


async def _use_code(p: Platform, purpose: CodePurpose, code: str) -> OneTimeCode:
    """Mark the code used and return it; ``Invalid`` when unknown, used or expired."""
    invalid = Invalid(
        "the code is not valid: it may be mistyped, used already, or expired",
        code=f"invalid_{purpose.value}_code",
        errors=(FieldError("code", "unknown, used or expired"),),
    )
    now = p.clock.now()
    async with p.uow() as uow:
        try:
            found = await uow.codes.by_hash(purpose, p.secrets.hash(code.strip()))
        except NotFound:
            raise invalid from None
        if not found.usable(now):
            raise invalid
        # The store's update is not a compare-and-set, so two requests racing with the same
        # code are told apart here: only one can claim it.
        claimed = await p.cache.set(
            CODE_USED_KEY.format(found.id),
            b"1",
            ttl_seconds=max(1.0, (found.expires_at - now).total_seconds()),
            only_if_absent=True,
        )
        if not claimed:
            raise invalid
        used = attrs.evolve(found, used_at=now)
        await uow.codes.update(used)
        await uow.commit()
    return used


async def _verified_by(p: Platform, code: str) -> User | None:
    """The verified account whose verification ``code`` was used and has not expired."""
    async with p.uow() as uow:
        try:
            found = await uow.codes.by_hash(CodePurpose.VERIFY_EMAIL, p.secrets.hash(code.strip()))
        except NotFound:
            return None
        if found.used_at is None or found.expires_at <= p.clock.now():
            return None
        user = await uow.users.get(found.user_id)
    return user if user.email_verified_at is not None else None


async def _check_password(p: Platform, user: User, password: str) -> bool:
    return await _verify(p, user.password_hash, password)


async def _recheck_password(
    p: Platform, caller: Caller, user: User, password: str, verb: str, resource_type: str
) -> None:
    """For sensitive changes by a logged-in user: the password again, throttled like login."""
    throttles = _login_throttles(p, caller, user.email)
    await _begin(p, throttles)
    if not await _check_password(p, user, password):
        await record(
            p,
            caller,
            verb,
            resource_type,
            user.id,
            outcome=Outcome.FAILURE,
            data={"reason": "wrong password"},
        )
        raise Forbidden("the password is wrong", code="invalid_credentials")
    await _succeeded(p, throttles)


def _is_totp(code: str) -> bool:
    code = code.strip().replace(" ", "")
    return len(code) == 6 and code.isdigit()


def _normal_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


async def _accept_totp(p: Platform, enrolment: MfaEnrolment, code: str) -> MfaEnrolment | None:
    """The enrolment with the code's step recorded, or None when the code is wrong or was
    accepted before (each code works once per time window)."""
    step = p.totp.matching_step(enrolment.secret, code, p.clock.now())
    if step is None or (enrolment.last_step is not None and step <= enrolment.last_step):
        return None
    # last_step in the store refuses replays over time; this atomic claim refuses two
    # requests presenting the same code at the same moment (maybe to two controllers).
    claimed = await p.cache.set(
        TOTP_USED_KEY.format(enrolment.user_id, step),
        b"1",
        ttl_seconds=TOTP_USED_SECONDS,
        only_if_absent=True,
    )
    if not claimed:
        return None
    return attrs.evolve(enrolment, last_step=step)


async def _second_factor(
    p: Platform,
    caller: Caller,
    user_id: str,
    code: str,
    *,
    allow_recovery: bool = True,
    require_active: bool = True,
) -> str:
    """Check a TOTP code (or a recovery code) for ``user_id``, throttled; return which kind
    was used ("totp" or "recovery_code"). Raises ``Invalid`` for a wrong code."""
    throttles = _mfa_throttles(p, caller, user_id)
    await _begin(p, throttles)
    now = p.clock.now()
    async with p.uow() as uow:
        try:
            enrolment = await uow.mfa.of_user(user_id)
        except NotFound:
            raise NotFound(
                "multi-factor authentication is not set up", code="mfa_not_enrolled"
            ) from None
        if require_active and not enrolment.active:
            raise NotFound("multi-factor authentication is not set up", code="mfa_not_enrolled")
        kind = ""
        if _is_totp(code):
            accepted = await _accept_totp(p, enrolment, code)
            if accepted is not None:
                await uow.mfa.update(accepted)
                kind = "totp"
        elif allow_recovery and await uow.mfa.use_recovery_code(
            user_id, p.secrets.hash(_normal_recovery(code)), now
        ):
            kind = "recovery_code"
        if kind:
            await uow.commit()
    if not kind:
        raise Invalid(
            "the code is not valid (or was used already)",
            code="mfa_code_invalid",
            errors=(FieldError("code", "wrong, expired or used already"),),
        )
    await _succeeded(p, throttles)
    return kind


async def _new_recovery_codes(p: Platform, user_id: str) -> tuple[str, ...]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = p.secrets.new_token("")[:12]
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}")
    async with p.uow() as uow:
        await uow.mfa.set_recovery_codes(
            user_id, [p.secrets.hash(_normal_recovery(c)) for c in codes]
        )
        await uow.commit()
    return tuple(codes)


# ---------------------------------------------------------------- registration


async def register(p: Platform, caller: Caller, email: str, password: str) -> User:
    """Create an unverified account and email it a verification code.

    Raises ``Invalid`` (bad email, weak password) or ``Conflict`` (email taken).
    """
    problems: list[FieldError] = []
    try:
        email = normalise_email(email)
    except Invalid as exc:
        problems.extend(exc.errors)
    try:
        check_password(password)
    except Invalid as exc:
        problems.extend(exc.errors)
    if problems:
        raise Invalid(
            "the account details are not valid", code="invalid_account", errors=tuple(problems)
        )
    # Hashing before the lookup makes a taken address answer as slowly as a free one.
    hashed = await _hash(p, password)
    user = User(id=p.ids.new_id(), email=email, password_hash=hashed, created_at=p.clock.now())
    try:
        async with p.uow() as uow:
            await uow.users.add(user)
            await uow.commit()
    except Conflict:
        await record(
            p, caller, "register", "user", outcome=Outcome.FAILURE, data={"reason": "email taken"}
        )
        raise Conflict("an account with this email exists already", code="email_exists") from None
    await record(p, caller, "register", "user", user.id, actor=user.id)
    await _send_verification(p, user)
    return user


async def _send_verification(p: Platform, user: User) -> None:
    code = await _issue_code(p, user, CodePurpose.VERIFY_EMAIL, p.limits.verification_code_seconds)
    hours = p.limits.verification_code_seconds // 3600
    await p.mailer.send(
        Email(
            to=user.email,
            subject="Verify your Opsicle email address",
            text=(
                "Welcome to Opsicle.\n\n"
                f"Open this link to verify your email address:\n"
                f"{p.public_url}/api/v1/verification/{code}\n\n"
                f"or run:\n  opsicle verify email --code {code}\n\n"
                f"The code works once, for {hours} hours. "
                "If you did not sign up, ignore this email."
            ),
        )
    )


async def verify_email(p: Platform, caller: Caller, code: str) -> User:
    """Mark the email of the code's account verified; the code works once, but a used,
    unexpired code of an account it verified answers that account again: mail scanners open
    the emailed link before its owner does, and the owner must not then see an error."""
    try:
        used = await _use_code(p, CodePurpose.VERIFY_EMAIL, code)
    except Invalid:
        verified = await _verified_by(p, code)
        if verified is not None:
            return verified
        await record(
            p,
            caller,
            "verify_email",
            "user",
            outcome=Outcome.FAILURE,
            data={"reason": "invalid code"},
        )
        raise
    async with p.uow() as uow:
        user = await uow.users.get(used.user_id)
        if user.email_verified_at is None:
            user = attrs.evolve(user, email_verified_at=p.clock.now())
            await uow.users.update(user)
            await uow.commit()
    await record(p, caller, "verify_email", "user", user.id, actor=user.id)
    return user


async def resend_verification(p: Platform, caller: Caller, email: str) -> None:
    """Email a new verification code; the answer is the same whether the account exists,
    is verified already, or not, so nobody learns which addresses have accounts."""
    email = normalise_email(email)
    throttle = _Throttle(f"mail:verify:{email.lower()}", p.limits.login_attempts_per_account)
    await throttle.begin(p)
    try:
        async with p.uow() as uow:
            user = await uow.users.by_email(email)
    except NotFound:
        await record(
            p,
            caller,
            "resend_verification",
            "user",
            outcome=Outcome.FAILURE,
            data={"reason": "no such account"},
        )
        return
    if user.verified:
        await record(
            p,
            caller,
            "resend_verification",
            "user",
            user.id,
            outcome=Outcome.FAILURE,
            data={"reason": "verified already"},
        )
        return
    await _send_verification(p, user)
    await record(p, caller, "resend_verification", "user", user.id)


# ---------------------------------------------------------------- login and sessions


async def login(p: Platform, caller: Caller, email: str, password: str) -> LoggedIn | MfaRequired:
    """Check email and password; a session, or a ticket to finish with an MFA code.

    Wrong email and wrong password get the same answer (``invalid_credentials``); whether the
    email is verified or the account disabled is said only once the password is right.
    """
    try:
        email = normalise_email(email)
    except Invalid:
        await record(
            p, caller, "login", "session", outcome=Outcome.FAILURE, data={"reason": "invalid email"}
        )
        raise
    throttles = _login_throttles(p, caller, email)
    try:
        await _begin(p, throttles)
    except RateLimited:
        await record(
            p,
            caller,
            "login",
            "session",
            outcome=Outcome.FAILURE,
            data={"reason": "rate limited", "email": email},
        )
        raise
    try:
        async with p.uow() as uow:
            user: User | None = await uow.users.by_email(email)
    except NotFound:
        user = None
    if user is None:
        # Spend the time a real check takes, so the answer's timing does not tell.
        await _verify(p, await _hash(p, _DUMMY_PASSWORD), password)
        ok = False
    else:
        ok = await _check_password(p, user, password)
    if user is None or not ok:
        # The address tried is worth keeping for an unknown account (who is being probed);
        # a known one is named by its id.
        await record(
            p,
            caller,
            "login",
            "session",
            user.id if user else "",
            outcome=Outcome.FAILURE,
            data={"reason": "wrong password", "userId": user.id}
            if user
            else {"reason": "unknown email", "email": email},
        )
        raise Unauthenticated("the email or the password is wrong", code="invalid_credentials")
    if user.disabled_at is not None:
        await record(
            p,
            caller,
            "login",
            "session",
            user.id,
            outcome=Outcome.FAILURE,
            data={"reason": "account disabled"},
        )
        raise Forbidden("the account is disabled", code="account_disabled")
    if not user.verified:
        await record(
            p,
            caller,
            "login",
            "session",
            user.id,
            outcome=Outcome.FAILURE,
            data={"reason": "email unverified"},
        )
        raise Forbidden(
            "verify your email address first (see the email we sent, or resend it with "
            "'opsicle verify email --resend')",
            code="email_unverified",
        )
    await _succeeded(p, throttles)
    async with p.uow() as uow:
        try:
            mfa_active = (await uow.mfa.of_user(user.id)).active
        except NotFound:
            mfa_active = False
    if mfa_active:
        ticket = p.secrets.new_token("login-")
        await p.cache.set(
            TICKET_KEY.format(p.secrets.hash(ticket)),
            json.dumps({"userId": user.id}).encode(),
            ttl_seconds=TICKET_SECONDS,
        )
        await record(
            p, caller, "login", "session", user.id, actor=user.id, data={"step": "mfa required"}
        )
        return MfaRequired(ticket, p.clock.now() + timedelta(seconds=TICKET_SECONDS))
    session, token = await open_session(p, user, caller)
    await record(p, caller, "login", "session", session.id, actor=user.id)
    return LoggedIn(user, session, token)


async def login_with_code(p: Platform, caller: Caller, ticket: str, code: str) -> LoggedIn:
    """Finish a login with the ticket from ``login`` and a TOTP or recovery code.

    The ticket lives five minutes and works for one successful login; a wrong code leaves it
    usable (attempts are throttled per account and address).
    """
    key = TICKET_KEY.format(p.secrets.hash(ticket.strip()))
    raw = await p.cache.get(key)
    if raw is None:
        await record(
            p,
            caller,
            "login",
            "session",
            outcome=Outcome.FAILURE,
            data={"reason": "unknown or expired login ticket"},
        )
        raise Unauthenticated("the login has expired; log in again", code="login_expired")
    user_id = str(json.loads(raw)["userId"])
    try:
        kind = await _second_factor(p, caller, user_id, code)
    except (Invalid, RateLimited, NotFound) as exc:
        await record(
            p,
            caller,
            "login",
            "session",
            user_id,
            outcome=Outcome.FAILURE,
            data={"reason": exc.code},
        )
        raise
    # Deleting is the atomic claim: of two requests with one ticket, one wins.
    if not await p.cache.delete(key):
        await record(
            p,
            caller,
            "login",
            "session",
            user_id,
            outcome=Outcome.FAILURE,
            data={"reason": "login ticket used already"},
        )
        raise Unauthenticated("the login has expired; log in again", code="login_expired")
    async with p.uow() as uow:
        user = await uow.users.get(user_id)
    if user.disabled_at is not None:
        raise Forbidden("the account is disabled", code="account_disabled")
    session, token = await open_session(p, user, caller)
    await record(p, caller, "login", "session", session.id, actor=user.id, data={"factor": kind})
    return LoggedIn(user, session, token)


async def logout(p: Platform, caller: Caller, session_id: str) -> None:
    await close_session(p, session_id)
    await record(p, caller, "logout", "session", session_id)


async def whoami(p: Platform, caller: Caller) -> User:
    return await _current_user(p, caller)


# ---------------------------------------------------------------- passwords


async def change_password(
    p: Platform, caller: Caller, session_id: str | None, current: str, new: str
) -> None:
    """Replace the password (the current one is required).

    Every other session of the user ends; the one making the change stays valid, so the
    person changing it is not logged out, but a thief holding an old session is.
    """
    user = await _current_user(p, caller)
    await _recheck_password(p, caller, user, current, "change_password", "user")
    try:
        check_password(new)
    except Invalid as exc:
        raise Invalid(
            "the new password is too weak",
            code=exc.code,
            errors=tuple(attrs.evolve(e, field="newPassword") for e in exc.errors),
        ) from None
    async with p.uow() as uow:
        await uow.users.update(attrs.evolve(user, password_hash=await _hash(p, new)))
        await uow.commit()
    await end_sessions(p, user.id, keep=session_id)
    await record(p, caller, "change_password", "user", user.id)


async def request_password_reset(p: Platform, caller: Caller, email: str) -> None:
    """Email a reset code (single use, 15 minutes; older codes stop working).

    The answer is the same whether or not the address has an account.
    """
    email = normalise_email(email)
    throttle = _Throttle(f"mail:reset:{email.lower()}", p.limits.login_attempts_per_account)
    await throttle.begin(p)
    try:
        async with p.uow() as uow:
            user = await uow.users.by_email(email)
    except NotFound:
        await record(
            p,
            caller,
            "request_password_reset",
            "user",
            outcome=Outcome.FAILURE,
            data={"reason": "no such account"},
        )
        return
    if user.disabled_at is not None:
        await record(
            p,
            caller,
            "request_password_reset",
            "user",
            user.id,
            outcome=Outcome.FAILURE,
            data={"reason": "account disabled"},
        )
        return
    minutes = p.limits.reset_code_seconds // 60
    code = await _issue_code(p, user, CodePurpose.RESET_PASSWORD, p.limits.reset_code_seconds)
    await p.mailer.send(
        Email(
            to=user.email,
            subject="Reset your Opsicle password",
            text=(
                "Someone (hopefully you) asked to reset the password of your Opsicle account.\n\n"
                f"Run:\n  opsicle reset password --code {code}\n\n"
                f"The code works once, for {minutes} minutes. If you did not ask, ignore this "
                "email: your password stays as it is."
            ),
        )
    )
    await record(p, caller, "request_password_reset", "user", user.id)


async def complete_password_reset(
    p: Platform, caller: Caller, code: str, new_password: str
) -> User:
    """Set a new password with an emailed reset code; every session of the user ends."""
    try:
        check_password(new_password)
    except Invalid as exc:
        raise Invalid(
            "the new password is too weak",
            code=exc.code,
            errors=tuple(attrs.evolve(e, field="newPassword") for e in exc.errors),
        ) from None
    try:
        used = await _use_code(p, CodePurpose.RESET_PASSWORD, code)
    except Invalid:
        await record(
            p,
            caller,
            "reset_password",
            "user",
            outcome=Outcome.FAILURE,
            data={"reason": "invalid code"},
        )
        raise
    async with p.uow() as uow:
        user = await uow.users.get(used.user_id)
        # The code came by email, so the address is proven as well.
        user = attrs.evolve(
            user,
            password_hash=await _hash(p, new_password),
            email_verified_at=user.email_verified_at or p.clock.now(),
        )
        await uow.users.update(user)
        await uow.commit()
    await end_sessions(p, user.id)
    await record(p, caller, "reset_password", "user", user.id, actor=user.id)
    return user


# ---------------------------------------------------------------- MFA


async def enrol_mfa(p: Platform, caller: Caller, password: str) -> MfaSetup:
    """Start a TOTP enrolment (replacing an unconfirmed one); confirm it with a code."""
    user = await _current_user(p, caller)
    await _recheck_password(p, caller, user, password, "enrol_mfa", "mfa")
    secret = p.totp.new_secret()
    async with p.uow() as uow:
        try:
            await uow.mfa.add(MfaEnrolment(user.id, secret, p.clock.now()))
        except Conflict:
            raise Conflict(
                "multi-factor authentication is set up already; remove it first", code="mfa_exists"
            ) from None
        await record(p, caller, "enrol_mfa", "mfa", user.id, uow=uow)
        await uow.commit()
    return MfaSetup(secret, p.totp.provisioning_uri(secret, user.email))


async def confirm_mfa(p: Platform, caller: Caller, code: str) -> tuple[str, ...]:
    """Turn the enrolment on with a current code; return ten recovery codes (shown once)."""
    user_id = _user_id(caller)
    async with p.uow() as uow:
        try:
            enrolment = await uow.mfa.of_user(user_id)
        except NotFound:
            raise NotFound("start with 'opsicle create mfa'", code="mfa_not_enrolled") from None
    if enrolment.active:
        raise Conflict("multi-factor authentication is confirmed already", code="mfa_exists")
    try:
        await _second_factor(p, caller, user_id, code, allow_recovery=False, require_active=False)
    except (Invalid, RateLimited) as exc:
        await record(
            p,
            caller,
            "confirm_mfa",
            "mfa",
            user_id,
            outcome=Outcome.FAILURE,
            data={"reason": exc.code},
        )
        raise
    async with p.uow() as uow:
        enrolment = await uow.mfa.of_user(user_id)
        await uow.mfa.update(attrs.evolve(enrolment, confirmed_at=p.clock.now()))
        await uow.commit()
    codes = await _new_recovery_codes(p, user_id)
    await record(p, caller, "confirm_mfa", "mfa", user_id)
    return codes


async def mfa_status(p: Platform, caller: Caller) -> MfaStatus:
    user_id = _user_id(caller)
    async with p.uow() as uow:
        try:
            enrolment = await uow.mfa.of_user(user_id)
        except NotFound:
            return MfaStatus(enrolled=False, active=False, confirmed_at=None, recovery_codes_left=0)
        left = await uow.mfa.recovery_codes_left(user_id)
    return MfaStatus(
        enrolled=True,
        active=enrolment.active,
        confirmed_at=enrolment.confirmed_at,
        recovery_codes_left=left,
    )


async def regenerate_recovery_codes(p: Platform, caller: Caller, code: str) -> tuple[str, ...]:
    """Ten new recovery codes (the old ones stop working); needs a TOTP or recovery code."""
    user_id = _user_id(caller)
    try:
        await _second_factor(p, caller, user_id, code)
    except (Invalid, RateLimited) as exc:
        await record(
            p,
            caller,
            "regenerate_recovery_codes",
            "mfa",
            user_id,
            outcome=Outcome.FAILURE,
            data={"reason": exc.code},
        )
        raise
    codes = await _new_recovery_codes(p, user_id)
    await record(p, caller, "regenerate_recovery_codes", "mfa", user_id)
    return codes


async def remove_mfa(p: Platform, caller: Caller, password: str, code: str) -> None:
    """Turn MFA off; needs the password and a current TOTP or recovery code."""
    user = await _current_user(p, caller)
    await _recheck_password(p, caller, user, password, "remove_mfa", "mfa")
    async with p.uow() as uow:
        try:
            active = (await uow.mfa.of_user(user.id)).active
        except NotFound:
            active = False
    if active:
        try:
            await _second_factor(p, caller, user.id, code)
        except (Invalid, RateLimited) as exc:
            await record(
                p,
                caller,
                "remove_mfa",
                "mfa",
                user.id,
                outcome=Outcome.FAILURE,
                data={"reason": exc.code},
            )
            raise
    async with p.uow() as uow:
        try:
            await uow.mfa.delete(user.id)
        except NotFound:
            raise NotFound(
                "multi-factor authentication is not set up", code="mfa_not_enrolled"
            ) from None
        await record(p, caller, "remove_mfa", "mfa", user.id, uow=uow)
        await uow.commit()
