"""Telegram Bot API over httpx: approval messages with buttons, code prompts, the update poller."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import attrs
import httpx

from adapters.telegram.answers import (
    AnswerHandler,
    AnswerResult,
    AnswerStatus,
    ChatAnswer,
    ChatCommand,
    CommandHandler,
    describe,
    hand_over,
    outcome_line,
    run_command,
)
from domain.approvals import Approval, Verdict
from domain.automations import Run
from domain.errors import Invalid, Unavailable
from domain.ports import ApprovalChannel, Clock

log = logging.getLogger("opsicle.telegram")

DEFAULT_BASE_URL = "https://api.telegram.org"
# The client only ever sees this stand-in for the token, so httpx's request log lines and
# any error that quotes a URL cannot show the real one; the transport swaps it in last.
_HIDDEN = "/botTOKEN/"
CALLBACK_PREFIX = "opsicle"
PROMPT_MARK = "🔓"
_CALLBACK_LIMIT = 64  # bytes, Telegram's limit for callback_data


class _TokenInPath(httpx.AsyncBaseTransport):
    """Puts the bot token into the request path on its way out, and nowhere else."""

    def __init__(self, inner: httpx.AsyncBaseTransport, token: str) -> None:
        self._inner = inner
        self._path = f"/bot{token}/".encode()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.replace(_HIDDEN.encode(), self._path, 1)
        real = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=path),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(real)

    async def aclose(self) -> None:
        await self._inner.aclose()


class TelegramBot:
    """The Bot API methods Opsicle uses; failures raise ``Unavailable`` or ``Invalid`` that
    name Telegram and never the token."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
    ) -> None:
        if not token or "/" in token:
            raise Invalid("a Telegram bot token looks like 123456:ABC-DEF…")
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=_TokenInPath(transport or httpx.AsyncHTTPTransport(), token),
            timeout=timeout,
        )

    async def __aenter__(self) -> TelegramBot:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, params: Mapping[str, Any], *, wait: float = 0.0) -> Any:
        """Call one Bot API method; return its ``result``. ``wait`` extends the read timeout
        for long polls."""
        timeout = httpx.Timeout(self._timeout, read=self._timeout + wait)
        try:
            reply = await self._http.post(f"{_HIDDEN}{method}", json=dict(params), timeout=timeout)
        except httpx.TransportError as exc:
            raise Unavailable(f"Telegram did not answer {method} ({type(exc).__name__})") from exc
        try:
            data = reply.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if reply.status_code == 200 and data.get("ok") is True:
            return data.get("result")
        description = str(data.get("description") or f"HTTP {reply.status_code}")
        if reply.status_code == 429:
            after = (data.get("parameters") or {}).get("retry_after", "?")
            raise Unavailable(f"Telegram asks to wait {after} s before {method}")
        if reply.status_code in (401, 404):
            raise Unavailable(f"Telegram refused the bot token ({description})")
        if reply.status_code == 400:
            raise Invalid(f"Telegram refused {method}: {description}", code="telegram_refused")
        raise Unavailable(f"Telegram could not {method} ({description})")

    async def get_updates(
        self,
        offset: int | None,
        timeout: int,  # noqa: ASYNC109 - the Bot API's long-poll parameter, in seconds
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "timeout": timeout,
            "allowed_updates": ["message", "callback_query"],
        }
        if offset is not None:
            params["offset"] = offset
        result = await self.call("getUpdates", params, wait=timeout)
        return [u for u in result or [] if isinstance(u, dict)]

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        reply_markup: Mapping[str, Any] | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if reply_markup is not None:
            params["reply_markup"] = dict(reply_markup)
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        message: dict[str, Any] = await self.call("sendMessage", params)
        return message

    async def answer_callback_query(
        self, callback_query_id: str, text: str = "", *, show_alert: bool = False
    ) -> None:
        params: dict[str, Any] = {"callback_query_id": callback_query_id}
        if text:
            params["text"] = text[:200]
            params["show_alert"] = show_alert
        await self.call("answerCallbackQuery", params)

    async def delete_message(self, chat_id: int, message_id: int) -> None:
        await self.call("deleteMessage", {"chat_id": chat_id, "message_id": message_id})

    async def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        reply_markup: Mapping[str, Any] | None = None,
    ) -> None:
        params: dict[str, Any] = {"chat_id": chat_id, "message_id": message_id, "text": text}
        if reply_markup is not None:
            params["reply_markup"] = dict(reply_markup)
        try:
            await self.call("editMessageText", params)
        except Invalid as exc:
            # Editing to the same text is not a failure for us.
            if "not modified" not in str(exc):
                raise


# ---------------------------------------------------------------- the approval channel

ChatsFor = Callable[[Approval, Run], Sequence[int]]


def callback_data(verdict: Verdict, approval_id: str) -> str:
    data = f"{CALLBACK_PREFIX}:{verdict}:{approval_id}"
    if len(data.encode()) > _CALLBACK_LIMIT:
        raise Invalid(f"approval id {approval_id!r} is too long for a Telegram button")
    return data


def parse_callback_data(data: str) -> tuple[Verdict, str] | None:
    prefix, _, rest = data.partition(":")
    verdict, _, approval_id = rest.partition(":")
    if prefix != CALLBACK_PREFIX or not approval_id or verdict not in set(Verdict):
        return None
    return Verdict(verdict), approval_id


def request_text(approval: Approval, run: Run) -> str:
    lines = ["⚠️ Approval requested", ""]
    lines += [f"{label}: {value}" for label, value in describe(approval, run)]
    lines += ["", f"Approval: {approval.id}"]
    return "\n".join(lines)


def keyboard(approval_id: str) -> dict[str, Any]:
    return {
        "inline_keyboard": [
            [
                {
                    "text": "✅ Approve",
                    "callback_data": callback_data(Verdict.APPROVE, approval_id),
                },
                {"text": "❌ Reject", "callback_data": callback_data(Verdict.REJECT, approval_id)},
            ]
        ]
    }


class TelegramChannel:
    """Posts approval requests to Telegram chats and edits them to the outcome.

    ``chats`` is a fixed list of chat ids or a function of the approval and run (the policy's
    chats). ``announce`` returns the messages it posted (chat id -> message id) and
    remembers them in this process; ``conclude`` edits those and the ``refs`` it is given.
    """

    name = "telegram"

    def __init__(self, bot: TelegramBot, chats: ChatsFor | Sequence[int]) -> None:
        self._bot = bot
        if callable(chats):
            self._chats: ChatsFor = chats
        else:
            fixed = tuple(chats)
            self._chats = lambda approval, run: fixed
        self.posted: dict[str, dict[int, int]] = {}

    def message_of(self, approval_id: str, chat_id: int) -> int | None:
        return self.posted.get(approval_id, {}).get(chat_id)

    async def announce(
        self, approval: Approval, run: Run, *, recover: bool = False
    ) -> Mapping[str, str]:
        # The Bot API cannot read a chat's history, so ``recover`` cannot find a message an
        # earlier process sent without recording it: that one stays in the chat.
        posted = self.posted.setdefault(approval.id, {})
        text = request_text(approval, run)
        markup = keyboard(approval.id)
        for chat in self._chats(approval, run):
            if chat in posted:  # announcing again after a partial failure posts only the rest
                continue
            message = await self._bot.send_message(chat, text, reply_markup=markup)
            posted[chat] = int(message["message_id"])
        return {str(chat): str(message_id) for chat, message_id in posted.items()}

    async def conclude(
        self, approval: Approval, run: Run, refs: Mapping[str, str] | None = None
    ) -> None:
        text = f"{request_text(approval, run)}\n\n{outcome_line(approval)}"
        messages = {int(chat): int(message_id) for chat, message_id in (refs or {}).items()
                    if chat.lstrip("-").isdigit() and message_id.isdigit()}
        messages.update(self.posted.pop(approval.id, {}))
        for chat, message_id in messages.items():
            # Without reply_markup the edit drops the buttons: nobody can answer any more.
            await self._bot.edit_message_text(chat, message_id, text)


def telegram_channel(bot: TelegramBot, chats: ChatsFor | Sequence[int]) -> ApprovalChannel:
    """The Telegram approval channel, typed as the port it implements."""
    return TelegramChannel(bot, chats)


# ---------------------------------------------------------------- the update poller


@attrs.frozen
class _Prompt:
    answer: ChatAnswer
    deadline: float


class TelegramPoller:
    """Long-polls updates and turns button presses and code replies into ``ChatAnswer``s.

    ``poll_once`` is one long poll: give it to the role's service loop. Answers go to
    ``handler`` (the core's respond use case); refusals are answered in the chat. A code reply
    is deleted from the chat before it is checked, whatever the outcome.
    """

    def __init__(
        self,
        bot: TelegramBot,
        handler: AnswerHandler,
        *,
        clock: Clock,
        poll_timeout: int = 25,
        code_wait: float = 120.0,
        commands: CommandHandler | None = None,
    ) -> None:
        self._bot = bot
        self._handler = handler
        self._commands = commands
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._code_wait = code_wait
        self.offset: int | None = None
        self.prompts: dict[tuple[int, int], _Prompt] = {}

    async def poll_once(self) -> int:
        """Fetch and handle one batch of updates; return how many there were."""
        updates = await self._bot.get_updates(self.offset, self._poll_timeout)
        for update in updates:
            # Acknowledged before handling: one update that cannot be handled must not come
            # back forever; the person presses the button again.
            self.offset = int(update["update_id"]) + 1
            try:
                if isinstance(update.get("callback_query"), dict):
                    await self._on_button(update["callback_query"])
                elif isinstance(update.get("message"), dict):
                    await self._on_message(update["message"])
            except (Unavailable, Invalid) as exc:
                log.warning("Telegram update %s not handled: %s", update.get("update_id"), exc)
        return len(updates)

    async def _on_button(self, query: dict[str, Any]) -> None:
        query_id = str(query["id"])
        message = query.get("message")
        parsed = parse_callback_data(str(query.get("data") or ""))
        if parsed is None or not isinstance(message, dict):
            await self._bot.answer_callback_query(query_id, "This button is not Opsicle's.")
            return
        verdict, approval_id = parsed
        user = query.get("from") or {}
        chat_id = int(message["chat"]["id"])
        message_id = int(message["message_id"])
        answer = ChatAnswer(
            approval_id=approval_id,
            channel="telegram",
            user_id=str(user.get("id", "")),
            username=_name(user),
            verdict=verdict,
            code=None,
            chat=str(chat_id),
            message=str(message_id),
        )
        result = await hand_over(self._handler, answer)
        if result.status is AnswerStatus.CODE_REQUIRED:
            await self._bot.answer_callback_query(query_id, "Reply with your code.")
            prompt = await self._bot.send_message(
                chat_id,
                f"{PROMPT_MARK} {_mention(user)}, reply to this message with your code to "
                f"{verdict} approval {approval_id}.",
                reply_markup={
                    "force_reply": True,
                    "selective": True,
                    "input_field_placeholder": "123456",
                },
                reply_to=message_id,
            )
            deadline = self._clock.monotonic() + self._code_wait
            self.prompts[(chat_id, int(prompt["message_id"]))] = _Prompt(answer, deadline)
            return
        await self._bot.answer_callback_query(
            query_id,
            result.message or _done(result),
            show_alert=result.status is AnswerStatus.REFUSED,
        )
        await self._tell(chat_id, message_id, answer, result)

    async def _on_message(self, message: dict[str, Any]) -> None:
        chat_id = int(message["chat"]["id"])
        user = message.get("from") or {}
        replied = message.get("reply_to_message")
        if not isinstance(replied, dict):
            await self._on_command(message)
            return  # otherwise the bot answers buttons and its own prompts, nothing else
        key = (chat_id, int(replied["message_id"]))
        prompt = self.prompts.get(key)
        if prompt is None:
            if str(replied.get("text") or "").startswith(PROMPT_MARK):
                # A reply to a prompt this process does not know (expired, or asked before a
                # restart): it may hold a code, so it goes, and the person starts again.
                await self._delete(chat_id, int(message["message_id"]))
                await self._bot.send_message(
                    chat_id,
                    f"⌛ {_mention(user)}, that prompt has expired; press the button again.",
                )
            return
        await self._delete(chat_id, int(message["message_id"]))
        if str(user.get("id", "")) != prompt.answer.user_id:
            await self._bot.send_message(
                chat_id, f"⛔ {_mention(user)}, that prompt is for {prompt.answer.username}."
            )
            return
        del self.prompts[key]
        await self._delete(chat_id, key[1])
        original = int(prompt.answer.message)
        if self._clock.monotonic() > prompt.deadline:
            await self._bot.send_message(
                chat_id,
                f"⌛ {_mention(user)}, the code prompt expired; press the button again.",
                reply_to=original,
            )
            return
        answer = attrs.evolve(prompt.answer, code=str(message.get("text") or "").strip())
        result = await hand_over(self._handler, answer)
        if result.status is AnswerStatus.CODE_REQUIRED:
            result = AnswerResult(AnswerStatus.REFUSED, "a code is required")
        await self._tell(chat_id, original, answer, result)

    async def _on_command(self, message: dict[str, Any]) -> None:
        """``/link CODE`` (or ``/link@bot CODE``) goes to the command handler."""
        text = str(message.get("text") or "").strip()
        word, _, rest = text.partition(" ")
        name = word.partition("@")[0].removeprefix("/")
        if self._commands is None or not word.startswith("/") or name != "link":
            return
        chat_id = int(message["chat"]["id"])
        user = message.get("from") or {}
        # The code is single-use, but it is still nobody else's business in a group chat.
        await self._delete(chat_id, int(message["message_id"]))
        command = ChatCommand(
            channel="telegram",
            user_id=str(user.get("id", "")),
            username=_name(user),
            chat=str(chat_id),
            name=name,
            text=rest.strip(),
        )
        reply = await run_command(self._commands, command)
        await self._bot.send_message(chat_id, f"{_mention(user)}: {reply}")

    async def _tell(
        self, chat_id: int, message_id: int, answer: ChatAnswer, result: AnswerResult
    ) -> None:
        if result.status is AnswerStatus.REFUSED:
            text = f"⛔ {answer.username}: {result.message or 'not accepted'}"
        elif result.message:
            text = f"{'👍' if answer.verdict is Verdict.APPROVE else '👎'} {result.message}"
        else:
            return  # a decision shows in the edited request (the channel's conclude)
        await self._bot.send_message(chat_id, text, reply_to=message_id)

    async def _delete(self, chat_id: int, message_id: int) -> None:
        try:
            await self._bot.delete_message(chat_id, message_id)
        except Invalid as exc:
            # In groups the bot needs the right to delete messages; say so where it is seen.
            log.warning("could not delete Telegram message %s in %s: %s", message_id, chat_id, exc)


def _name(user: Mapping[str, Any]) -> str:
    if user.get("username"):
        return f"@{user['username']}"
    return str(user.get("first_name") or user.get("id") or "someone")


def _mention(user: Mapping[str, Any]) -> str:
    return _name(user)


def _done(result: AnswerResult) -> str:
    return "Decided." if result.status is AnswerStatus.DECIDED else "Recorded."
