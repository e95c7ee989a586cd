"""Chat identity links on the SQL store: one row per (platform, chat user id)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import tables as t
from adapters.sql.engine import connect, store_name, translate_errors
from domain.chat_links import ChatLink, ChatPlatform
from domain.errors import NotFound
from domain.ports import ChatLinkRepository


class SqlChatLinkRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._store = store_name(engine.url)

    @asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        with translate_errors(self._store):
            async with connect(self._engine, write=write) as conn:
                yield conn

    async def save(self, link: ChatLink) -> None:
        c = t.chat_links.c
        async with self._connect(write=True) as conn:
            # Delete then insert in one transaction: a portable upsert on both SQLite and MySQL.
            await conn.execute(sa.delete(t.chat_links).where(
                c.platform == link.platform.value, c.chat_user_id == link.chat_user_id))
            await conn.execute(sa.insert(t.chat_links).values(
                platform=link.platform.value, chat_user_id=link.chat_user_id,
                user_id=link.user_id, chat_username=link.chat_username,
                linked_at=link.linked_at))
            await conn.commit()

    async def get(self, platform: ChatPlatform, chat_user_id: str) -> ChatLink:
        c = t.chat_links.c
        async with self._connect() as conn:
            row = (await conn.execute(sa.select(t.chat_links).where(
                c.platform == platform.value, c.chat_user_id == chat_user_id))).mappings().first()
        if row is None:
            raise NotFound(f"{platform} user {chat_user_id} is not linked")
        return _link(row)

    async def of_user(self, user_id: str) -> list[ChatLink]:
        c = t.chat_links.c
        async with self._connect() as conn:
            rows = (await conn.execute(sa.select(t.chat_links).where(c.user_id == user_id)
                                       .order_by(c.platform, c.chat_user_id))).mappings().all()
        return [_link(r) for r in rows]

    async def remove(self, platform: ChatPlatform, chat_user_id: str) -> None:
        c = t.chat_links.c
        async with self._connect(write=True) as conn:
            await conn.execute(sa.delete(t.chat_links).where(
                c.platform == platform.value, c.chat_user_id == chat_user_id))
            await conn.commit()


def _link(row: Any) -> ChatLink:
    return ChatLink(
        platform=ChatPlatform(row["platform"]), chat_user_id=row["chat_user_id"],
        user_id=row["user_id"], linked_at=row["linked_at"],
        chat_username=row["chat_username"],
    )


def sql_chat_links(engine: AsyncEngine) -> ChatLinkRepository:
    return SqlChatLinkRepository(engine)
