"""Queues per topic on NATS JetStream: one stream over a wildcard, a durable consumer per topic."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest

from adapters.nats.connection import connect
from adapters.nats.queue import subject_matches
from adapters.nats.topics import NatsTopicsConfig, nats_topics
from domain.errors import Invalid
from domain.ports import HealthCheck, Queue, QueueMessage
from tests.contract.test_queue import NATS_OPTIONS, nats_admin


@pytest.fixture
async def topics() -> AsyncIterator[tuple[Callable[[str], Queue], HealthCheck, str]]:
    tag = uuid.uuid4().hex[:12]
    config = NatsTopicsConfig(stream=f"opsicle-test-{tag}", prefix=f"opsicletest{tag}")
    async with AsyncExitStack() as stack:
        admin = await nats_admin(stack)
        stack.push_async_callback(admin.jetstream().delete_stream, config.stream)
        queues, check = await stack.enter_async_context(nats_topics(NATS_OPTIONS, config))
        yield queues, check, config.stream


def test_subject_patterns() -> None:
    assert subject_matches("opsicle.runs.>", "opsicle.runs.org1")
    assert subject_matches("opsicle.runs.>", "opsicle.runs.org1.more")
    assert not subject_matches("opsicle.runs.>", "opsicle.runs")
    assert subject_matches("opsicle.*.x", "opsicle.runs.x")
    assert not subject_matches("opsicle.*.x", "opsicle.runs.y")
    assert subject_matches("opsicle.runs", "opsicle.runs")
    assert not subject_matches("opsicle.runs", "opsicle.runs.a")


async def test_each_topic_has_its_own_consumer_on_the_one_stream(
    topics: tuple[Callable[[str], Queue], HealthCheck, str],
) -> None:
    queues, check, _ = topics
    await check.check()
    a, b = queues("runs.orga"), queues("runs.orgb")
    assert queues("runs.orga") is a
    # Published before any consumer of the topic exists: the stream keeps it.
    await a.publish(QueueMessage("m-a1", b"a1"))
    await a.publish(QueueMessage("m-a1", b"a1"))  # a duplicate id is dropped
    await b.publish(QueueMessage("m-b1", b"b1"))
    await a.publish(QueueMessage("m-a2", b"a2"))
    assert (await a.depth(), await b.depth()) == (2, 1)
    first = await a.pull(2)
    assert first is not None and first.message.body == b"a1"
    await first.ack()
    second = await a.pull(2)
    assert second is not None and second.message.body == b"a2"
    await second.ack()
    assert await a.pull(0.3) is None
    other = await b.pull(2)
    assert other is not None and other.message.body == b"b1"
    await other.ack()
    assert (await a.depth(), await b.depth()) == (0, 0)


async def test_only_known_topic_families_have_queues(
    topics: tuple[Callable[[str], Queue], HealthCheck, str],
) -> None:
    queues, _, _ = topics
    for bad in ("runs", "audit.org1", "runs.a b", "runs..x"):
        with pytest.raises(Invalid):
            queues(bad)


async def test_a_connection_closed_on_purpose_is_not_reported_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncExitStack() as stack:
        await nats_admin(stack)  # skips (fails under CI) without NATS
    client = await connect(NATS_OPTIONS)
    with caplog.at_level(logging.INFO, logger="adapters.nats.connection"):
        await client.close()
    assert "reconnecting" not in caplog.text
    assert "connection closed" in caplog.text
