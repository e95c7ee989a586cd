"""Linked chat users approve runs in Telegram and Slack with their own TOTP codes (loopback)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import attrs
import httpx
import pytest
from starlette.applications import Starlette

from adapters.memory.chat_links import in_memory_chat_links
from adapters.memory.clock import FakeClock
from adapters.slack.web import SlackChannel, SlackInteractions, SlackWeb, signature
from adapters.telegram.answers import AnswerStatus, ChatAnswer, ChatCommand
from adapters.telegram.bot import (
    PROMPT_MARK,
    TelegramBot,
    TelegramChannel,
    TelegramPoller,
    callback_data,
)
from domain.approvals import Verdict
from domain.automations import RunStatus
from domain.chat_links import ChatPlatform
from domain.ports import ChatLinkRepository
from domain.services import runs
from domain.services.chat_links import issue_link_code
from entrypoints.approver import ChatDesk, slack_channels, slack_routes, telegram_chats
from entrypoints.bootstrap import memory_platform
from tests.services.test_approvals import World
from tests.standins.rigs import (
    ALICE_SLACK,
    ALICE_TG,
    MALLORY_SLACK,
    MALLORY_TG,
    SLACK_CHANNEL,
    SLACK_SECRET,
    SLACK_TOKEN,
    TG_CHAT,
    TG_TOKEN,
)
from tests.standins.serve import serve_on_loopback
from tests.standins.slack import SlackStandIn
from tests.standins.telegram import TelegramStandIn

POLICY = f"""\
approvers: [ALICE, BOB]
requireCode: true
telegram:
  chatIds: [{TG_CHAT}]
  authorizedResponders: [{{username: alice, mfaSeed: JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP}}]
slack:
  channelIds: [{SLACK_CHANNEL}]
"""


@attrs.define
class Rig:
    w: World
    links: ChatLinkRepository
    desk: ChatDesk
    tg: TelegramStandIn
    slack: SlackStandIn
    tg_channel: TelegramChannel
    slack_channel: SlackChannel
    poller: TelegramPoller
    commands_url: str


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock(datetime.now(UTC))  # Slack signatures carry real timestamps
    tg = TelegramStandIn(TG_TOKEN, chats=(TG_CHAT,))
    slack = SlackStandIn(SLACK_TOKEN, SLACK_SECRET, channels=(SLACK_CHANNEL,))
    p, mailer = memory_platform(clock)
    links = in_memory_chat_links()
    async with (
        serve_on_loopback(tg.app) as tg_url,
        serve_on_loopback(slack.app) as slack_url,
        TelegramBot(TG_TOKEN, base_url=tg_url) as bot,
        SlackWeb(SLACK_TOKEN, base_url=f"{slack_url}/api") as web,
    ):
        tg_channel = TelegramChannel(bot, telegram_chats)
        slack_channel = SlackChannel(web, slack_channels)
        p = attrs.evolve(p, approval_channels=(tg_channel, slack_channel))
        desk = ChatDesk(p, links)
        poller = TelegramPoller(bot, desk.answer, clock=clock, poll_timeout=0,
                                commands=desk.command)
        interactions = SlackInteractions(web, desk.answer, signing_secret=SLACK_SECRET,
                                         clock=clock, commands=desk.command)
        async with serve_on_loopback(Starlette(routes=slack_routes(interactions))) as url:
            slack.request_url = f"{url}/slack/interactions"
            yield Rig(World(p, mailer, clock), links, desk, tg, slack, tg_channel,
                      slack_channel, poller, f"{url}/slack/commands")


async def slash(url: str, user: dict[str, str], text: str, *, secret: str = SLACK_SECRET
                ) -> httpx.Response:
    body = urlencode({"command": "/opsicle", "text": text, "user_id": user["id"],
                      "user_name": user["username"], "channel_id": SLACK_CHANNEL}).encode()
    stamp = str(int(time.time()))
    headers = {"content-type": "application/x-www-form-urlencoded",
               "x-slack-request-timestamp": stamp,
               "x-slack-signature": signature(secret, stamp, body)}
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, content=body, headers=headers)


async def test_a_linked_telegram_user_approves_with_their_own_code_and_the_run_is_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        w = r.w
        await w.setup(POLICY)
        code = (await issue_link_code(w.p, w.alice, ChatPlatform.TELEGRAM)).code
        await r.tg.say(TG_CHAT, ALICE_TG, f"/link@opsicle_bot {code}")
        await r.poller.poll_once()
        assert "Linked" in r.tg.sent("sendMessage")[-1]["text"]
        assert (await r.links.get(ChatPlatform.TELEGRAM, str(ALICE_TG["id"]))).user_id == \
            w.alice.user_id
        secret = await w.mfa(w.alice)
        with caplog.at_level(logging.WARNING, "domain.services.approvals"):
            view = await w.run()
        assert "mfaSeed" in caplog.text
        assert view.run.status is RunStatus.PENDING_APPROVAL
        aid = await w.approval_id(view.run.id)
        message_id = r.tg_channel.message_of(aid, TG_CHAT)
        assert message_id is not None
        approve = callback_data(Verdict.APPROVE, aid)

        query = await r.tg.press(TG_CHAT, message_id, MALLORY_TG, approve)
        await r.poller.poll_once()
        refusal = r.tg.callback_answers[query]
        assert "not linked" in refusal["text"] and refusal["show_alert"] is True

        await r.tg.press(TG_CHAT, message_id, ALICE_TG, approve)
        await r.poller.poll_once()
        prompt = r.tg.visible(TG_CHAT)[-1]
        assert prompt.text.startswith(PROMPT_MARK)
        await r.tg.reply(TG_CHAT, prompt.message_id, ALICE_TG, w.totp(secret))
        await r.poller.poll_once()

        got = await runs.get_run(w.p, w.admin, view.run.id)
        assert got.run.status is RunStatus.QUEUED
        (edited,) = r.tg.sent("editMessageText")
        assert "Approved" in edited["text"]
        assert all(not m.text.isdigit() for m in r.tg.visible(TG_CHAT))  # the code is gone
        [(_, linked)] = await w.events("chat_link.create")
        assert linked["platform"] == "telegram"
        responded = [d for _, d in await w.events("approval.respond")]
        assert [d["reason"] for d in responded if "reason" in d] == [
            "chat_identity_not_linked", "approval_code_required"]
        assert responded[-1]["channel"] == "telegram"


async def test_a_linked_slack_user_approves_through_the_code_modal() -> None:
    async with rig() as r:
        w = r.w
        await w.setup(POLICY)
        code = (await issue_link_code(w.p, w.alice, ChatPlatform.SLACK)).code
        forged = await slash(r.commands_url, ALICE_SLACK, f"link {code}", secret="x" * 32)
        assert forged.status_code == 401
        linked = await slash(r.commands_url, ALICE_SLACK, f"link {code}")
        assert linked.status_code == 200 and "Linked" in linked.json()["text"]
        again = await slash(r.commands_url, MALLORY_SLACK, f"link {code}")  # single use
        assert "not valid" in again.json()["text"]
        secret = await w.mfa(w.alice)
        view = await w.run()
        aid = await w.approval_id(view.run.id)
        ts = r.slack_channel.message_of(aid, SLACK_CHANNEL)
        assert ts is not None

        await r.slack.press(SLACK_CHANNEL, ts, MALLORY_SLACK, "opsicle_approve")
        assert "not linked" in r.slack.ephemeral(MALLORY_SLACK["id"])[-1].text

        pressed = await r.slack.press(SLACK_CHANNEL, ts, ALICE_SLACK, "opsicle_approve")
        assert pressed.status_code == 200
        [view_id] = r.slack.views
        wrong = "000000" if w.totp(secret) != "000000" else "111111"
        refused = await r.slack.submit(view_id, ALICE_SLACK, wrong)
        assert refused.json()["response_action"] == "errors"
        done = await r.slack.submit(view_id, ALICE_SLACK, w.totp(secret))
        assert done.status_code == 200 and not done.content

        got = await runs.get_run(w.p, w.admin, view.run.id)
        assert got.run.status is RunStatus.QUEUED
        (updated,) = r.slack.sent("chat.update")
        assert "Approved" in updated["text"]


async def test_the_desk_refuses_the_unlinked_and_asks_the_linked_for_their_code() -> None:
    async with rig() as r:
        w = r.w
        await w.setup(POLICY)
        view = await w.run()
        aid = await w.approval_id(view.run.id)
        answer = ChatAnswer(aid, "telegram", "777", "@bob", Verdict.APPROVE, None,
                            str(TG_CHAT), "1")
        refused = await r.desk.answer(answer)
        assert refused.status is AnswerStatus.REFUSED and "opsicle link telegram" in \
            refused.message
        code = (await issue_link_code(w.p, w.bob, ChatPlatform.TELEGRAM)).code
        command = ChatCommand("telegram", "777", "@bob", str(TG_CHAT), "link", code)
        assert "Linked" in await r.desk.command(command)
        assert (await r.desk.answer(answer)).status is AnswerStatus.CODE_REQUIRED
        rejected = await r.desk.answer(attrs.evolve(answer, verdict=Verdict.REJECT))
        assert rejected.status is AnswerStatus.DECIDED
        late = await r.desk.answer(answer)
        assert late.status is AnswerStatus.REFUSED
        got = await runs.get_run(w.p, w.admin, view.run.id)
        assert got.run.status is RunStatus.REJECTED
