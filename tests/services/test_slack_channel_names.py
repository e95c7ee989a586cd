"""Policies name Slack channels as ``#ops`` or by id: names resolve through conversations.list."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from adapters.slack.web import SlackChannel, SlackDirectory, SlackWeb
from domain.errors import Invalid
from tests.standins.rigs import SLACK_CHANNEL, SLACK_SECRET, SLACK_TOKEN, sample
from tests.standins.serve import serve_on_loopback
from tests.standins.slack import SlackStandIn

OPS = "C0OPS00001"
NAMES = {"ops": OPS, "approvals": SLACK_CHANNEL, "general": "C0GENERAL1", "random": "C0RANDOM01"}
SECRET_ROOM = {"secret-room": "G0SECRET01"}  # exists, but the bot is not in it


@contextlib.asynccontextmanager
async def slack() -> AsyncIterator[tuple[SlackStandIn, SlackWeb]]:
    standin = SlackStandIn(SLACK_TOKEN, SLACK_SECRET, channels=(*NAMES.values(),),
                           names=NAMES, outside=SECRET_ROOM)
    standin.list_page = 2  # several pages of channels
    async with (
        serve_on_loopback(standin.app) as url,
        SlackWeb(SLACK_TOKEN, base_url=f"{url}/api") as web,
    ):
        yield standin, web


async def test_a_channel_named_in_a_policy_is_resolved_once_and_posted_to_by_id() -> None:
    async with slack() as (standin, web):
        channel = SlackChannel(web, ("#ops", SLACK_CHANNEL))
        first, run = sample("apv-names-1")
        refs = await channel.announce(first, run)
        assert set(refs) == {OPS, SLACK_CHANNEL}
        assert {m["channel"] for m in standin.sent("chat.postMessage")} == {OPS, SLACK_CHANNEL}
        pages = len(standin.sent("conversations.list"))
        assert pages == 3  # five channels, two a page
        await channel.announce(*sample("apv-names-2"))
        assert len(standin.sent("conversations.list")) == pages  # cached


@pytest.mark.parametrize(("name", "says"), [
    ("#no-such-room", "Slack channel #no-such-room does not exist"),
    ("#secret-room", "the Opsicle bot is not in Slack channel #secret-room"),
    ("C0GONE0001", "Slack channel C0GONE0001 does not exist, is archived, or the Opsicle bot "
                   "is not in it"),
])
async def test_a_channel_that_is_missing_or_without_the_bot_is_named_in_one_error(
    name: str, says: str,
) -> None:
    async with slack() as (standin, web):
        with pytest.raises(Invalid) as caught:
            await SlackChannel(web, (name,)).announce(*sample("apv-missing"))
        assert str(caught.value).startswith(says)
        assert standin.sent("chat.postMessage") == [] or name.startswith("C")


async def test_a_bad_channel_beside_good_ones_is_logged_once_and_the_rest_are_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with slack() as (standin, web):
        channel = SlackChannel(web, ("#ops", "#no-such-room"))
        approval, run = sample("apv-mixed")
        with caplog.at_level(logging.ERROR, logger="opsicle.slack"):
            assert set(await channel.announce(approval, run)) == {OPS}
            assert set(await channel.announce(approval, run)) == {OPS}
        assert len(standin.sent("chat.postMessage")) == 1
        [logged] = [r.getMessage() for r in caplog.records if "#no-such-room" in r.getMessage()]
        assert "apv-mixed" in logged


async def test_a_refused_channel_listing_is_asked_again_only_after_the_retry_pause() -> None:
    async with slack() as (standin, web):
        standin.refuse["conversations.list"] = "missing_scope"
        now = [0.0]
        directory = SlackDirectory(web, retry=30.0, monotonic=lambda: now[0])
        channel = SlackChannel(web, ("#ops", "#approvals"), directory)
        for _ in range(3):
            with pytest.raises(Invalid) as caught:
                await channel.announce(*sample("apv-scope"))
            assert "missing_scope" in str(caught.value)
        assert standin.refused == [("conversations.list", "missing_scope")]
        del standin.refuse["conversations.list"]
        now[0] = 30.0
        assert set(await channel.announce(*sample("apv-scope"))) == {OPS, SLACK_CHANNEL}
