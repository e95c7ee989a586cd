"""Stand-ins served on loopback with the adapters pointed at them, plus sample approvals."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import attrs
from starlette.applications import Starlette
from starlette.routing import Route

from adapters.memory.clock import FakeClock
from adapters.slack.web import SlackChannel, SlackInteractions, SlackWeb
from adapters.telegram.answers import AnswerResult, AnswerStatus, ChatAnswer
from adapters.telegram.bot import TelegramBot, TelegramChannel, TelegramPoller
from domain.approvals import Approval
from domain.automations import Run, RunStatus
from domain.resources import AutomationSpec, Phase
from tests.standins.serve import serve_on_loopback
from tests.standins.slack import SlackStandIn
from tests.standins.telegram import TelegramStandIn

TG_TOKEN = "123456:AAH-standin-secret-token"
TG_CHAT = -1001234
SLACK_TOKEN = "xoxb-standin-bot-token"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_CHANNEL = "C0APPROVALS"
ALICE_TG = {"id": 4242, "is_bot": False, "first_name": "Alice", "username": "alice"}
MALLORY_TG = {"id": 6666, "is_bot": False, "first_name": "Mallory", "username": "mallory"}
ALICE_SLACK = {"id": "U0ALICE", "username": "alice"}
MALLORY_SLACK = {"id": "U0MALLORY", "username": "mallory"}
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def sample(approval_id: str = "apv-01", *, quorum: int = 1) -> tuple[Approval, Run]:
    run = Run(
        id=f"run-{approval_id}",
        spec=AutomationSpec(phases=(Phase(name="go", image="busybox", commands=("true",)),)),
        status=RunStatus.PENDING_APPROVAL,
        created_at=NOW,
        name="restart-db",
        template_id="tpl-1",
        template_version=3,
        requested_by="bob",
        comment="nightly maintenance",
        variables={"host": "db-1", "password": "***", "force": True},
    )
    approval = Approval(
        id=approval_id,
        run_id=run.id,
        requested_by="bob",
        quorum=quorum,
        expires_at=NOW + timedelta(hours=1),
        created_at=NOW,
    )
    return approval, run


@attrs.define
class Recorder:
    """An answer handler that records answers and replies with what the test scripted."""

    answers: list[ChatAnswer] = attrs.field(factory=list)
    script: list[AnswerResult] = attrs.field(factory=list)

    async def __call__(self, answer: ChatAnswer) -> AnswerResult:
        self.answers.append(answer)
        if self.script:
            return self.script.pop(0)
        return AnswerResult(AnswerStatus.DECIDED)


@attrs.define
class TelegramRig:
    standin: TelegramStandIn
    bot: TelegramBot
    channel: TelegramChannel
    poller: TelegramPoller
    clock: FakeClock


@contextlib.asynccontextmanager
async def telegram_rig(handler: Recorder | None = None) -> AsyncIterator[TelegramRig]:
    standin = TelegramStandIn(TG_TOKEN, chats=(TG_CHAT,))
    clock = FakeClock(NOW)
    async with serve_on_loopback(standin.app) as url, TelegramBot(TG_TOKEN, base_url=url) as bot:
        poller = TelegramPoller(bot, handler or Recorder(), clock=clock, poll_timeout=0)
        yield TelegramRig(standin, bot, TelegramChannel(bot, (TG_CHAT,)), poller, clock)


@attrs.define
class SlackRig:
    standin: SlackStandIn
    web: SlackWeb
    channel: SlackChannel
    clock: FakeClock


@contextlib.asynccontextmanager
async def slack_rig(handler: Recorder | None = None) -> AsyncIterator[SlackRig]:
    standin = SlackStandIn(SLACK_TOKEN, SLACK_SECRET, channels=(SLACK_CHANNEL,))
    clock = FakeClock(datetime.now(UTC))  # signatures carry real timestamps
    async with (
        serve_on_loopback(standin.app) as slack_url,
        SlackWeb(SLACK_TOKEN, base_url=f"{slack_url}/api") as web,
    ):
        interactions = SlackInteractions(
            web, handler or Recorder(), signing_secret=SLACK_SECRET, clock=clock
        )
        approver = Starlette(
            routes=[Route("/slack/interactions", interactions.endpoint, methods=["POST"])]
        )
        async with serve_on_loopback(approver) as approver_url:
            standin.request_url = f"{approver_url}/slack/interactions"
            yield SlackRig(standin, web, SlackChannel(web, (SLACK_CHANNEL,)), clock)
