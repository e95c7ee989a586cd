"""The SDK for chat identity linking."""

from __future__ import annotations

from typing import cast

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.chat_links import LinkCodeInfo

API = "/api/v1"


class ChatLinksClient:
    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def link_code(self, platform: str) -> LinkCodeInfo:
        """A single-use code to send the bot of ``platform`` (telegram or slack)."""
        return cast(
            LinkCodeInfo,
            await self.client.call(
                "POST", f"{API}/users/me/chat-links/{platform}/code", response=LinkCodeInfo
            ),
        )
