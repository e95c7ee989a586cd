"""Contract of the chat identity links, in memory and on every SQL store."""

from __future__ import annotations

import attrs
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.memory.chat_links import in_memory_chat_links
from adapters.sql.chat_links import sql_chat_links
from domain.chat_links import ChatLink, ChatPlatform
from domain.errors import NotFound
from domain.ports import ChatLinkRepository, UnitOfWorkFactory
from tests.contract import builders as b
from tests.contract.builders import at, uid


@pytest.fixture
def links(sql_engine: AsyncEngine | None) -> ChatLinkRepository:
    return in_memory_chat_links() if sql_engine is None else sql_chat_links(sql_engine)


async def _user(uow_factory: UnitOfWorkFactory) -> str:
    user = b.user()
    async with uow_factory() as uow:
        await uow.users.add(user)
        await uow.commit()
    return user.id


async def test_a_link_is_saved_found_and_listed(
    links: ChatLinkRepository, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(uow_factory)
    tg = ChatLink(ChatPlatform.TELEGRAM, uid("tg"), user_id, at(0), "@alice")
    slack = ChatLink(ChatPlatform.SLACK, uid("U"), user_id, at(1))
    await links.save(tg)
    await links.save(slack)
    assert await links.get(ChatPlatform.TELEGRAM, tg.chat_user_id) == tg
    assert await links.of_user(user_id) == [slack, tg]
    with pytest.raises(NotFound):
        await links.get(ChatPlatform.SLACK, tg.chat_user_id)  # same id, other platform


async def test_relinking_a_chat_identity_moves_it_and_remove_forgets_it(
    links: ChatLinkRepository, uow_factory: UnitOfWorkFactory
) -> None:
    first, second = await _user(uow_factory), await _user(uow_factory)
    link = ChatLink(ChatPlatform.TELEGRAM, uid("tg"), first, at(0), "@bob")
    await links.save(link)
    moved = attrs.evolve(link, user_id=second, linked_at=at(5))
    await links.save(moved)
    assert await links.get(ChatPlatform.TELEGRAM, link.chat_user_id) == moved
    assert await links.of_user(first) == []
    await links.remove(ChatPlatform.TELEGRAM, link.chat_user_id)
    await links.remove(ChatPlatform.TELEGRAM, link.chat_user_id)  # nothing left: no error
    with pytest.raises(NotFound):
        await links.get(ChatPlatform.TELEGRAM, link.chat_user_id)
