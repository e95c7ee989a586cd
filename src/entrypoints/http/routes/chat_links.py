"""Chat identity linking: a single-use code for the caller to send the Telegram or Slack bot."""

from __future__ import annotations

from adapters.http.schemas.chat_links import LinkCodeInfo
from domain.chat_links import ChatPlatform
from domain.errors import FieldError, Invalid
from domain.services.chat_links import issue_link_code
from domain.services.platform import Platform
from entrypoints.http.api import Api, Call

INSTRUCTIONS = {
    ChatPlatform.TELEGRAM: "send /link {code} to the Opsicle bot in Telegram",
    ChatPlatform.SLACK: "type /opsicle link {code} in Slack",
}


def register(api: Api, p: Platform) -> None:
    @api.endpoint(
        "POST",
        "/api/v1/users/me/chat-links/{platform}/code",
        summary="A single-use code that links a Telegram or Slack identity to me",
        tag="accounts",
        response=LinkCodeInfo,
        status=201,
    )
    async def link_code(call: Call) -> LinkCodeInfo:
        try:
            platform = ChatPlatform(call.path["platform"])
        except ValueError:
            raise Invalid("chats that can be linked: telegram, slack",
                          errors=(FieldError("platform", "expected telegram or slack"),)) from None
        issued = await issue_link_code(p, call.caller, platform)
        return LinkCodeInfo(
            platform=platform.value,
            code=issued.code,
            expires_at=issued.expires_at,
            instructions=INSTRUCTIONS[platform].format(code=issued.code),
        )
