"""Chat identities (a Telegram user, a Slack member) linked to the Opsicle user they are."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import attrs


class ChatPlatform(StrEnum):
    TELEGRAM = "telegram"
    SLACK = "slack"


@attrs.frozen
class ChatLink:
    """``chat_user_id`` on ``platform`` answers as ``user_id``; one link per chat identity."""

    platform: ChatPlatform
    chat_user_id: str
    user_id: str
    linked_at: datetime
    chat_username: str = ""
