"""The approver role wired from settings against loopback Telegram and Slack stand-ins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from entrypoints import settings
from entrypoints.approver import approver_role
from tests.standins.rigs import (
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
