"""The approver role: chat answers become approvals of linked users; chat channels; linking."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import attrs
from starlette.routing import Route

from adapters.slack.web import SlackInteractions
from adapters.telegram.answers import AnswerResult, AnswerStatus, ChatAnswer, ChatCommand
from domain.approvals import Approval, ApprovalStatus, Verdict
from domain.audit import Outcome
from domain.automations import Run
from domain.chat_links import ChatPlatform
from domain.errors import Conflict, Invalid, NotFound, OpsicleError, Unavailable
from domain.ports import ApprovalChannel, ChatLinkRepository
from domain.services import approvals
from domain.services.chat_links import link_chat
from domain.services.platform import Caller, Platform, record

if TYPE_CHECKING:
    from entrypoints.bootstrap import Role
    from entrypoints.settings import Settings

log = logging.getLogger("opsicle.approver")

LINK_HINT = {
    ChatPlatform.TELEGRAM: "run 'opsicle link telegram' and send the bot /link CODE",
    ChatPlatform.SLACK: "run 'opsicle link slack' and type /opsicle link CODE",
}


@attrs.frozen
class ChatDesk:
    """Where chat answers and chat commands meet the use cases, as the linked Opsicle user."""

    p: Platform
    links: ChatLinkRepository

    async def answer(self, answer: ChatAnswer) -> AnswerResult:
        """The approval answer of the Opsicle user the chat identity is linked to; the TOTP
        code is checked against that user's own MFA enrolment (never a seed in a policy)."""
        try:
            platform = ChatPlatform(answer.channel)
        except ValueError:
            return AnswerResult(AnswerStatus.REFUSED, f"unknown chat {answer.channel}")
        try:
            link = await self.links.get(platform, answer.user_id)
        except NotFound:
            await record(
                self.p, Caller(), "approval.respond", "approval", answer.approval_id,
                actor=f"{platform.value}:{answer.user_id}", outcome=Outcome.FAILURE,
                data={"verdict": answer.verdict.value, "channel": platform.value,
                      "reason": "chat_identity_not_linked"},
            )
            return AnswerResult(
                AnswerStatus.REFUSED,
                f"your {platform.value} account is not linked to Opsicle: {LINK_HINT[platform]}",
            )
        caller = Caller(user_id=link.user_id, user_agent=f"opsicle approver ({platform.value})")
        try:
            async with self.p.uow() as uow:
                caller = attrs.evolve(caller, email=(await uow.users.get(link.user_id)).email)
        except NotFound:
            return AnswerResult(AnswerStatus.REFUSED, "the linked Opsicle account is gone")
        try:
            view = await approvals.respond_to(
                self.p, caller, answer.approval_id, answer.verdict,
                code=answer.code or "", channel=platform.value,
            )
        except Invalid as exc:
            if exc.code == "approval_code_required":
                return AnswerResult(AnswerStatus.CODE_REQUIRED)
            return AnswerResult(AnswerStatus.REFUSED, exc.message)
        except Unavailable:
            raise
        except Conflict as exc:
            return AnswerResult(AnswerStatus.REFUSED, exc.message)
        except OpsicleError as exc:
            return AnswerResult(AnswerStatus.REFUSED, exc.message)
        approval = view.approval
        if not view.counted:
            return AnswerResult(AnswerStatus.RECORDED, "your answer was counted already")
        if approval.status is not ApprovalStatus.PENDING:
            return AnswerResult(AnswerStatus.DECIDED)
        verb = "approved" if answer.verdict is Verdict.APPROVE else "rejected"
        return AnswerResult(
            AnswerStatus.RECORDED,
            f"{answer.username} {verb} ({approval.approvals} of {approval.quorum})",
        )

    async def command(self, command: ChatCommand) -> str:
        """``link CODE``: link the sender's chat identity to the code's Opsicle user."""
        if command.name != "link":
            return "Opsicle knows one command here: link CODE"
        platform = ChatPlatform(command.channel)
        code = command.text.strip()
        if not code:
            return f"Send the code too: {LINK_HINT[platform]}"
        try:
            await link_chat(self.p, self.links, platform, command.user_id, code,
                            chat_username=command.username)
        except Invalid:
            return ("That code is not valid: it may be mistyped, used already or expired. "
                    f"Get a new one: {LINK_HINT[platform]}")
        return "✅ Linked: your answers here now count as your Opsicle account's."


def telegram_chats(approval: Approval, run: Run) -> Sequence[int]:
    """The Telegram chats an approval's policy names."""
    return [chat for target in approval.policy.telegram for chat in target.chat_ids]


def slack_channels(approval: Approval, run: Run) -> Sequence[str]:
    """The Slack channels (ids, else names) an approval's policy names."""
    return [c for target in approval.policy.slack
            for c in (*target.channel_ids, *target.channel_names)]


def slack_routes(interactions: SlackInteractions) -> list[Route]:
    """The Slack request URLs: interactivity (buttons, modals) and the /opsicle command."""
    return [
        Route("/slack/interactions", interactions.endpoint, methods=["POST"]),
        Route("/slack/commands", interactions.command_endpoint, methods=["POST"]),
    ]


TELEGRAM_POLL_SECONDS = 25


@asynccontextmanager
async def approver_role(settings: Settings) -> AsyncIterator[Role]:
    """The approver: the platform with Telegram and Slack channels announcing and concluding
    requests, the Telegram update poller (``telegram-bot-token``) and the Slack request URLs
    (``slack-bot-token`` + ``slack-signing-secret``), with /healthz, /readyz and /metrics."""
    from adapters.slack.web import SlackChannel, SlackWeb
    from adapters.sql.chat_links import sql_chat_links
    from adapters.telegram.bot import TelegramBot, TelegramChannel, TelegramPoller
    from entrypoints.bootstrap import Role, _embedded_stores
    from entrypoints.http.common import build_app
    from entrypoints.loops import service_loop, stop_tasks

    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    async with AsyncExitStack() as stack:
        platform, checks, engine = await stack.enter_async_context(_embedded_stores(settings))
        links = sql_chat_links(engine)
        channels: list[ApprovalChannel] = []
        bot = web = None
        if settings["telegram-bot-token"]:
            bot = TelegramBot(str(settings["telegram-bot-token"]),
                              base_url=str(settings["telegram-api-url"]))
            stack.push_async_callback(bot.aclose)
            channels.append(TelegramChannel(bot, telegram_chats))
        if settings["slack-bot-token"]:
            web = SlackWeb(str(settings["slack-bot-token"]),
                           base_url=str(settings["slack-api-url"]))
            stack.push_async_callback(web.aclose)
            channels.append(SlackChannel(web, slack_channels))
        platform = attrs.evolve(
            platform, approval_channels=(*platform.approval_channels, *channels))
        desk = ChatDesk(platform, links)
        routes: list[Route] = []
        if web is not None and settings["slack-signing-secret"]:
            interactions = SlackInteractions(
                web, desk.answer, signing_secret=str(settings["slack-signing-secret"]),
                clock=platform.clock, commands=desk.command)
            routes += slack_routes(interactions)
        if bot is not None:
            poller = TelegramPoller(bot, desk.answer, clock=platform.clock,
                                    poll_timeout=TELEGRAM_POLL_SECONDS, commands=desk.command)
            tasks.append(asyncio.create_task(service_loop(
                "telegram updates", poller.poll_once, stop=stop, clock=platform.clock,
                interval=0.0)))
        try:
            yield Role("approver", build_app("approver", routes, checks), stop)
        finally:
            stop.set()
            # A long poll in flight is cut short: its updates come again on the next start.
            await stop_tasks(tasks, grace=1.0)
