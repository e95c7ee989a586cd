"""The approver role: chat answers become approvals of linked users; chat channels; linking."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
from starlette.routing import Route

from adapters.slack.web import SlackInteractions
from adapters.telegram.answers import AnswerResult, AnswerStatus, ChatAnswer, ChatCommand
from domain.approvals import Approval, ApprovalStatus, Verdict
from domain.audit import Outcome
from domain.automations import Run
from domain.chat_links import ChatPlatform
from domain.errors import Conflict, Invalid, NotFound, OpsicleError, Unavailable
from domain.ports import ChatLinkRepository
from domain.services import approvals
from domain.services.chat_links import link_chat
from domain.services.platform import Caller, Platform, record

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
