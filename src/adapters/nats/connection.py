"""Connecting to NATS: options to ``nats.connect`` keyword arguments, and errors as domain ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

import attrs
import nats.errors
from nats.aio.client import Client as NatsClient

from domain.errors import Invalid, Unavailable

log = logging.getLogger(__name__)

DEFAULT_SERVERS = ("nats://127.0.0.1:4222",)


@attrs.frozen
class NatsOptions:
    """How to reach NATS. Secrets stay out of ``repr`` and out of every log line and error."""

    servers: tuple[str, ...] = DEFAULT_SERVERS
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    # The seed itself (from a secret store) or a file holding it; nkey auth needs the
    # ``nkeys`` package (``nats-py[nkeys]``).
    nkey_seed: str | None = attrs.field(default=None, repr=False)
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    name: str = "opsicle"
    connect_timeout_seconds: float = 5.0
    # At start-up nats-py would retry unreachable servers forever (reconnects are unlimited);
    # after this long the caller gets Unavailable instead.
    startup_timeout_seconds: float = 10.0
    # Bounds every request to the server (publish, ack, management); a publish while the
    # connection is down fails after this long instead of waiting for the reconnect.
    request_timeout_seconds: float = 5.0
    reconnect_wait_seconds: float = 2.0
    max_reconnect_attempts: int = -1  # keep reconnecting; callers see Unavailable meanwhile

    def __attrs_post_init__(self) -> None:
        if not self.servers:
            raise Invalid("NATS needs at least one server URL")
        if self.nkey_seed and self.nkey_seed_file:
            raise Invalid("give the NATS nkey seed or a seed file, not both")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise Invalid("a NATS client certificate needs both the cert and the key file")

    @property
    def address(self) -> str:
        """The servers as ``scheme://host:port``, without credentials, for logs and errors."""
        return ",".join(safe_url(s) for s in self.servers)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (without callbacks)."""
        kwargs: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.name,
            "connect_timeout": self.connect_timeout_seconds,
            "reconnect_time_wait": self.reconnect_wait_seconds,
            "max_reconnect_attempts": self.max_reconnect_attempts,
            "allow_reconnect": True,
        }
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.nkey_seed or self.nkey_seed_file:
            if find_spec("nkeys") is None:
                raise Invalid(
                    "NATS nkey authentication needs the nkeys package (install nats-py[nkeys])"
                )
            if self.nkey_seed:
                kwargs["nkeys_seed_str"] = self.nkey_seed
            else:
                kwargs["nkeys_seed"] = self.nkey_seed_file
        tls = self.tls_context()
        if tls is not None:
            kwargs["tls"] = tls
            if self.tls_hostname:
                kwargs["tls_hostname"] = self.tls_hostname
        return kwargs

    def tls_context(self) -> ssl.SSLContext | None:
        """A context when any TLS file is given; ``tls://`` URLs alone get nats-py's default."""
        if not (self.tls_ca_file or self.tls_cert_file):
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file)
            if self.tls_cert_file:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise Invalid(f"NATS TLS files could not be loaded: {exc}") from exc
        return context


def safe_url(url: str) -> str:
    """``url`` without user, password or token, so it can be logged."""
    if "://" not in url:
        url = f"nats://{url}"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def current_address(client: NatsClient, options: NatsOptions) -> str:
    """The server in use when connected, otherwise every configured one."""
    url = client.connected_url
    if url is None:
        return options.address
    return safe_url(url.geturl())


async def connect(options: NatsOptions) -> NatsClient:
    """An open connection that reconnects by itself; ``Unavailable`` when no server answers."""
    address = options.address

    async def on_error(exc: Exception) -> None:
        # nats-py reports reconnect attempts and slow consumers here; its messages name the
        # server, never the credentials.
        log.warning("NATS %s: %s: %s", address, type(exc).__name__, exc)

    async def on_disconnected() -> None:
        if client.is_closed:
            return  # closed on purpose (nats-py tells that too): ``on_closed`` says so
        log.warning("NATS %s: disconnected, reconnecting", address)

    async def on_reconnected() -> None:
        log.info("NATS %s: reconnected", address)

    async def on_closed() -> None:
        log.info("NATS %s: connection closed", address)

    kwargs = options.connect_kwargs()
    client = NatsClient()
    try:
        await asyncio.wait_for(
            client.connect(
                **kwargs,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            ),
            options.startup_timeout_seconds,
        )
    except (nats.errors.Error, OSError) as exc:  # TimeoutError is an OSError
        # A half-made connection may own a socket or tasks already.
        with contextlib.suppress(nats.errors.Error, OSError):
            await client.close()
        raise Unavailable(f"NATS at {address} did not answer: {_describe(exc)}") from exc
    return client


@contextmanager
def translate_errors(address: str, doing: str) -> Iterator[None]:
    """NATS failures and timeouts as ``Unavailable`` naming NATS and the server."""
    try:
        yield
    except (nats.errors.Error, OSError) as exc:  # TimeoutError is an OSError
        raise Unavailable(f"NATS at {address} failed to {doing}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).removeprefix("nats: ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
