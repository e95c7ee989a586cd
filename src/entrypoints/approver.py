"""The approver role: chat answers become approvals of linked users; chat channels; linking."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs
from starlette.routing import Route

from adapters.slack.web import SlackInteractions
from adapters.telegram.answers import AnswerResult, AnswerStatus, ChatAnswer, ChatCommand
from domain.approvals import Approval, ApprovalStatus, ChatClaim, Verdict
from domain.audit import Outcome
from domain.automations import Run
from domain.chat_links import ChatPlatform
from domain.errors import Conflict, Invalid, NotFound, OpsicleError, Unavailable
from domain.ports import ApprovalChannel, ApprovalFilter, ChatLinkRepository, RelayClaims
from domain.services import approvals
from domain.services.approvals import (
    ANNOUNCED,
    CONCLUDED,
    channel_refs,
    channel_state,
    with_channel,
)
from domain.services.chat_links import link_chat
from domain.services.platform import Caller, Platform, record
from entrypoints.loops import Purge

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

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


DECIDED = (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED)
CLAIM_PURGE_BATCH = 500


def process_owner() -> str:
    """This process's name on the relay claims it takes: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@attrs.define
class ChatRelay:
    """Shows every pending request on each chat channel and concludes it there once decided,
    wherever it was created or decided. What each channel showed is stored in
    ``Approval.messages``, so another approver process (or this one restarted) neither posts
    twice nor loses the messages to edit.

    Several approver processes share the work through ``claims``: before posting to (or
    editing on) a channel, a process claims the (approval, channel) pair for ``lease``, reads
    the request again, acts, records what it did on the request, and then releases the claim.
    A process that stops while holding a claim keeps the others off until its lease ends;
    the next one then takes over and announces with ``recover``, so a channel that can look
    its messages up (Slack) adopts what the stopped one posted. What remains at least once:
    a Telegram message sent by a process that stopped before recording it (the Bot API cannot
    read chat history), and a post that outlasts the lease (far longer than the API timeouts).

    Decided requests are looked for from ``lookback`` before the first sweep, then from the
    previous sweep less ``overlap`` (clocks of other processes, commits that came late).
    Claims left behind (by a process that stopped, or an act that failed) are purged in
    bounded batches once their lease ended ``forget_after`` ago and their request is decided.
    """

    p: Platform
    channels: Sequence[ApprovalChannel]
    claims: RelayClaims
    owner: str = attrs.field(factory=process_owner)
    lease: timedelta = timedelta(minutes=2)
    lookback: timedelta = timedelta(days=1)
    overlap: timedelta = timedelta(minutes=5)
    page_size: int = 100
    since: datetime | None = None
    # Refusals logged already (approval, channel, message): each is said once, not per sweep.
    told: set[tuple[str, str, str]] = attrs.field(factory=set, repr=False)
    forget_after: timedelta = timedelta(days=1)
    purge: Purge = attrs.field(init=False, repr=False, default=attrs.Factory(
        lambda self: Purge(self._purge_claims, self.p.clock, CLAIM_PURGE_BATCH),
        takes_self=True))

    async def sweep(self) -> None:
        started = self.p.clock.now()
        since = self.since or started - self.lookback
        pending = await self._approvals(ApprovalFilter(statuses=(ApprovalStatus.PENDING,)))
        # Refusals are remembered while their request is pending only: the set stays bounded.
        open_ids = {approval.id for approval, _ in pending}
        self.told = {told for told in self.told if told[0] in open_ids}
        for approval, run in pending:
            for channel in self.channels:
                if not channel_state(approval, channel.name):
                    await self._claimed(channel, approval, run, "", self._show)
        for approval, run in await self._approvals(
                ApprovalFilter(statuses=DECIDED, decided_since=since)):
            for channel in self.channels:
                if channel_state(approval, channel.name) == ANNOUNCED:
                    await self._claimed(channel, approval, run, ANNOUNCED, self._conclude)
        self.since = max(since, started - self.overlap)
        await self.purge()

    async def _purge_claims(self) -> int:
        return await self.claims.purge(self.p.clock.now() - self.forget_after, CLAIM_PURGE_BATCH)

    async def _approvals(self, flt: ApprovalFilter) -> list[tuple[Approval, Run]]:
        found: list[tuple[Approval, Run]] = []
        cursor: str | None = None
        async with self.p.uow() as uow:
            while True:
                page = await uow.approvals.list(flt, limit=self.page_size, cursor=cursor)
                for approval in page.items:
                    found.append((approval, await uow.runs.get(approval.run_id)))
                cursor = page.next_cursor
                if cursor is None:
                    return found

    async def _claimed(
        self, channel: ApprovalChannel, approval: Approval, run: Run, state: str,
        act: Callable[[ApprovalChannel, Approval, Run, ChatClaim], Awaitable[bool]],
    ) -> None:
        """``act`` under this process's claim, if the request is still in ``state`` there."""
        now = self.p.clock.now()
        claim = await self.claims.claim(approval.id, channel.name, self.owner, now=now,
                                        until=now + self.lease)
        if claim is None:
            return  # another approver process is at it
        # Read again under the claim: whoever held it before may have recorded meanwhile.
        async with self.p.uow() as uow:
            fresh = await uow.approvals.get(approval.id)
        current = channel_state(fresh, channel.name)
        if current != state or (not state and fresh.status is not ApprovalStatus.PENDING):
            await self.claims.release(approval.id, channel.name, self.owner)
            return
        if await act(channel, fresh, run, claim):
            await self.claims.release(approval.id, channel.name, self.owner)
        # Otherwise the claim stays until it ends: retries here go on from what this
        # process remembers, and no other process posts what may have been posted.

    async def _show(
        self, channel: ApprovalChannel, approval: Approval, run: Run, claim: ChatClaim
    ) -> bool:
        try:
            refs = await channel.announce(approval, run, recover=claim.taken_over)
        except Unavailable as exc:
            log.warning("%s could not show approval %s: %s", channel.name, approval.id,
                        exc.message)
            return False
        except Invalid as exc:  # the chat's configuration: retried, but said once
            if (approval.id, channel.name, exc.message) not in self.told:
                self.told.add((approval.id, channel.name, exc.message))
                log.error("%s could not show approval %s: %s", channel.name, approval.id,
                          exc.message)
            return False
        except Exception:
            log.exception("%s could not show approval %s", channel.name, approval.id)
            return False
        return await self._note(approval.id, channel.name, ANNOUNCED, refs)

    async def _conclude(
        self, channel: ApprovalChannel, approval: Approval, run: Run, claim: ChatClaim
    ) -> bool:
        try:
            await channel.conclude(approval, run, channel_refs(approval, channel.name))
        except Unavailable as exc:
            log.warning("%s could not conclude approval %s: %s", channel.name, approval.id,
                        exc.message)
            return False
        except Exception:
            log.exception("%s could not conclude approval %s", channel.name, approval.id)
            return False
        return await self._note(approval.id, channel.name, CONCLUDED)

    async def _note(self, approval_id: str, channel: str, state: str,
                    refs: Mapping[str, str] | None = None) -> bool:
        """Record on the stored request (read again: it may have changed meanwhile)."""
        for _ in range(3):
            try:
                async with self.p.uow() as uow:
                    fresh = await uow.approvals.get(approval_id)
                    await uow.approvals.update(with_channel(fresh, channel, state, refs),
                                               expected=fresh.status)
                    await uow.commit()
                return True
            except Conflict:
                continue  # decided in between: read it again
        log.warning("could not record that %s %s approval %s", channel, state, approval_id)
        return False


def telegram_chats(approval: Approval, run: Run) -> Sequence[int]:
    """The Telegram chats an approval's policy names."""
    return [chat for target in approval.policy.telegram for chat in target.chat_ids]


def slack_channels(approval: Approval, run: Run) -> Sequence[str]:
    """The Slack channels an approval's policy names: ids, and names as ``#name``."""
    return [c for target in approval.policy.slack
            for c in (*target.channel_ids, *(f"#{name}" for name in target.channel_names))]


def slack_routes(interactions: SlackInteractions) -> list[Route]:
    """The Slack request URLs: interactivity (buttons, modals) and the /opsicle command."""
    return [
        Route("/slack/interactions", interactions.endpoint, methods=["POST"]),
        Route("/slack/commands", interactions.command_endpoint, methods=["POST"]),
    ]


TELEGRAM_POLL_SECONDS = 25
RELAY_SECONDS = 3.0


@asynccontextmanager
async def approver_role(settings: Settings) -> AsyncIterator[Role]:
    """The approver: the chats of ``approval_chats`` on the platform's stores, with /healthz,
    /readyz and /metrics."""
    from entrypoints.bootstrap import Role, _embedded_stores
    from entrypoints.http.common import build_app

    stop = asyncio.Event()
    async with (
        _embedded_stores(settings) as (platform, checks, engine, _),
        approval_chats(settings, platform, engine, stop) as routes,
    ):
        yield Role("approver", build_app("approver", routes, checks), stop)


@asynccontextmanager
async def approval_chats(
    settings: Settings, platform: Platform, engine: AsyncEngine, stop: asyncio.Event
) -> AsyncIterator[list[Route]]:
    """Telegram and Slack approvals from settings, until ``stop`` is set or this ends.

    Telegram runs when ``telegram-bot-token`` is set (the update poller); Slack posts when
    ``slack-bot-token`` is, and takes interactions over Socket Mode when ``slack-app-token``
    is and at the request URLs when ``slack-signing-secret`` is (yields those routes, to
    serve). The relay shows and concludes requests, claiming each in the store first."""
    from adapters.slack.socket_mode import SlackSocketMode
    from adapters.slack.web import SlackChannel, SlackWeb
    from adapters.sql.chat_links import sql_chat_links
    from adapters.sql.relay_claims import sql_relay_claims
    from adapters.telegram.bot import TelegramBot, TelegramChannel, TelegramPoller
    from entrypoints.loops import service_loop, stop_tasks

    tasks: list[asyncio.Task[None]] = []
    async with AsyncExitStack() as stack:
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
        elif settings["slack-app-token"] or settings["slack-signing-secret"]:
            log.warning("Slack is off: slack-app-token or slack-signing-secret is set but "
                        "slack-bot-token is not")
        # The chats are driven by the relay only: it shows requests made by any process and
        # concludes those decided anywhere, recording both on the request.
        relay = ChatRelay(platform, channels, sql_relay_claims(engine))
        decided = asyncio.Event()
        desk = ChatDesk(platform, links)

        async def answer(chat_answer: ChatAnswer) -> AnswerResult:
            result = await desk.answer(chat_answer)
            if result.status is AnswerStatus.DECIDED:
                decided.set()  # conclude in the chats now, not at the next sweep
            return result

        routes: list[Route] = []
        if web is not None:
            interactions = SlackInteractions(
                web, answer, signing_secret=str(settings["slack-signing-secret"] or ""),
                clock=platform.clock, commands=desk.command)
            if settings["slack-signing-secret"]:
                routes += slack_routes(interactions)
            if settings["slack-app-token"]:
                socket = SlackSocketMode(web, str(settings["slack-app-token"]), interactions)
                tasks.append(asyncio.create_task(service_loop(
                    "slack socket mode", socket.run_once, stop=stop, clock=platform.clock,
                    interval=0.0)))
        if channels:
            tasks.append(asyncio.create_task(service_loop(
                "approval chats", relay.sweep, stop=stop, clock=platform.clock,
                interval=RELAY_SECONDS, wake=decided)))
        if bot is not None:
            poller = TelegramPoller(bot, answer, clock=platform.clock,
                                    poll_timeout=TELEGRAM_POLL_SECONDS, commands=desk.command)
            tasks.append(asyncio.create_task(service_loop(
                "telegram updates", poller.poll_once, stop=stop, clock=platform.clock,
                interval=0.0)))
        try:
            yield routes
        finally:
            stop.set()
            # A long poll in flight is cut short: its updates come again on the next start.
            await stop_tasks(tasks, grace=1.0)
