"""A Telegram Bot API stand-in: the methods Opsicle uses, checked the way Telegram checks them.

Requests go to ``POST /bot<token>/<method>`` with a JSON body; a wrong token gets 401, an
unknown method 404, a missing or malformed field 400 with Telegram's description. Tests act
as people with ``press`` (an inline button) and ``reply`` (a message answering another).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "Opsicle", "username": "opsicle_bot"}


class TelegramError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@attrs.define
class Message:
    chat_id: int
    message_id: int
    text: str
    sender: dict[str, Any]
    reply_markup: dict[str, Any] | None = None
    reply_to: int | None = None
    deleted: bool = False

    def wire(self, store: TelegramStandIn) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": {"id": self.chat_id, "type": "group" if self.chat_id < 0 else "private"},
            "date": 1_700_000_000,
            "text": self.text,
        }
        if self.reply_markup is not None:
            data["reply_markup"] = self.reply_markup
        if self.reply_to is not None:
            data["reply_to_message"] = store.messages[(self.chat_id, self.reply_to)].wire(store)
        return data


class TelegramStandIn:
    """The Bot API for one bot token and a set of chats that exist."""

    def __init__(self, token: str, chats: tuple[int, ...]) -> None:
        self.token = token
        self.chats = set(chats)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, str]] = []
        self.messages: dict[tuple[int, int], Message] = {}
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self._pending_queries: set[str] = set()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(100)
        self._message_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._new_update = asyncio.Condition()
        route = Route("/bot{token}/{method}", self._endpoint, methods=["POST"])
        self.app = Starlette(routes=[route])

    # ------------------------------------------------------------------ what tests look at

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    def visible(self, chat_id: int) -> list[Message]:
        return [m for (c, _), m in sorted(self.messages.items()) if c == chat_id and not m.deleted]

    # ------------------------------------------------------------------ people acting

    async def press(self, chat_id: int, message_id: int, user: dict[str, Any], data: str) -> str:
        """A person presses the inline button carrying ``data``; return the query's id."""
        message = self.messages[(chat_id, message_id)]
        rows = (message.reply_markup or {}).get("inline_keyboard", [])
        buttons = [b for row in rows for b in row]
        if message.deleted or not any(b.get("callback_data") == data for b in buttons):
            raise AssertionError(f"message {message_id} has no button {data!r} to press")
        query_id = str(next(self._query_ids))
        self._pending_queries.add(query_id)
        await self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "chat_instance": str(chat_id),
                    "message": message.wire(self),
                    "data": data,
                }
            }
        )
        return query_id

    async def reply(self, chat_id: int, to_message: int, user: dict[str, Any], text: str) -> int:
        """A person sends ``text`` as a reply to a message; return the new message's id."""
        if (chat_id, to_message) not in self.messages:
            raise AssertionError(f"no message {to_message} in chat {chat_id}")
        message = self._new_message(chat_id, text, user, reply_to=to_message)
        await self._push({"message": message.wire(self)})
        return message.message_id

    async def say(self, chat_id: int, user: dict[str, Any], text: str) -> int:
        message = self._new_message(chat_id, text, user)
        await self._push({"message": message.wire(self)})
        return message.message_id

    async def _push(self, update: dict[str, Any]) -> None:
        async with self._new_update:
            self._updates.append({"update_id": next(self._update_ids), **update})
            self._new_update.notify_all()

    def _new_message(
        self, chat_id: int, text: str, sender: dict[str, Any], **fields: Any
    ) -> Message:
        message = Message(chat_id, next(self._message_ids), text, sender, **fields)
        self.messages[(chat_id, message.message_id)] = message
        return message

    # ------------------------------------------------------------------ the API

    async def _endpoint(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        try:
            if token != self.token:
                raise TelegramError(401, "Unauthorized")
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                raise TelegramError(404, "Not Found")
            if not request.headers.get("content-type", "").startswith("application/json"):
                raise TelegramError(400, "Bad Request: expected a JSON body")
            try:
                params = json.loads(await request.body())
            except ValueError as exc:
                raise TelegramError(400, "Bad Request: can't parse JSON") from exc
            if not isinstance(params, dict):
                raise TelegramError(400, "Bad Request: expected an object")
            self.calls.append((method, params))
            result = await handler(params)
        except TelegramError as exc:
            self.refused.append((method, exc.description))
            body = {"ok": False, "error_code": exc.status, "description": exc.description}
            return JSONResponse(body, status_code=exc.status)
        return JSONResponse({"ok": True, "result": result})

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        timeout = params.get("timeout", 0)
        if not isinstance(timeout, int) or timeout < 0:
            raise TelegramError(400, "Bad Request: timeout must be a non-negative integer")
        if offset is not None:
            if not isinstance(offset, int):
                raise TelegramError(400, "Bad Request: offset must be an integer")
            # An offset confirms every update before it: Telegram forgets them.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        async with self._new_update:
            if not self._updates and timeout:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait(), timeout)
            return list(self._updates)

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat(params, self.chats)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise TelegramError(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        if markup is not None:
            _check_markup(markup)
        reply_to = None
        if "reply_parameters" in params:
            reply = params["reply_parameters"]
            if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
                raise TelegramError(400, "Bad Request: invalid reply parameters")
            reply_to = reply["message_id"]
            if (chat_id, reply_to) not in self.messages and not reply.get(
                "allow_sending_without_reply"
            ):
                raise TelegramError(400, "Bad Request: message to be replied not found")
            if (chat_id, reply_to) not in self.messages:
                reply_to = None
        message = self._new_message(chat_id, text, BOT_USER, reply_markup=markup, reply_to=reply_to)
        return message.wire(self)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        query_id = params.get("callback_query_id")
        if query_id not in self._pending_queries:
            raise TelegramError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        text = params.get("text", "")
        if not isinstance(text, str) or len(text) > 200:
            raise TelegramError(400, "Bad Request: text of the answer is too long")
        self._pending_queries.discard(query_id)
        self.callback_answers[query_id] = params
        return True

    async def _m_deleteMessage(self, params: dict[str, Any]) -> bool:
        message = self._message(params, "delete")
        message.deleted = True
        return True

    async def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message(params, "edit")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        markup = params.get("reply_markup")
        if markup is not None:
            _check_markup(markup)
            if "force_reply" in markup:
                raise TelegramError(400, "Bad Request: inline keyboard expected")
        if text == message.text and markup == message.reply_markup:
            raise TelegramError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        if message.sender != BOT_USER:
            raise TelegramError(400, "Bad Request: message can't be edited")
        message.text = text
        message.reply_markup = markup  # no markup in the edit removes the buttons
        return message.wire(self)

    def _message(self, params: dict[str, Any], verb: str) -> Message:
        chat_id = _chat(params, self.chats)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise TelegramError(400, "Bad Request: message_id is required")
        message = self.messages.get((chat_id, message_id))
        if message is None or message.deleted:
            raise TelegramError(400, f"Bad Request: message to {verb} not found")
        return message


def _chat(params: dict[str, Any], chats: set[int]) -> int:
    chat_id = params.get("chat_id")
    if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
        chat_id = int(chat_id)
    if not isinstance(chat_id, int):
        raise TelegramError(400, "Bad Request: chat_id is empty")
    if chat_id not in chats:
        raise TelegramError(400, "Bad Request: chat not found")
    return chat_id


def _check_markup(markup: object) -> None:
    if not isinstance(markup, dict):
        raise TelegramError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise TelegramError(400, 'Bad Request: field "inline_keyboard" must be an Array')
        for button in (b for r in rows for b in r):
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise TelegramError(400, 'Bad Request: can\'t find field "text"')
            data = button.get("callback_data")
            if data is None and "url" not in button:
                raise TelegramError(400, "Bad Request: button has no action")
            if data is not None and not (1 <= len(str(data).encode()) <= 64):
                raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
        return
    if "force_reply" in markup:
        if markup["force_reply"] is not True:
            raise TelegramError(400, "Bad Request: force_reply must be true")
        placeholder = markup.get("input_field_placeholder", "")
        if not isinstance(placeholder, str) or len(placeholder) > 64:
            raise TelegramError(400, "Bad Request: input field placeholder is too long")
        return
    raise TelegramError(400, "Bad Request: unsupported reply markup")
