"""The Queue contract, run against every queue adapter."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import attrs
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient

from adapters.memory.queue import InMemoryQueue
from adapters.nats.connection import NatsOptions
from adapters.nats.queue import NatsHealthCheck, NatsQueue, NatsQueueConfig, nats_queue
from adapters.sql.engine import create_engine
from adapters.sql.queue import sql_queue
from adapters.sql.tables import queue_messages
from domain.errors import Invalid, Unavailable
from domain.ports import Delivery, Queue, QueueMessage
from tests.contract.conftest import MARIADB_SERVER, _execute
from tests.support import NatsServer, free_port, nats_binary, port_open, require_service

# Makes a fresh, empty queue (its own stream or subject on a shared server).
QueueFactory = Callable[..., Awaitable[Queue]]

ACK_WAIT = 0.3


async def _memory(_stack: AsyncExitStack) -> QueueFactory:
    async def make(*, ack_wait_seconds: float = 30.0) -> Queue:
        return InMemoryQueue(ack_wait_seconds=ack_wait_seconds)

    return make


NATS_URL = os.environ.get("OPSICLE_TEST_NATS_URL", "nats://127.0.0.1:4222")
NATS_OPTIONS = NatsOptions(servers=(NATS_URL,), connect_timeout_seconds=2.0,
                           request_timeout_seconds=2.0)


def unique_config(ack_wait_seconds: float = 30.0) -> NatsQueueConfig:
    # A stream, subject and durable of its own: tests share the server, never each other's data.
    tag = uuid.uuid4().hex[:12]
    return NatsQueueConfig(stream=f"OPSICLE_TEST_{tag}", subject=f"opsicle.test.{tag}",
                           durable=f"test-{tag}", ack_wait_seconds=ack_wait_seconds)


async def nats_admin(stack: AsyncExitStack, options: NatsOptions = NATS_OPTIONS) -> NatsClient:
    """A connection for setup and cleanup; skips (or fails under CI) when JetStream is away."""
    why = f"expected with JetStream at {options.address}"
    client: NatsClient | None = None
    try:
        client = await nats.connect(list(options.servers), connect_timeout=2,
                                    allow_reconnect=False, error_cb=_quiet)
        await client.jetstream(timeout=2).account_info()
    except (nats.errors.Error, OSError) as exc:
        if client is not None:
            await client.close()
        require_service("NATS JetStream", False, f"{why} ({type(exc).__name__})")
    assert client is not None
    stack.push_async_callback(client.close)
    return client


async def _quiet(_exc: Exception) -> None:
    # The availability probe reports through require_service, not nats-py's error log.
    return None


async def delete_stream(admin: NatsClient, stream: str) -> None:
    with suppress(nats.js.errors.NotFoundError):
        await admin.jetstream(timeout=2).delete_stream(stream)


async def _nats(stack: AsyncExitStack) -> QueueFactory:
    admin = await nats_admin(stack)

    async def make(*, ack_wait_seconds: float = 30.0) -> Queue:
        config = unique_config(ack_wait_seconds)
        # Runs after the queue's close (the stack unwinds last in, first out).
        stack.push_async_callback(delete_stream, admin, config.stream)
        return await stack.enter_async_context(nats_queue(NATS_OPTIONS, config))

    return make


async def _sql_factory(stack: AsyncExitStack, url: str) -> QueueFactory:
    engine = create_engine(url)
    stack.push_async_callback(engine.dispose)
    async with engine.begin() as conn:
        await conn.run_sync(queue_messages.create, checkfirst=True)

    async def make(*, ack_wait_seconds: float = 30.0) -> Queue:
        # A topic of its own: queues on one table never see each other's messages.
        return sql_queue(engine, f"test.{uuid.uuid4().hex}", ack_wait_seconds=ack_wait_seconds)

    return make


async def _sqlite(stack: AsyncExitStack) -> QueueFactory:
    folder = stack.enter_context(tempfile.TemporaryDirectory())
    return await _sql_factory(stack, f"sqlite+aiosqlite:///{Path(folder) / 'queue.db'}")


async def _mariadb(stack: AsyncExitStack) -> QueueFactory:
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    # A database of its own holding just the queue's table (migrating one per test is slow).
    name = f"opsicle_queue_{secrets.token_hex(4)}"
    await _execute(f"{MARIADB_SERVER}/", f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    stack.push_async_callback(_execute, f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}")
    return await _sql_factory(stack, f"{MARIADB_SERVER}/{name}")


LEGS: dict[str, Callable[[AsyncExitStack], Awaitable[QueueFactory]]] = {
    "memory": _memory, "nats": _nats, "sql-sqlite": _sqlite, "sql-mariadb": _mariadb}


@pytest.fixture(params=sorted(LEGS))
async def make_queue(request: pytest.FixtureRequest) -> AsyncIterator[QueueFactory]:
    async with AsyncExitStack() as stack:
        yield await LEGS[request.param](stack)


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Queue:
    return await make_queue()


def message(body: bytes = b"body") -> QueueMessage:
    return QueueMessage(id=uuid.uuid4().hex, body=body)


async def pull(queue: Queue, wait: float = 2.0) -> Delivery:
    delivery = await queue.pull(wait)
    assert delivery is not None, "expected a message"
    return delivery


async def test_empty_queue_pull_returns_none_after_the_timeout(queue: Queue) -> None:
    assert await queue.pull(0.05) is None
    assert await queue.depth() == 0


async def test_published_message_is_delivered_with_its_body(queue: Queue) -> None:
    sent = message(b"\x00payload\xff")
    await queue.publish(sent)
    assert await queue.depth() == 1
    delivery = await pull(queue)
    assert delivery.message == sent
    assert delivery.attempt == 1


async def test_messages_come_in_publish_order(queue: Queue) -> None:
    sent = [message(str(i).encode()) for i in range(5)]
    for m in sent:
        await queue.publish(m)
    got = []
    for _ in sent:
        delivery = await pull(queue)
        got.append(delivery.message)
        await delivery.ack()
    assert got == sent


async def test_duplicate_publish_is_dropped(queue: Queue) -> None:
    sent = message()
    await queue.publish(sent)
    await queue.publish(QueueMessage(id=sent.id, body=b"other body"))
    assert await queue.depth() == 1
    delivery = await pull(queue)
    assert delivery.message == sent
    await delivery.ack()
    assert await queue.pull(0.1) is None


async def test_republish_after_ack_is_dropped_within_the_window(queue: Queue) -> None:
    # An outbox relay that crashed after publishing republishes; the run must not run twice.
    sent = message()
    await queue.publish(sent)
    await (await pull(queue)).ack()
    await queue.publish(sent)
    assert await queue.depth() == 0
    assert await queue.pull(0.1) is None


async def test_pulled_message_is_invisible_until_acked(queue: Queue) -> None:
    await queue.publish(message())
    delivery = await pull(queue)
    assert await queue.pull(0.1) is None
    assert await queue.depth() == 1
    await delivery.ack()
    assert await queue.depth() == 0
    assert await queue.pull(0.1) is None


async def test_ack_twice_is_harmless(queue: Queue) -> None:
    await queue.publish(message())
    delivery = await pull(queue)
    await delivery.ack()
    await delivery.ack()
    assert await queue.depth() == 0


async def test_nak_redelivers_and_counts_the_attempt(queue: Queue) -> None:
    sent = message()
    await queue.publish(sent)
    first = await pull(queue)
    await first.nak()
    second = await pull(queue)
    assert second.message == sent
    assert second.attempt == 2
    await second.ack()
    assert await queue.depth() == 0


async def test_nak_with_delay_holds_the_message_back(queue: Queue) -> None:
    await queue.publish(message())
    await (await pull(queue)).nak(delay_seconds=0.5)
    assert await queue.pull(0.1) is None
    assert await queue.depth() == 1
    delivery = await pull(queue, wait=2.0)
    assert delivery.attempt == 2


async def test_delayed_message_does_not_block_later_ones(queue: Queue) -> None:
    first, second = message(b"1"), message(b"2")
    await queue.publish(first)
    await queue.publish(second)
    await (await pull(queue)).nak(delay_seconds=5)
    assert (await pull(queue)).message == second


async def test_unacked_delivery_comes_back_after_the_ack_wait(make_queue: QueueFactory) -> None:
    queue = await make_queue(ack_wait_seconds=ACK_WAIT)
    sent = message()
    await queue.publish(sent)
    first = await pull(queue)
    assert first.attempt == 1
    again = await pull(queue, wait=ACK_WAIT * 10)
    assert again.message == sent
    assert again.attempt == 2
    await again.ack()
    assert await queue.depth() == 0


async def test_waiting_pull_wakes_on_publish(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.pull(5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    sent = message()
    await queue.publish(sent)
    delivery = await asyncio.wait_for(waiting, 2.0)
    assert delivery is not None
    assert delivery.message == sent


async def test_each_message_goes_to_one_consumer_at_a_time(queue: Queue) -> None:
    sent = [message(str(i).encode()) for i in range(20)]
    for m in sent:
        await queue.publish(m)

    async def consume() -> list[str]:
        got = []
        while (delivery := await queue.pull(0.2)) is not None:
            got.append(delivery.message.id)
            await delivery.ack()
        return got

    results = await asyncio.gather(*(consume() for _ in range(4)))
    received = [i for r in results for i in r]
    assert sorted(received) == sorted(m.id for m in sent)
    assert await queue.depth() == 0


# ---------------------------------------------------------------- NATS only: what a broker adds


@attrs.frozen
class NatsHarness:
    admin: NatsClient
    stack: AsyncExitStack

    async def open(self, config: NatsQueueConfig,
                   options: NatsOptions = NATS_OPTIONS) -> NatsQueue:
        queue = await NatsQueue.open(options, config)
        self.stack.push_async_callback(queue.close)  # closing twice is harmless
        return queue

    def config(self, ack_wait_seconds: float = 30.0) -> NatsQueueConfig:
        config = unique_config(ack_wait_seconds)
        self.stack.push_async_callback(delete_stream, self.admin, config.stream)
        return config


@pytest.fixture
async def nats_harness() -> AsyncIterator[NatsHarness]:
    async with AsyncExitStack() as stack:
        yield NatsHarness(await nats_admin(stack), stack)


async def test_message_published_before_a_consumer_restart_is_delivered_after_it(
    nats_harness: NatsHarness,
) -> None:
    config = nats_harness.config()
    first = await nats_harness.open(config)
    sent = message(b"survives the restart")
    await first.publish(sent)
    await first.close()

    second = await nats_harness.open(config)
    assert await second.depth() == 1
    delivery = await pull(second)
    assert delivery.message == sent
    assert delivery.attempt == 1
    await delivery.ack()
    assert await second.depth() == 0


async def test_unacked_message_of_a_stopped_consumer_comes_back_after_the_ack_wait(
    nats_harness: NatsHarness,
) -> None:
    # A coordinator that dies holding a message: the durable consumer hands it to the next.
    config = nats_harness.config(ack_wait_seconds=ACK_WAIT)
    first = await nats_harness.open(config)
    sent = message()
    await first.publish(sent)
    assert (await pull(first)).attempt == 1
    await first.close()

    second = await nats_harness.open(config)
    again = await pull(second, wait=ACK_WAIT * 10)
    assert again.message == sent
    assert again.attempt == 2
    await again.ack()
    assert await second.depth() == 0


async def test_queues_on_one_durable_share_the_work(nats_harness: NatsHarness) -> None:
    config = nats_harness.config()
    one, two = await nats_harness.open(config), await nats_harness.open(config)
    sent = message()
    await one.publish(sent)
    delivery = await pull(two)
    assert delivery.message == sent
    assert await one.pull(0.1) is None
    await delivery.ack()


async def test_health_check_passes_on_a_live_server(nats_harness: NatsHarness) -> None:
    queue = await nats_harness.open(nats_harness.config())
    check = NatsHealthCheck(queue)
    assert check.name == "nats"
    await check.check()
    await queue.close()
    with pytest.raises(Unavailable, match="NATS"):
        await check.check()


async def test_existing_stream_that_is_not_a_work_queue_is_refused(
    nats_harness: NatsHarness,
) -> None:
    config = nats_harness.config()
    await nats_harness.admin.jetstream(timeout=2).add_stream(
        name=config.stream, subjects=[config.subject])
    with pytest.raises(Invalid, match="not a work queue"):
        await NatsQueue.open(NATS_OPTIONS, config)


async def test_unreachable_server_is_unavailable_naming_it_without_credentials() -> None:
    port = free_port()
    options = NatsOptions(servers=(f"nats://alice:s3cret@127.0.0.1:{port}",),
                          password="hunter2", connect_timeout_seconds=0.5,
                          startup_timeout_seconds=1.0, reconnect_wait_seconds=0.1)
    with pytest.raises(Unavailable) as raised:
        await NatsQueue.open(options, unique_config())
    text = str(raised.value)
    assert "NATS" in text
    assert f"127.0.0.1:{port}" in text
    assert "s3cret" not in text
    assert "hunter2" not in text
    assert "hunter2" not in repr(options)


def test_connection_options_become_nats_connect_arguments() -> None:
    options = NatsOptions(servers=("nats://127.0.0.1:4222", "nats://127.0.0.1:4223"),
                          user="opsicle", password="pw", reconnect_wait_seconds=0.5)
    kwargs = options.connect_kwargs()
    assert kwargs["servers"] == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert (kwargs["user"], kwargs["password"]) == ("opsicle", "pw")
    assert kwargs["reconnect_time_wait"] == 0.5
    assert "tls" not in kwargs
    assert options.address == "nats://127.0.0.1:4222,nats://127.0.0.1:4223"


def test_unreadable_tls_files_are_invalid(tmp_path: Path) -> None:
    options = NatsOptions(tls_ca_file=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(Invalid, match="TLS"):
        options.connect_kwargs()


@pytest.fixture
async def own_nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    binary = nats_binary()
    require_service("nats-server", binary is not None,
                    "the binary is needed to stop and restart a server")
    assert binary is not None
    server = NatsServer(binary, tmp_path / "jetstream", tmp_path / "nats-server.log")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_while_nats_is_down_calls_fail_fast_and_work_resumes_after_reconnect(
    own_nats_server: NatsServer,
) -> None:
    options = NatsOptions(servers=(own_nats_server.url,), connect_timeout_seconds=1.0,
                          request_timeout_seconds=1.0, reconnect_wait_seconds=0.1)
    config = unique_config()
    async with await NatsQueue.open(options, config) as queue:
        stored = message(b"stored before the outage")
        await queue.publish(stored)
        await asyncio.to_thread(own_nats_server.stop)
        await _until(lambda: not queue.client.is_connected)

        # Bounded by the request timeout, never waiting for the server to come back.
        with pytest.raises(Unavailable, match=f"NATS at .*127.0.0.1:{own_nats_server.port}"):
            await asyncio.wait_for(queue.publish(message()), 5.0)
        with pytest.raises(Unavailable, match="NATS"):
            await asyncio.wait_for(queue.pull(0.1), 5.0)
        with pytest.raises(Unavailable, match="NATS"):
            await NatsHealthCheck(queue).check()

        await asyncio.to_thread(own_nats_server.start)
        await _until(lambda: queue.client.is_connected)
        await NatsHealthCheck(queue).check()
        # File storage: what was stored before the outage is still there, and a retry of its
        # id is still a duplicate. (After a server restart JetStream rebuilds the duplicate
        # window from the messages it still holds: an id acked before the restart is
        # forgotten, which is why run state in SQL, not the queue, guards against re-runs.)
        await queue.publish(QueueMessage(id=stored.id, body=b"retry"))
        assert await queue.depth() == 1
        delivery = await pull(queue)
        assert delivery.message == stored
        await delivery.ack()
        assert await queue.depth() == 0


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")
