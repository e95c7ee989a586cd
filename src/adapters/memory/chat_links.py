"""Chat identity links in a dict, for tests and in-memory platforms."""

from __future__ import annotations

from domain.chat_links import ChatLink, ChatPlatform
from domain.errors import NotFound
from domain.ports import ChatLinkRepository


class InMemoryChatLinkRepository:
    def __init__(self) -> None:
        self._links: dict[tuple[ChatPlatform, str], ChatLink] = {}

    async def save(self, link: ChatLink) -> None:
        self._links[(link.platform, link.chat_user_id)] = link

    async def get(self, platform: ChatPlatform, chat_user_id: str) -> ChatLink:
        try:
            return self._links[(platform, chat_user_id)]
        except KeyError:
            raise NotFound(f"{platform} user {chat_user_id} is not linked") from None

    async def of_user(self, user_id: str) -> list[ChatLink]:
        return sorted(
            (link for link in self._links.values() if link.user_id == user_id),
            key=lambda link: (link.platform.value, link.chat_user_id),
        )

    async def remove(self, platform: ChatPlatform, chat_user_id: str) -> None:
        self._links.pop((platform, chat_user_id), None)


def in_memory_chat_links() -> ChatLinkRepository:
    return InMemoryChatLinkRepository()
