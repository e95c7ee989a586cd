"""Sessions: a signed token names a session, and the session lives while the cache holds it."""

from __future__ import annotations

import json
from datetime import timedelta

from domain.errors import NotFound, Unauthenticated
from domain.services.platform import Caller, Platform
from domain.users import Session, User

SESSION_KEY = "session:{}"
# Sessions of a user with an id below the stored marker have ended (ids sort by creation).
ENDED_KEY = "sessions-ended:{}"


async def open_session(p: Platform, user: User, caller: Caller) -> tuple[Session, str]:
    """Start a session for ``user``; return it and the bearer token that names it."""
    now = p.clock.now()
    ttl = p.limits.session_seconds
    session = Session(
        id=p.ids.new_id(),
        user_id=user.id,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        source_ip=caller.source_ip,
        user_agent=caller.user_agent[:256],
    )
    record = {"userId": user.id, "createdAt": now.isoformat(), "ip": caller.source_ip}
    await p.cache.set(SESSION_KEY.format(session.id), json.dumps(record).encode(), ttl_seconds=ttl)
    token = p.signer.sign({"sub": user.id, "sid": session.id}, ttl)
    return session, token


async def authenticate(p: Platform, token: str, caller: Caller) -> tuple[Caller, str]:
    """The caller behind a bearer token and its session id; ``Unauthenticated`` otherwise.

    The token's signature and expiry are checked, then the session must still exist (logout
    and revocation delete it) and the user must still be allowed in.
    """
    claims = p.signer.verify(token)
    user_id, session_id = claims.get("sub"), claims.get("sid")
    if not isinstance(user_id, str) or not isinstance(session_id, str):
        raise Unauthenticated("the session token is not valid; log in again")
    raw = await p.cache.get(SESSION_KEY.format(session_id))
    if raw is None or json.loads(raw).get("userId") != user_id:
        raise Unauthenticated("the session has ended; log in again", code="session_expired")
    ended = await p.cache.get(ENDED_KEY.format(user_id))
    if ended is not None:
        marker = json.loads(ended)
        if session_id < marker["before"] and session_id != marker.get("keep"):
            raise Unauthenticated("the session has ended; log in again", code="session_expired")
    async with p.uow() as uow:
        try:
            user = await uow.users.get(user_id)
        except NotFound as exc:
            raise Unauthenticated("the account no longer exists") from exc
    if user.disabled_at is not None:
        raise Unauthenticated("the account is disabled", code="account_disabled")
    return Caller(user.id, caller.source_ip, caller.user_agent, user.email), session_id


async def close_session(p: Platform, session_id: str) -> bool:
    return await p.cache.delete(SESSION_KEY.format(session_id))


async def end_sessions(p: Platform, user_id: str, *, keep: str | None = None) -> None:
    """End every session of ``user_id`` opened so far, except ``keep`` (the caller's own).

    One marker per user rather than a list of sessions: it is a single atomic write, and it
    need only outlive the sessions it ends, which expire within ``session_seconds``.
    """
    marker = {"before": p.ids.new_id(), "keep": keep}
    await p.cache.set(
        ENDED_KEY.format(user_id), json.dumps(marker).encode(), ttl_seconds=p.limits.session_seconds
    )
