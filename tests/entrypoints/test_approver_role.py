"""The approver role wired from settings against loopback Telegram and Slack stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from domain.chat_links import ChatPlatform
from domain.services.chat_links import issue_link_code
from entrypoints import bootstrap, settings
from entrypoints.approver import approver_role
from entrypoints.bootstrap import FastPasswordHasher, embedded_platform
from tests.services.test_approvals import World
from tests.standins.rigs import (
    ALICE_SLACK,
    ALICE_TG,
    SLACK_CHANNEL,
    SLACK_SECRET,
    SLACK_TOKEN,
    TG_CHAT,
    TG_TOKEN,
)
from tests.standins.serve import serve_on_loopback
from tests.standins.slack import SlackStandIn
from tests.standins.telegram import TelegramStandIn


async def test_the_approver_polls_telegram_serves_slack_and_its_probes(tmp_path: Path) -> None:
    tg = TelegramStandIn(TG_TOKEN, chats=(TG_CHAT,))
    slack = SlackStandIn(SLACK_TOKEN, SLACK_SECRET, channels=(SLACK_CHANNEL,))
    async with serve_on_loopback(tg.app) as tg_url, serve_on_loopback(slack.app) as slack_url:
        resolved = settings.load(
            env={},
            config=None,
            data_dir=str(tmp_path),
            telegram_bot_token=TG_TOKEN,
            telegram_api_url=tg_url,
            slack_bot_token=SLACK_TOKEN,
            slack_signing_secret=SLACK_SECRET,
            slack_api_url=f"{slack_url}/api",
        )
        async with approver_role(resolved) as role:
            transport = httpx.ASGITransport(app=role.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://approver") as c:
                assert (await c.get("/healthz")).status_code == 200
                assert (await c.get("/readyz")).status_code == 200
                assert (await c.get("/metrics")).status_code == 200
                unsigned = await c.post("/slack/commands", content=b"text=link+x")
                assert unsigned.status_code == 401
            await tg.say(TG_CHAT, ALICE_TG, "/link not-a-code")
            for _ in range(200):
                if tg.sent("sendMessage"):
                    break
                await asyncio.sleep(0.02)
            [reply] = tg.sent("sendMessage")
            assert "not valid" in reply["text"]


APP_TOKEN = "xapp-1-A1-standin-app-token"
NAMED_POLICY = f"""\
approvers: [ALICE, BOB]
telegram:
  chatIds: [{TG_CHAT}]
slack:
  channelNames: ["#approvals"]
"""


@contextlib.asynccontextmanager
async def chats(tmp_path: Path) -> AsyncIterator[tuple[TelegramStandIn, SlackStandIn,
                                                       settings.Settings]]:
    """Telegram and Slack stand-ins (Slack with #approvals and Socket Mode), and settings for
    every chat pointed at them."""
    tg = TelegramStandIn(TG_TOKEN, chats=(TG_CHAT,))
    slack = SlackStandIn(SLACK_TOKEN, SLACK_SECRET, channels=(SLACK_CHANNEL,),
                         names={"approvals": SLACK_CHANNEL}, app_token=APP_TOKEN)
    async with serve_on_loopback(tg.app) as tg_url, serve_on_loopback(slack.app) as slack_url:
        yield tg, slack, settings.load(
            env={}, config=None, data_dir=str(tmp_path),
            telegram_bot_token=TG_TOKEN, telegram_api_url=tg_url,
            slack_bot_token=SLACK_TOKEN, slack_signing_secret=SLACK_SECRET,
            slack_app_token=APP_TOKEN, slack_api_url=f"{slack_url}/api",
        )


@contextlib.asynccontextmanager
async def store_world(resolved: settings.Settings) -> AsyncIterator[World]:
    """Another process's view of the same store: it creates the runs that need approval."""
    async with embedded_platform(resolved) as (p, _):
        mailer = InMemoryMailer()
        p = attrs.evolve(p, mailer=mailer, passwords=FastPasswordHasher(), approval_channels=())
        w = World(p, mailer, FakeClock(datetime.now(UTC)))
        await w.setup(NAMED_POLICY)
        yield w


async def until(check: Callable[[], Awaitable[bool] | bool]) -> None:
    for _ in range(1000):
        done = check()
        if done if isinstance(done, bool) else await done:
            return
        await asyncio.sleep(0.03)
    raise AssertionError("the condition never held")


def asked(messages: list[dict[str, Any]]) -> int:
    return len([m for m in messages if "Approval requested" in str(m.get("text"))])


async def test_two_approver_processes_on_one_store_post_each_request_once(
    tmp_path: Path,
) -> None:
    async with chats(tmp_path) as (tg, slack, resolved), store_world(resolved) as w:
        ids = [await w.approval_id((await w.run()).run.id) for _ in range(3)]
        async with approver_role(resolved), approver_role(resolved):

            async def recorded() -> bool:
                async with w.p.uow() as uow:
                    found = [await uow.approvals.get(i) for i in ids]
                return all(a.messages.get("telegram") == a.messages.get("slack") ==
                           "announced" for a in found)

            await until(recorded)
            await until(lambda: slack.connections == 2)  # each has its Socket Mode link
        assert asked(tg.sent("sendMessage")) == 3
        assert asked(slack.sent("chat.postMessage")) == 3


async def test_standalone_runs_the_chats_and_their_answers_conclude_the_request(
    tmp_path: Path,
) -> None:
    async with (
        chats(tmp_path) as (tg, slack, resolved),
        bootstrap.standalone(resolved) as role,
        store_world(resolved) as w,
    ):
        transport = httpx.ASGITransport(app=role.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://opsicle") as c:
            unsigned = await c.post("/slack/interactions", content=b"payload=%7B%7D")
            assert unsigned.status_code == 401  # the request URL is served too
        view = await w.run()
        aid = await w.approval_id(view.run.id)
        await until(lambda: asked(tg.sent("sendMessage")) == 1
                    and asked(slack.sent("chat.postMessage")) == 1)
        [posted] = [m for m in slack.messages if m.metadata]
        assert posted.channel == SLACK_CHANNEL  # #approvals, resolved to its id

        code = (await issue_link_code(w.p, w.alice, ChatPlatform.SLACK)).code
        linked = await slack.command_over_socket(SLACK_CHANNEL, ALICE_SLACK, f"link {code}")
        assert "Linked" in linked["payload"]["text"]
        await slack.press_over_socket(SLACK_CHANNEL, posted.ts, ALICE_SLACK,
                                      "opsicle_approve")

        async def concluded() -> bool:
            async with w.p.uow() as uow:
                stored = await uow.approvals.get(aid)
            return stored.messages.get("telegram") == stored.messages.get("slack") == \
                "concluded"

        await until(concluded)
        assert "Approved" in tg.sent("editMessageText")[-1]["text"]
        assert "Approved" in slack.sent("chat.update")[-1]["text"]


async def test_slack_settings_without_the_bot_token_are_named_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resolved = settings.load(env={}, config=None, data_dir=str(tmp_path),
                             slack_app_token="xapp-1-A1-standin-app-token")
    with caplog.at_level(logging.WARNING, logger="opsicle"):
        async with approver_role(resolved) as role:
            transport = httpx.ASGITransport(app=role.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://approver") as c:
                assert (await c.post("/slack/commands", content=b"text=help")).status_code == 404
    [warning] = [r.getMessage() for r in caplog.records if "Slack" in r.getMessage()]
    assert warning == ("Slack is off: slack-app-token or slack-signing-secret is set but "
                       "slack-bot-token is not")
    assert "xapp-" not in caplog.text
