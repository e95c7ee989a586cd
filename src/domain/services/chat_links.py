"""Linking Telegram and Slack identities to Opsicle users through one-time codes."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from domain.audit import Outcome
from domain.chat_links import ChatLink, ChatPlatform
from domain.errors import FieldError, Invalid
from domain.ports import ChatLinkRepository
from domain.services.accounts import _use_code
from domain.services.authorization import user_of
from domain.services.platform import Caller, Platform, record
from domain.users import CodePurpose, OneTimeCode

LINK_CODE_SECONDS = 600
# 64 random bits: typed into a chat, but not guessable within the code's ten minutes.
LINK_CODE_CHARS = 16
PURPOSE = {
    ChatPlatform.TELEGRAM: CodePurpose.LINK_TELEGRAM,
    ChatPlatform.SLACK: CodePurpose.LINK_SLACK,
}


@attrs.frozen
class LinkCode:
    platform: ChatPlatform
    code: str
    expires_at: datetime


async def issue_link_code(p: Platform, caller: Caller, platform: ChatPlatform) -> LinkCode:
    """A short-lived single-use code the caller sends to the bot; earlier ones stop working."""
    user_id = user_of(caller)
    code = p.secrets.new_token("")[:LINK_CODE_CHARS]
    now = p.clock.now()
    expires = now + timedelta(seconds=LINK_CODE_SECONDS)
    async with p.uow() as uow:
        await uow.users.get(user_id)
        await uow.codes.retire(user_id, PURPOSE[platform], now)
        await uow.codes.add(OneTimeCode(
            id=p.ids.new_id(), user_id=user_id, purpose=PURPOSE[platform],
            code_hash=p.secrets.hash(code), created_at=now, expires_at=expires,
        ))
        await record(
            p, caller, "chat_link.code", "user", user_id, data={"platform": platform.value}, uow=uow
        )
        await uow.commit()
    return LinkCode(platform, code, expires)


async def link_chat(
    p: Platform,
    links: ChatLinkRepository,
    platform: ChatPlatform,
    chat_user_id: str,
    code: str,
    *,
    chat_username: str = "",
) -> ChatLink:
    """Link the chat identity that sent ``code`` to the user the code was issued to.

    Raises ``Invalid`` for an unknown, used or expired code (audited as a failure)."""
    actor = f"{platform.value}:{chat_user_id}"
    if not chat_user_id or not code.strip():
        raise Invalid("send the code from 'opsicle link' with the command",
                      errors=(FieldError("code", "is required"),))
    try:
        used = await _use_code(p, PURPOSE[platform], code.strip().lower())
    except Invalid:
        await record(p, Caller(), "chat_link.create", "chat_link", actor, actor=actor,
                     outcome=Outcome.FAILURE, data={"reason": "invalid_code"})
        raise
    link = ChatLink(platform, chat_user_id, used.user_id, p.clock.now(), chat_username[:255])
    await links.save(link)
    await record(p, Caller(user_id=used.user_id), "chat_link.create", "chat_link", actor,
                 data={"platform": platform.value, "chat_user": chat_user_id,
                       "chat_username": link.chat_username})
    return link
