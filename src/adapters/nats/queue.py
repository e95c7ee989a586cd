"""The Queue port on NATS JetStream: a work-queue stream and one durable pull consumer."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import attrs
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from adapters.nats.connection import NatsOptions, connect, current_address, translate_errors
from domain.errors import Invalid, Unavailable
from domain.ports import HealthCheck, Queue, QueueMessage

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"
# Beyond the pull's own expiry, how long to wait for the server's answer (a message or a
# "408 Request Timeout") before calling it unavailable.
PULL_GRACE_SECONDS = 1.0

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT = re.compile(r"^[^\s*>.]+(\.[^\s*>.]+)*$")


def _check_name(_: object, field: attrs.Attribute[str], value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"{field.name} {value!r}: use letters, digits, '-' and '_' only")


def _check_subject(_: object, field: attrs.Attribute[str], value: str) -> None:
    if not _SUBJECT.match(value):
        raise ValueError(f"{field.name} {value!r} is not a literal NATS subject")


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the NATS subject ``pattern`` (``*`` one token, ``>`` the rest) covers
    ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(want) == len(have)


def _positive(_: object, field: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{field.name} must be positive")


@attrs.frozen
class NatsQueueConfig:
    """Which stream, subject and durable consumer the queue uses, and their timings."""

    stream: str = attrs.field(default="OPSICLE_RUNS", validator=_check_name)
    subject: str = attrs.field(default="opsicle.runs", validator=_check_subject)
    durable: str = attrs.field(default="opsicle-dispatch", validator=_check_name)
    ack_wait_seconds: float = attrs.field(default=30.0, validator=_positive)
    # Publishes of an id already seen within this window are dropped (the outbox relay's
    # retries rely on it).
    duplicate_window_seconds: float = attrs.field(default=120.0, validator=_positive)
    max_deliver: int = -1  # unlimited: a message is never silently given up on
    # The stream's subjects when it holds more than ``subject`` (one stream over a wildcard,
    # several consumers on parts of it); empty means just ``subject``.
    stream_subjects: tuple[str, ...] = ()

    @property
    def captured_by(self) -> tuple[str, ...]:
        return self.stream_subjects or (self.subject,)


class NatsDelivery:
    """One delivery of a JetStream message; settling it a second time does nothing."""

    def __init__(self, msg: Msg, message: QueueMessage, attempt: int, queue: NatsQueue) -> None:
        self.message = message
        self.attempt = attempt
        self._msg = msg
        self._queue = queue
        self._settled = False

    async def ack(self) -> None:
        if self._settled:
            return
        with translate_errors(self._queue.address, "acknowledge a message"):
            # ack_sync waits for the server's reply: once it returns, the message is gone.
            await self._msg.ack_sync(timeout=self._queue.options.request_timeout_seconds)
        self._settled = True

    async def nak(self, delay_seconds: float = 0) -> None:
        if self._settled:
            return
        with translate_errors(self._queue.address, "hand a message back"):
            await self._msg.nak(delay=max(delay_seconds, 0.0) or None)
            # A nak has no reply; a flush at least puts it on the wire before returning.
            await self._queue.client.flush(
                timeout=math.ceil(self._queue.options.request_timeout_seconds)
            )
        self._settled = True

    async def in_progress(self) -> None:
        """Restart the ack wait: the work is still going (for runs longer than the wait)."""
        with translate_errors(self._queue.address, "extend a message's ack wait"):
            await self._msg.in_progress()


class NatsQueue:
    """The Queue port on one NATS connection that it opens and closes.

    Messages live in a work-queue stream (file storage) on ``config.subject``; JetStream
    drops a publish whose ``Nats-Msg-Id`` it saw within the duplicate window. Every queue
    object with the same ``config.durable`` shares one durable pull consumer with explicit
    acks, so several coordinators split the work and a restarted one carries on where the
    consumer was. Each ``pull`` is its own pull request on its own inbox: a message the server
    sends after the caller gave up is never handed out later, it comes back after the ack wait.

    JetStream keeps the duplicate window across a server restart only for messages it still
    holds: an id acked before the restart can be published again after it.
    """

    def __init__(self, client: NatsClient, options: NatsOptions, config: NatsQueueConfig) -> None:
        self.client = client
        self.options = options
        self.config = config
        self._js = client.jetstream(timeout=options.request_timeout_seconds)
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{config.stream}.{config.durable}"

    @classmethod
    async def open(cls, options: NatsOptions, config: NatsQueueConfig) -> NatsQueue:
        """Connect, and create the stream and the consumer unless they exist."""
        queue = cls(await connect(options), options, config)
        try:
            await queue.ensure_stream()
        except BaseException:
            await queue.close()
            raise
        return queue

    @property
    def address(self) -> str:
        return current_address(self.client, self.options)

    async def close(self) -> None:
        if not self.client.is_closed:
            # Un-acked deliveries go back to the stream after the ack wait.
            await self.client.close()

    async def __aenter__(self) -> NatsQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ensure_stream(self) -> None:
        """Create (or update) the stream and the durable consumer; both calls are idempotent."""
        await self.ensure_stream_only()
        await self.ensure_consumer()

    async def ensure_stream_only(self) -> None:
        """Create the stream unless it exists as a work queue that holds our subject."""
        cfg = self.config
        stream = StreamConfig(
            name=cfg.stream,
            subjects=list(cfg.captured_by),
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=cfg.duplicate_window_seconds,
        )
        with translate_errors(self.address, f"set up stream {cfg.stream}"):
            try:
                await self._js.add_stream(stream)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_IN_USE:
                    raise Invalid(f"NATS refused stream {cfg.stream}: {exc.description}") from exc
                # Set up by someone else (an operator may have tuned limits): usable as long
                # as it is a work queue that holds our subject.
                info = await self._js.stream_info(cfg.stream)
                if info.config.retention != RetentionPolicy.WORK_QUEUE or not any(
                    subject_matches(s, cfg.subject) for s in info.config.subjects or []
                ):
                    raise Invalid(
                        f"NATS stream {cfg.stream} exists but is not a work queue on {cfg.subject}"
                    ) from exc

    async def ensure_consumer(self) -> None:
        """Create the durable consumer, or update its ack wait and max deliveries."""
        cfg = self.config
        with translate_errors(self.address, f"set up consumer {cfg.durable}"):
            consumer = ConsumerConfig(
                durable_name=cfg.durable,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=cfg.ack_wait_seconds,
                max_deliver=cfg.max_deliver,
                filter_subject=cfg.subject,
            )
            try:
                # Creates the consumer, or updates its ack wait and max deliveries.
                await self._js.add_consumer(cfg.stream, consumer)
            except nats.js.errors.BadRequestError as exc:
                raise Invalid(
                    f"NATS refused consumer {cfg.durable} on {cfg.stream}: {exc.description}"
                ) from exc

    async def publish(self, message: QueueMessage) -> None:
        """Returns on JetStream's PubAck; raises ``Unavailable`` without one.

        Without a connection it fails at once rather than buffering the message for the
        reconnect. A publish cut off mid-way may still have been stored: retrying with the
        same id is safe, the duplicate window drops the copy.
        """
        if not self.client.is_connected:
            raise Unavailable(f"NATS at {self.address} is not connected")
        with translate_errors(self.address, "store a message"):
            ack = await self._js.publish(
                self.config.subject,
                message.body,
                timeout=self.options.request_timeout_seconds,
                # The expected stream makes a subject captured by another stream an error.
                stream=self.config.stream,
                headers={MSG_ID_HEADER: message.id},
            )
        if ack.duplicate:
            log.debug(
                "NATS dropped a duplicate of message %s (stream sequence %s)", message.id, ack.seq
            )

    async def pull(self, timeout_seconds: float) -> NatsDelivery | None:
        if not self.client.is_connected:
            raise Unavailable(f"NATS at {self.address} is not connected")
        request: dict[str, object] = {"batch": 1}
        if timeout_seconds > 0:
            # The server answers "408 Request Timeout" at expiry, so the pull ends on time.
            request["expires"] = int(timeout_seconds * 1e9)
        else:
            request["no_wait"] = True
        wait = max(timeout_seconds, 0.0) + PULL_GRACE_SECONDS
        with translate_errors(self.address, "fetch a message"):
            inbox = self.client.new_inbox()
            sub = await self.client.subscribe(inbox)
            try:
                await self.client.publish(
                    self._next_subject, json.dumps(request).encode(), reply=inbox
                )
                try:
                    msg = await sub.next_msg(timeout=wait)
                except nats.errors.TimeoutError as exc:
                    raise Unavailable(
                        f"NATS at {self.address} did not answer a pull on "
                        f"{self.config.stream}/{self.config.durable}"
                    ) from exc
            finally:
                # Cleanup only: on a connection going away the interest goes with it.
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        return self._delivery(msg)

    def _delivery(self, msg: Msg) -> NatsDelivery | None:
        status = (msg.headers or {}).get("Status")
        if status in ("404", "408"):  # no message now / none before the pull expired
            return None
        if status:
            description = (msg.headers or {}).get("Description", "")
            raise Unavailable(
                f"NATS at {self.address} refused a pull on "
                f"{self.config.stream}/{self.config.durable}: {status} "
                f"{description}".rstrip()
            )
        metadata = msg.metadata
        # Every publish here sets the id; a message put on the subject by hand gets its
        # stream sequence so it can still be acked and told apart.
        message_id = (msg.headers or {}).get(MSG_ID_HEADER) or f"seq-{metadata.sequence.stream}"
        return NatsDelivery(
            msg, QueueMessage(id=message_id, body=msg.data), metadata.num_delivered, self
        )

    async def depth(self) -> int:
        """Messages stored and not yet acked: a work queue deletes a message on its ack."""
        with translate_errors(self.address, f"read stream {self.config.stream}"):
            info = await self._js.stream_info(self.config.stream)
        return info.state.messages


class NatsHealthCheck:
    """Connected, and JetStream answers for the account."""

    def __init__(self, queue: NatsQueue, name: str = "nats") -> None:
        self._queue = queue
        self.name = name

    async def check(self) -> None:
        if not self._queue.client.is_connected:
            raise Unavailable(f"NATS at {self._queue.address} is not connected")
        with translate_errors(self._queue.address, "report JetStream account info"):
            await self._queue._js.account_info()


@asynccontextmanager
async def nats_queue(
    options: NatsOptions, config: NatsQueueConfig | None = None
) -> AsyncIterator[Queue]:
    """An open queue, typed as the port so mypy checks the adapter against it."""
    queue = await NatsQueue.open(options, config or NatsQueueConfig())
    async with queue:
        yield queue


def nats_health_check(queue: NatsQueue) -> HealthCheck:
    return NatsHealthCheck(queue)
