"""The ApprovalChannel contract over the in-memory channel, Telegram and Slack (on stand-ins).

Telegram and Slack cannot be reached from here: their legs run against the loopback
stand-ins in ``tests/standins``, which check requests the way the real APIs do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import attrs
import pytest

from adapters.memory.approvals import InMemoryApprovalChannel
from adapters.slack.web import SlackChannel, SlackWeb
from adapters.telegram.bot import TelegramBot, TelegramChannel
from domain.approvals import Approval, ApprovalResponse, ApprovalStatus, Verdict
from domain.errors import Unavailable
from domain.ports import ApprovalChannel
from tests.standins.rigs import (
    NOW,
    SLACK_CHANNEL,
    SLACK_TOKEN,
    TG_CHAT,
    TG_TOKEN,
    sample,
    slack_rig,
    telegram_rig,
)
from tests.standins.serve import free_port


@attrs.define
class Leg:
    channel: ApprovalChannel
    # What the channel's humans see for an approval now (texts of the messages).
    shown: Callable[[str], list[str]]


@contextlib.asynccontextmanager
async def leg(name: str) -> AsyncIterator[Leg]:
    if name == "memory":
        memory = InMemoryApprovalChannel()

        def shown_memory(approval_id: str) -> list[str]:
            seen = [a for a, _ in memory.announced if a.id == approval_id]
            done = [a for a, _ in memory.concluded if a.id == approval_id]
            return [f"{a.id} {a.status}" for a in seen + done]

        yield Leg(memory, shown_memory)
    elif name == "telegram":
        async with telegram_rig() as tg:

            def shown_telegram(approval_id: str) -> list[str]:
                return [m.text for m in tg.standin.visible(TG_CHAT) if approval_id in m.text]

            yield Leg(tg.channel, shown_telegram)
    else:
        async with slack_rig() as sl:

            def shown_slack(approval_id: str) -> list[str]:
                return [
                    m.text + " " + str(m.blocks)
                    for m in sl.standin.messages
                    if approval_id in str(m.blocks)
                ]

            yield Leg(sl.channel, shown_slack)


LEGS = ["memory", "telegram", "slack"]


def decided(approval: Approval, status: ApprovalStatus) -> Approval:
    response = ApprovalResponse("alice", Verdict.APPROVE, NOW, channel="telegram")
    return attrs.evolve(approval, status=status, responses=(response,), decided_at=NOW)


@pytest.mark.parametrize("name", LEGS)
async def test_announced_request_is_shown_with_its_approval_id(name: str) -> None:
    async with leg(name) as it:
        approval, run = sample("apv-show")
        await it.channel.announce(approval, run)
        assert len(it.shown("apv-show")) == 1
        assert it.channel.name


@pytest.mark.parametrize("name", LEGS)
async def test_conclude_shows_the_outcome_where_the_request_was_asked(name: str) -> None:
    async with leg(name) as it:
        approval, run = sample("apv-done")
        await it.channel.announce(approval, run)
        await it.channel.conclude(decided(approval, ApprovalStatus.APPROVED), run)
        shown = " ".join(it.shown("apv-done"))
        assert "approved" in shown.lower()


@pytest.mark.parametrize("name", LEGS)
async def test_announcing_twice_asks_once_per_chat(name: str) -> None:
    async with leg(name) as it:
        approval, run = sample("apv-twice")
        await it.channel.announce(approval, run)
        await it.channel.announce(approval, run)
        if name != "memory":  # the fake records every call; real chats get one message
            assert len(it.shown("apv-twice")) == 1


@contextlib.asynccontextmanager
async def dead(name: str) -> AsyncIterator[tuple[ApprovalChannel, str]]:
    """A channel whose service does not answer, and the secret that must not leak."""
    url = f"http://127.0.0.1:{free_port()}"
    if name == "memory":
        memory = InMemoryApprovalChannel()
        memory.unavailable = True
        yield memory, "no-secret"
    elif name == "telegram":
        async with TelegramBot(TG_TOKEN, base_url=url, timeout=2) as bot:
            yield TelegramChannel(bot, (TG_CHAT,)), TG_TOKEN
    else:
        async with SlackWeb(SLACK_TOKEN, base_url=url, timeout=2) as web:
            yield SlackChannel(web, (SLACK_CHANNEL,)), SLACK_TOKEN


@pytest.mark.parametrize("name", LEGS)
async def test_a_channel_that_does_not_answer_raises_unavailable_without_secrets(
    name: str,
) -> None:
    async with dead(name) as (channel, secret):
        approval, run = sample("apv-dead")
        with pytest.raises(Unavailable) as caught:
            await channel.announce(approval, run)
        assert secret not in str(caught.value)
        if name != "memory":
            assert name.capitalize() in str(caught.value)
