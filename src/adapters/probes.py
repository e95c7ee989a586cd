"""Probing a store once: what answered (backend, version, round trip) or why nothing did."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Awaitable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from domain.errors import Unavailable

T = TypeVar("T")
MASK = "***"
# Query parameters whose values are credentials in Redis, MongoDB, NATS and SQLAlchemy URLs.
_SECRET_PARAMS = ("password", "passwd", "secret", "token", "key")


@attrs.frozen
class Probe:
    """A store that answered: its kind (``MariaDB``, ``Redis`` …), its version, the time of
    one request after the connection was made, and any store-specific facts."""

    backend: str
    version: str
    rtt_ms: float
    facts: Mapping[str, str] = attrs.field(factory=dict)


def mask_url(url: str) -> str:
    """``url`` with its password (or a lone NATS token) and credential parameters as ***."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url  # nothing to hide (and sqlite:////path keeps its slashes)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{MASK}"
        elif parts.scheme.startswith(("nats", "tls")):
            userinfo = MASK  # nats://TOKEN@host: the user part is the token
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = [
            (k, MASK if any(s in k.lower() for s in _SECRET_PARAMS) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)  # SQLAlchemy keeps the driver's error here
        todo.extend(
            [current.__cause__, current.__context__, orig if isinstance(orig, BaseException)
             else None]
        )


_AUTH_TEXT = ("access denied", "authentication failed", "auth failed", "wrongpass",
              "noauth", "invalid username-password", "authorization violation",
              "authentication required", "invalid password")
_DNS_TEXT = ("name or service not known", "temporary failure in name resolution",
             "nodename nor servname", "no address associated", "getaddrinfo failed",
             "name resolution", "unknown mysql server host")
_REFUSED_TEXT = ("connection refused", "errno 111", "connect call failed", "econnrefused")
_TIMEOUT_TEXT = ("timed out", "timeout")
# OpenSSL's reason, as drivers that wrap the error into their own text still show it.
_TLS_VERIFY = re.compile(r"certificate verify failed: (.+?)\s*(?:\(_ssl\.c|['\"]|$)")


def failure_reason(exc: BaseException) -> str:
    """Why a store did not answer, as one short phrase: ``connection refused``, ``DNS …``,
    ``authentication failed``, ``no answer (timeout)``, ``TLS: …``, or the error's first line."""
    chain = list(_chain(exc))
    texts = " | ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    if any(isinstance(e, socket.gaierror) for e in chain) or any(t in texts for t in _DNS_TEXT):
        return "DNS: the host name does not resolve"
    if verify := _TLS_VERIFY.search(texts):
        return f"TLS: the server's certificate did not verify ({verify.group(1)}); check the CA"
    if any(t in texts for t in _AUTH_TEXT):
        return "authentication failed (check the user and password)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or any(
        t in texts for t in _REFUSED_TEXT
    ):
        return "connection refused (nothing listens there)"
    if any(isinstance(e, TimeoutError) for e in chain) or any(t in texts for t in _TIMEOUT_TEXT):
        return "no answer (timeout)"
    first = next((e for e in chain if str(e)), exc)
    text = str(first).splitlines()[0][:200] if str(first) else ""
    return f"{type(first).__name__}: {text}" if text else type(first).__name__


async def timed(request: Awaitable[T]) -> tuple[T, float]:
    """``request``'s result and how long it took, in milliseconds."""
    started = time.perf_counter()
    result = await request
    return result, round((time.perf_counter() - started) * 1000, 1)


def unreachable(store: str, url: str, exc: BaseException) -> Unavailable:
    """The one-line error for a store that did not answer: the store, its masked URL, why."""
    return Unavailable(f"{store} at {mask_url(url)}: {failure_reason(exc)}")
