"""Slack interactions over Socket Mode: the app opens the WebSocket, acks every envelope, and
connects again when Slack asks it to or the connection drops (loopback stand-in)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.slack.socket_mode import SlackSocketMode
from adapters.slack.web import SlackInteractions, SlackWeb
from domain.automations import RunStatus
from domain.chat_links import ChatPlatform
from domain.errors import Unavailable
from domain.services import runs
from domain.services.chat_links import issue_link_code
from entrypoints.loops import service_loop, stop_tasks
from tests.services.test_chat_approvals import POLICY, Rig, rig
from tests.standins.rigs import ALICE_SLACK, MALLORY_SLACK, SLACK_CHANNEL, SLACK_TOKEN

APP_TOKEN = "xapp-1-A1-standin-app-token"


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


@contextlib.asynccontextmanager
async def socket_mode(r: Rig) -> AsyncIterator[SlackSocketMode]:
    """The rig's desk answering over Socket Mode only (no signing secret, no request URL)."""
    r.slack.app_token = APP_TOKEN
    interactions = SlackInteractions(r.slack_channel._web, r.desk.answer, clock=r.w.clock,
                                     commands=r.desk.command)
    socket = SlackSocketMode(r.slack_channel._web, APP_TOKEN, interactions)
    stop = asyncio.Event()
    task = asyncio.create_task(service_loop("slack socket mode", socket.run_once, stop=stop,
                                            clock=r.w.clock, interval=0.0))
    try:
        await until(lambda: r.slack.connections == 1)
        yield socket
    finally:
        stop.set()
        await stop_tasks([task], grace=1.0)


async def test_a_button_press_and_the_code_modal_arrive_over_socket_mode() -> None:
    async with rig() as r, socket_mode(r):
        w = r.w
        await w.setup(POLICY)
        code = (await issue_link_code(w.p, w.alice, ChatPlatform.SLACK)).code
        linked = await r.slack.command_over_socket(SLACK_CHANNEL, ALICE_SLACK, f"link {code}")
        assert "Linked" in linked["payload"]["text"]
        secret = await w.mfa(w.alice)
        view = await w.run()
        aid = await w.approval_id(view.run.id)
        ts = r.slack_channel.message_of(aid, SLACK_CHANNEL)
        assert ts is not None

        refused = await r.slack.press_over_socket(SLACK_CHANNEL, ts, MALLORY_SLACK,
                                                  "opsicle_approve")
        assert set(refused) == {"envelope_id"}  # a press is acked at once, with no payload
        await until(lambda: bool(r.slack.ephemeral(MALLORY_SLACK["id"])))
        assert "not linked" in r.slack.ephemeral(MALLORY_SLACK["id"])[-1].text

        await r.slack.press_over_socket(SLACK_CHANNEL, ts, ALICE_SLACK, "opsicle_approve")
        await until(lambda: bool(r.slack.views))
        [view_id] = r.slack.views
        wrong = "000000" if w.totp(secret) != "000000" else "111111"
        errors = await r.slack.submit_over_socket(view_id, ALICE_SLACK, wrong)
        assert errors["payload"]["response_action"] == "errors"
        done = await r.slack.submit_over_socket(view_id, ALICE_SLACK, w.totp(secret))
        assert "payload" not in done  # an ack without a payload closes the modal
        got = await runs.get_run(w.p, w.admin, view.run.id)
        assert got.run.status is RunStatus.QUEUED
        assert r.slack.refused == []


async def test_socket_mode_reconnects_when_slack_asks_and_when_the_connection_drops() -> None:
    async with rig() as r, socket_mode(r) as socket:
        await r.slack.disconnect("refresh_requested")
        await until(lambda: r.slack.connections == 2)
        await r.slack.drop()
        await until(lambda: r.slack.connections == 3)
        assert socket.connections == 3
        reply = await r.slack.command_over_socket(SLACK_CHANNEL, ALICE_SLACK, "help")
        assert "Usage: /opsicle link CODE" in reply["payload"]["text"]


async def test_socket_mode_with_the_bot_token_instead_of_an_app_token_is_refused() -> None:
    async with rig() as r:
        r.slack.app_token = APP_TOKEN
        web: SlackWeb = r.slack_channel._web
        with pytest.raises(Unavailable) as caught:
            await web.socket_url(SLACK_TOKEN)
        assert "app-level token" in str(caught.value) and SLACK_TOKEN not in str(caught.value)
        assert await web.socket_url(APP_TOKEN)


async def test_slack_refusing_socket_mode_backs_off_rather_than_reconnecting_at_once() -> None:
    """The loop runs Socket Mode with no pause between connections; only ``Unavailable``
    makes it wait, so a refusal that is not an outage would spin."""
    async with rig() as r:
        r.slack.app_token = APP_TOKEN
        r.slack.refuse["apps.connections.open"] = "missing_scope"
        web: SlackWeb = r.slack_channel._web
        interactions = SlackInteractions(web, r.desk.answer, clock=r.w.clock)
        with pytest.raises(Unavailable) as caught:
            await SlackSocketMode(web, APP_TOKEN, interactions).run_once()
        assert "missing_scope" in caught.value.message
        assert APP_TOKEN not in caught.value.message
