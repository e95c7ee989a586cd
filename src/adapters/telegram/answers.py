"""What a chat button press or code reply means to Opsicle, and what the core answers back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum

import attrs

from domain.approvals import Approval, Verdict
from domain.automations import Run
from domain.errors import OpsicleError, Unavailable


@attrs.frozen
class ChatAnswer:
    """One person's answer in a chat: who, to which approval, which verdict, with which code.

    ``user_id`` is the chat platform's identity (a Telegram user id, a Slack member id); the
    core maps it to an Opsicle user. ``chat`` and ``message`` say where it was answered, so the
    core can check the chat is one the approval was asked in.
    """

    approval_id: str
    channel: str
    user_id: str
    username: str
    verdict: Verdict
    code: str | None
    chat: str
    message: str


class AnswerStatus(StrEnum):
    RECORDED = "recorded"  # counted; the approval still waits for others
    DECIDED = "decided"  # this answer decided the approval
    CODE_REQUIRED = "code_required"  # ask this person for their code, then answer again
    REFUSED = "refused"  # not counted; ``message`` says why


@attrs.frozen
class AnswerResult:
    status: AnswerStatus
    message: str = ""


@attrs.frozen
class ChatCommand:
    """A command typed in a chat (``/link CODE``): who sent it, where, and its text after the
    command word."""

    channel: str
    user_id: str
    username: str
    chat: str
    name: str
    text: str


CommandHandler = Callable[[ChatCommand], Awaitable[str]]
"""Runs a chat command; returns the reply to show its sender (errors as for answers)."""


async def run_command(handler: CommandHandler, command: ChatCommand) -> str:
    """Call ``handler``; domain errors become a reply with their message."""
    try:
        return await handler(command)
    except Unavailable as exc:
        return f"Opsicle cannot do that now: {exc}"
    except OpsicleError as exc:
        return f"⛔ {exc}"


AnswerHandler = Callable[[ChatAnswer], Awaitable[AnswerResult]]
"""The core's respond use case as the chat adapters see it.

It may also raise an ``OpsicleError``: the adapters answer the error's message in the chat
(a refusal), except ``Unavailable``, which asks the person to try again.
"""


async def hand_over(handler: AnswerHandler, answer: ChatAnswer) -> AnswerResult:
    """Call ``handler``; domain errors become refusals with their message."""
    try:
        return await handler(answer)
    except Unavailable as exc:
        return AnswerResult(AnswerStatus.REFUSED, f"Opsicle cannot record answers now: {exc}")
    except OpsicleError as exc:
        return AnswerResult(AnswerStatus.REFUSED, str(exc))


OUTCOME = {
    "approved": "✅ Approved",
    "rejected": "❌ Rejected",
    "expired": "⌛ Expired",
    "pending": "⏳ Pending",
}


def describe(approval: Approval, run: Run) -> list[tuple[str, str]]:
    """The facts a request shows: template, version, variables (secrets already ``***``), who
    asked and why. ``Run.variables`` holds secrets masked, so nothing here can leak one."""
    template = run.name or run.template_id or run.id
    version = "" if run.template_version is None else f"v{run.template_version}"
    variables = ", ".join(f"{k}={_show(v)}" for k, v in sorted(run.variables.items()))
    rows = [
        ("Template", f"{template} {version}".strip()),
        ("Run", run.id),
        ("Requested by", approval.requested_by),
        ("Variables", variables or "none"),
    ]
    if run.comment:
        rows.append(("Comment", run.comment))
    rows.append(("Approvals needed", str(approval.quorum)))
    rows.append(("Expires", approval.expires_at.strftime("%Y-%m-%d %H:%M UTC")))
    return rows


def outcome_line(approval: Approval) -> str:
    who = sorted({r.responder_id for r in approval.responses})
    by = f" by {', '.join(who)}" if who else ""
    return f"{OUTCOME.get(str(approval.status), str(approval.status))}{by}"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
