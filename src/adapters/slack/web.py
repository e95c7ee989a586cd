"""Slack Web API over httpx, and the interactions request URL whose signatures it verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
from domain.errors import Invalid, Unauthenticated, Unavailable
from domain.ports import ApprovalChannel, Clock

log = logging.getLogger("opsicle.slack")

DEFAULT_BASE_URL = "https://slack.com/api"
ACTION_IDS = {"opsicle_approve": Verdict.APPROVE, "opsicle_reject": Verdict.REJECT}
CODE_VIEW_PREFIX = "approval_code_"
CODE_BLOCK = "code"
CODE_ACTION = "code"
MAX_AGE = 300  # seconds: Slack's advice for refusing replayed requests
_TOKEN_ERRORS = {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
                 "not_allowed_token_type"}


class SlackWeb:
    """The Web API methods Opsicle uses; failures raise ``Unavailable`` (Slack or the token)
    or ``Invalid`` (Slack refused the request), never showing the token."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"authorization": f"Bearer {token}"},
        )

    async def __aenter__(self) -> SlackWeb:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self, method: str, body: Mapping[str, Any], *, form: bool = False, token: str = ""
    ) -> dict[str, Any]:
        """Call one Web API method with a JSON body (``form``: form-encoded, as the reading
        methods take it); return the reply when ``ok``. ``token`` replaces the bot token."""
        headers = {"content-type": "application/json; charset=utf-8"}
        content = json.dumps(dict(body)).encode()
        if form:
            headers["content-type"] = "application/x-www-form-urlencoded"
            content = urlencode({k: str(v) for k, v in body.items()}).encode()
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            reply = await self._http.post(f"/{method}", content=content, headers=headers)
        except httpx.TransportError as exc:
            raise Unavailable(f"Slack did not answer {method} ({type(exc).__name__})") from exc
        if reply.status_code == 429:
            after = reply.headers.get("retry-after", "?")
            raise Unavailable(f"Slack asks to wait {after} s before {method}")
        try:
            data = reply.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict) or reply.status_code >= 500:
            raise Unavailable(f"Slack could not {method} (HTTP {reply.status_code})")
        if data.get("ok") is True:
            return data
        error = str(data.get("error") or f"HTTP {reply.status_code}")
        if error in _TOKEN_ERRORS:
            which = "app-level token" if token else "bot token"
            raise Unavailable(f"Slack refused the {which} ({error})")
        if error == "ratelimited":
            raise Unavailable(f"Slack asks to slow down before {method}")
        raise Invalid(f"Slack refused {method}: {error}", code=f"slack_{error}")

    async def post_message(
        self,
        channel: str,
        text: str,
        *,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Post a message; return its channel id and ``ts`` (the message's id)."""
        body: dict[str, Any] = {"channel": channel, "text": text}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if blocks is not None:
            body["blocks"] = [dict(b) for b in blocks]
        if thread_ts is not None:
            body["thread_ts"] = thread_ts
        data = await self.call("chat.postMessage", body)
        return str(data["channel"]), str(data["ts"])

    async def update(
        self, channel: str, ts: str, text: str, *, blocks: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        body = {"channel": channel, "ts": ts, "text": text, "blocks": [dict(b) for b in blocks]}
        await self.call("chat.update", body)

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None:
        await self.call("chat.postEphemeral", {"channel": channel, "user": user, "text": text})

    async def open_view(self, trigger_id: str, view: Mapping[str, Any]) -> str:
        data = await self.call("views.open", {"trigger_id": trigger_id, "view": dict(view)})
        return str((data.get("view") or {}).get("id", ""))

    async def conversations(self) -> list[dict[str, Any]]:
        """Every channel the bot can see (conversations.list, all pages)."""
        body = {"types": "public_channel,private_channel", "exclude_archived": "true",
                "limit": 200}
        return await self._pages("conversations.list", body, "channels")

    async def history(self, channel: str, *, oldest: float, limit: int = 200
                      ) -> list[dict[str, Any]]:
        """The channel's messages since ``oldest`` (a Unix time) with their metadata."""
        body = {"channel": channel, "oldest": f"{oldest:.6f}", "include_all_metadata": "true",
                "limit": 100}
        return await self._pages("conversations.history", body, "messages", most=limit)

    async def _pages(self, method: str, body: Mapping[str, Any], key: str, *,
                     most: int | None = None) -> list[dict[str, Any]]:
        """The ``key`` items of every page of a cursor-paginated reading method."""
        found: list[dict[str, Any]] = []
        cursor = ""
        while most is None or len(found) < most:
            data = await self.call(method, {**body, **({"cursor": cursor} if cursor else {})},
                                   form=True)
            found += [item for item in data.get(key) or [] if isinstance(item, dict)]
            cursor = str((data.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        return found

    async def socket_url(self, app_token: str) -> str:
        """A Socket Mode WebSocket URL (apps.connections.open with the app-level token)."""
        data = await self.call("apps.connections.open", {}, form=True, token=app_token)
        url = str(data.get("url") or "")
        if not url.startswith(("wss://", "ws://")):
            raise Unavailable("Slack gave no Socket Mode URL")
        return url


# ---------------------------------------------------------------- messages and modals


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def request_blocks(approval: Approval, run: Run, *, buttons: bool = True) -> list[dict[str, Any]]:
    facts = "\n".join(f"*{label}:* {_escape(value)}" for label, value in describe(approval, run))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": ":warning: *Approval requested*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Approval {approval.id}"}]},
    ]
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"approval_{approval.id}"[:255],
                "elements": [
                    {
                        "type": "button",
                        "action_id": "opsicle_approve",
                        "text": _plain("Approve"),
                        "style": "primary",
                        "value": approval.id,
                    },
                    {
                        "type": "button",
                        "action_id": "opsicle_reject",
                        "text": _plain("Reject"),
                        "style": "danger",
                        "value": approval.id,
                    },
                ],
            }
        )
    return blocks


def code_view(answer: ChatAnswer) -> dict[str, Any]:
    """The modal asking ``answer``'s person for their code; its metadata says where to go on."""
    metadata = {
        "channel": answer.chat,
        "ts": answer.message,
        "approval": answer.approval_id,
        "user": answer.user_id,
        "verdict": str(answer.verdict),
    }
    return {
        "type": "modal",
        "callback_id": f"{CODE_VIEW_PREFIX}{answer.approval_id}",
        "title": _plain("Approval code"),
        "submit": _plain("Approve" if answer.verdict is Verdict.APPROVE else "Reject"),
        "close": _plain("Cancel"),
        "private_metadata": json.dumps(metadata, separators=(",", ":")),
        "blocks": [
            {
                "type": "input",
                "block_id": CODE_BLOCK,
                "label": _plain("Code from your authenticator app"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": CODE_ACTION,
                    "min_length": 6,
                    "max_length": 8,
                    "placeholder": _plain("123456"),
                },
            }
        ],
    }


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


ChannelsFor = Callable[[Approval, Run], Sequence[str]]
METADATA_EVENT = "opsicle_approval_request"
# chat.postMessage errors that mean the channel is wrong or the bot is not in it.
_CHANNEL_ERRORS = {"channel_not_found", "not_in_channel", "is_archived"}


class SlackDirectory:
    """Channel names (``#ops`` or ``ops``) to ids through conversations.list, cached for
    ``ttl`` seconds and read again on an unknown name at most every ``retry`` seconds.
    Ids (``C…``, ``G…``) pass through unchanged."""

    def __init__(self, web: SlackWeb, *, ttl: float = 300.0, retry: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._web = web
        self._ttl = ttl
        self._retry = retry
        self._monotonic = monotonic
        self._channels: dict[str, tuple[str, bool]] = {}  # name -> (id, the bot is a member)
        self._read_at: float | None = None
        # When Slack last refused the listing itself (a missing scope), and what it said.
        self._refused: tuple[float, str, str] | None = None

    async def resolve(self, channel: str) -> str:
        """The channel's id; raises ``Invalid`` naming it when it does not exist or the bot
        is not in it, ``Unavailable`` when Slack does not answer."""
        if not channel.startswith("#") and _looks_like_id(channel):
            return channel
        name = channel.removeprefix("#").lower()
        now = self._monotonic()
        stale = self._read_at is None or now - self._read_at >= self._ttl
        if self._refused is not None and now - self._refused[0] < self._retry:
            # Asking again for every channel on every sweep would be refused the same way.
            raise Invalid(self._refused[1], code=self._refused[2])
        if stale or (name not in self._channels and now - (self._read_at or 0) >= self._retry):
            try:
                await self._read(now)
            except Invalid as exc:
                self._refused = (now, exc.message, exc.code)
                raise
            self._refused = None
        found = self._channels.get(name)
        if found is None:
            raise Invalid(f"Slack channel #{name} does not exist (or is private and the "
                          "Opsicle bot is not in it)", code="slack_channel_unknown")
        channel_id, member = found
        if not member:
            raise Invalid(f"the Opsicle bot is not in Slack channel #{name}: invite it with "
                          "/invite", code="slack_bot_not_in_channel")
        return channel_id

    async def _read(self, now: float) -> None:
        listed = await self._web.conversations()
        self._channels = {
            str(c.get("name", "")).lower(): (str(c.get("id", "")), bool(c.get("is_member")))
            for c in listed if c.get("name") and c.get("id")
        }
        self._read_at = now


def _looks_like_id(channel: str) -> bool:
    return len(channel) >= 9 and channel[0] in "CGD" and channel.isalnum() and channel.isupper()


class SlackChannel:
    """Posts approval requests to Slack channels (ids, or names resolved to ids) and updates
    them to the outcome. Each request carries message metadata naming its approval, so a
    ``recover`` announce finds a message an earlier process posted in channel history."""

    name = "slack"

    def __init__(self, web: SlackWeb, channels: ChannelsFor | Sequence[str],
                 directory: SlackDirectory | None = None) -> None:
        self._web = web
        self._directory = directory or SlackDirectory(web)
        if callable(channels):
            self._channels: ChannelsFor = channels
        else:
            fixed = tuple(channels)
            self._channels = lambda approval, run: fixed
        self.posted: dict[str, dict[str, str]] = {}
        self._told: set[tuple[str, str]] = set()

    def message_of(self, approval_id: str, channel: str) -> str | None:
        return self.posted.get(approval_id, {}).get(channel)

    async def announce(
        self, approval: Approval, run: Run, *, recover: bool = False
    ) -> Mapping[str, str]:
        """Post to each channel not posted to yet; returns channel id -> message ts.

        A channel that does not exist or the bot is not in is skipped with one error in the
        log; when no channel could be shown, ``Invalid`` names them all."""
        posted = self.posted.setdefault(approval.id, {})
        text = f"Approval requested for {run.name or run.id} by {approval.requested_by}"
        blocks = request_blocks(approval, run)
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"approval_id": approval.id}}
        problems: list[str] = []
        for channel in self._channels(approval, run):
            try:
                channel_id = await self._directory.resolve(channel)
                if channel_id in posted:
                    continue
                ts = await self._posted_before(approval, channel_id) if recover else None
                if ts is None:
                    channel_id, ts = await self._web.post_message(
                        channel_id, text, blocks=blocks, metadata=metadata)
            except Invalid as exc:
                problem = _channel_problem(channel, exc)
                problems.append(problem)
                if (approval.id, channel) not in self._told:
                    self._told.add((approval.id, channel))
                    log.error("approval %s not shown in Slack: %s", approval.id, problem)
                continue
            posted[channel_id] = ts
        if problems and not posted:
            raise Invalid("; ".join(problems), code="slack_channel")
        return dict(posted)

    async def _posted_before(self, approval: Approval, channel_id: str) -> str | None:
        """The ts of this approval's request in the channel's history, if one is there."""
        oldest = approval.created_at.timestamp() - 60
        for message in await self._web.history(channel_id, oldest=oldest):
            meta = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == METADATA_EVENT and payload.get(
                    "approval_id") == approval.id:
                return str(message.get("ts"))
        return None

    async def conclude(
        self, approval: Approval, run: Run, refs: Mapping[str, str] | None = None
    ) -> None:
        outcome = outcome_line(approval)
        blocks = [
            *request_blocks(approval, run, buttons=False),
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{outcome}*"}},
        ]
        messages = {**(refs or {}), **self.posted.pop(approval.id, {})}
        for channel, ts in messages.items():
            await self._web.update(channel, ts, f"{run.name or run.id}: {outcome}", blocks=blocks)


def _channel_problem(channel: str, exc: Invalid) -> str:
    if exc.code in {f"slack_{e}" for e in _CHANNEL_ERRORS}:
        return (f"Slack channel {channel} does not exist, is archived, or the Opsicle bot is "
                "not in it")
    return exc.message


def slack_channel(web: SlackWeb, channels: ChannelsFor | Sequence[str]) -> ApprovalChannel:
    """The Slack approval channel, typed as the port it implements."""
    return SlackChannel(web, channels)


# ---------------------------------------------------------------- the interactions request URL


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature of ``body`` sent at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raise ``Unauthenticated`` unless the request is signed with ``secret`` and recent."""
    if not secret:
        raise Unauthenticated("this approver takes Slack requests over Socket Mode only")
    timestamp = headers.get("x-slack-request-timestamp", "")
    given = headers.get("x-slack-signature", "")
    if not timestamp.isdigit() or not given:
        raise Unauthenticated("the request is not signed by Slack")
    if abs(now - int(timestamp)) > MAX_AGE:
        raise Unauthenticated("the Slack request is too old (or its clock is off)")
    if not hmac.compare_digest(signature(secret, timestamp, body), given):
        raise Unauthenticated("the Slack signature does not match")


class SlackInteractions:
    """The interactivity request URL: button presses (``block_actions``) and code modals
    (``view_submission``) become ``ChatAnswer``s for ``handler``.

    Mount ``endpoint`` as a POST route. Unsigned, wrongly signed or stale requests get 401
    (all of them when there is no signing secret: Socket Mode alone). ``interaction`` and
    ``command`` take the payloads Socket Mode delivers.
    """

    def __init__(
        self,
        web: SlackWeb,
        handler: AnswerHandler,
        *,
        signing_secret: str = "",
        clock: Clock,
        commands: CommandHandler | None = None,
    ) -> None:
        self._web = web
        self._handler = handler
        self._commands = commands
        self._secret = signing_secret
        self._clock = clock

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify(self._secret, request.headers, body, self._clock.now().timestamp())
        except Unauthenticated as exc:
            log.warning("Slack interaction refused: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=401)
        form = parse_qs(body.decode("utf-8", "replace"))
        try:
            payload = json.loads(form.get("payload", [""])[0])
        except ValueError:
            return JSONResponse({"error": "the payload is not JSON"}, status_code=400)
        if not isinstance(payload, dict):
            return JSONResponse({"error": "the payload is not an object"}, status_code=400)
        reply = await self.interaction(payload)
        return Response(status_code=200) if reply is None else JSONResponse(reply)

    async def interaction(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Handle one interaction payload, from the request URL or Socket Mode; returns the
        response body Slack takes (a modal's field errors), or None for an empty 200."""
        kind = payload.get("type")
        if kind == "block_actions":
            await self._on_actions(payload)
        elif kind == "view_submission":
            return await self._on_submission(payload)
        return None  # other interactions are not Opsicle's

    async def command_endpoint(self, request: Request) -> Response:
        """The slash command request URL: ``/opsicle link CODE`` answers its sender only."""
        body = await request.body()
        try:
            verify(self._secret, request.headers, body, self._clock.now().timestamp())
        except Unauthenticated as exc:
            log.warning("Slack command refused: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=401)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        return JSONResponse(await self.command(form))

    async def command(self, form: Mapping[str, str]) -> dict[str, Any]:
        """``/opsicle link CODE`` (fields as Slack sends them): the reply for its sender only."""
        word, _, rest = str(form.get("text", "")).strip().partition(" ")
        if self._commands is None or word.lower() != "link":
            text = "Usage: /opsicle link CODE (get a code with 'opsicle link slack')"
        else:
            command = ChatCommand(
                channel="slack",
                user_id=str(form.get("user_id", "")),
                username=str(form.get("user_name", "")),
                chat=str(form.get("channel_id", "")),
                name="link",
                text=rest.strip(),
            )
            text = await run_command(self._commands, command)
        return {"response_type": "ephemeral", "text": text}

    async def _on_actions(self, payload: dict[str, Any]) -> None:
        user = payload.get("user") or {}
        channel = str((payload.get("channel") or {}).get("id") or "")
        container = payload.get("container") or {}
        ts = str(container.get("message_ts") or (payload.get("message") or {}).get("ts") or "")
        for action in payload.get("actions") or []:
            verdict = ACTION_IDS.get(str(action.get("action_id")))
            if verdict is None or not channel or not ts:
                continue
            answer = ChatAnswer(
                approval_id=str(action.get("value") or ""),
                channel="slack",
                user_id=str(user.get("id") or ""),
                username=str(user.get("username") or user.get("name") or user.get("id") or ""),
                verdict=verdict,
                code=None,
                chat=channel,
                message=ts,
            )
            result = await hand_over(self._handler, answer)
            try:
                if result.status is AnswerStatus.CODE_REQUIRED:
                    await self._web.open_view(
                        str(payload.get("trigger_id") or ""), code_view(answer)
                    )
                else:
                    await self._tell(answer, result)
            except (Invalid, Unavailable) as exc:
                log.warning("Slack answer for approval %s not shown: %s", answer.approval_id, exc)

    async def _on_submission(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        view = payload.get("view") or {}
        if not str(view.get("callback_id") or "").startswith(CODE_VIEW_PREFIX):
            return None
        try:
            meta = json.loads(str(view.get("private_metadata") or ""))
            verdict = Verdict(meta["verdict"])
        except (ValueError, KeyError, TypeError):
            return _field_error("This form is damaged; press the button again.")
        user = payload.get("user") or {}
        if str(user.get("id") or "") != str(meta.get("user")):
            return _field_error("This form was opened for someone else.")
        values = (view.get("state") or {}).get("values") or {}
        code = str(((values.get(CODE_BLOCK) or {}).get(CODE_ACTION) or {}).get("value") or "")
        answer = ChatAnswer(
            approval_id=str(meta.get("approval") or ""),
            channel="slack",
            user_id=str(user.get("id") or ""),
            username=str(user.get("username") or user.get("name") or user.get("id") or ""),
            verdict=verdict,
            code=code.strip(),
            chat=str(meta.get("channel") or ""),
            message=str(meta.get("ts") or ""),
        )
        result = await hand_over(self._handler, answer)
        if result.status is AnswerStatus.REFUSED:
            try:
                await self._tell(answer, result)
            except (Invalid, Unavailable) as exc:
                log.warning("Slack refusal for approval %s not shown: %s", answer.approval_id, exc)
            return _field_error(result.message or "Not accepted.")
        if result.status is AnswerStatus.CODE_REQUIRED:
            return _field_error("Enter your code.")
        try:
            await self._tell(answer, result)
        except (Invalid, Unavailable) as exc:
            log.warning("Slack answer for approval %s not shown: %s", answer.approval_id, exc)
        return None  # an empty 200 closes the modal

    async def _tell(self, answer: ChatAnswer, result: AnswerResult) -> None:
        if result.status is AnswerStatus.REFUSED:
            text = f":no_entry: {result.message or 'Not accepted.'}"
            await self._web.post_ephemeral(answer.chat, answer.user_id, text)
        elif result.message:
            await self._web.post_message(answer.chat, result.message, thread_ts=answer.message)


def _field_error(message: str) -> dict[str, Any]:
    return {"response_action": "errors", "errors": {CODE_BLOCK: message}}
