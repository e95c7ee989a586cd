"""A Slack stand-in: the Web API methods Opsicle uses, and the interactions Slack sends.

Web API calls go to ``POST /api/<method>`` with ``Authorization: Bearer <bot token>`` and a
JSON body; like Slack it answers HTTP 200 with ``{"ok": false, "error": ...}`` on mistakes.
``press`` and ``submit`` act as people: they POST form-encoded ``payload=…`` to the app's
request URL, signed with the signing secret exactly as Slack signs (v0, HMAC-SHA256).

Socket Mode: ``apps.connections.open`` (the app-level token only) hands out a single-use
``ws://`` URL to ``/link``, where the stand-in says hello and then sends envelopes
(``deliver``, ``press_over_socket``, ``submit_over_socket``, ``command_over_socket``) and
waits for the app's ack of each ``envelope_id``; ``disconnect`` asks the app to reconnect
and ``drop`` cuts the connection. Channels have names (``conversations.list``, paginated),
and the bot is a member of ``channels`` only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode

import attrs
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

BLOCK_TYPES = {"section", "actions", "context", "divider", "header", "input", "image"}
# Methods Slack takes form-encoded only (JSON bodies are for the writing methods).
FORM_ONLY = {"conversations.list", "conversations.history", "apps.connections.open"}


class SlackError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@attrs.define
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    ephemeral_for: str | None = None
    metadata: dict[str, Any] | None = None


@attrs.define
class View:
    id: str
    view: dict[str, Any]
    user: str


class SlackStandIn:
    """The Web API for one bot token and workspace, and the sender of interaction payloads."""

    def __init__(
        self,
        token: str,
        signing_secret: str,
        channels: tuple[str, ...],
        *,
        names: Mapping[str, str] | None = None,
        outside: Mapping[str, str] | None = None,
        app_token: str = "",
    ) -> None:
        self.token = token
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.channels = set(channels)  # ids of the channels the bot is in
        # Channel names -> ids: ``names`` of channels the bot is in, ``outside`` of others.
        self.names = {**dict(names or {}), **dict(outside or {})}
        self.list_page = 1000  # conversations.list pages at most this many channels
        self.request_url = ""  # where interaction payloads go; set by the test
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, str]] = []
        self.refuse: dict[str, str] = {}  # method -> the error it answers with, set by a test
        self.messages: list[Message] = []
        self.views: dict[str, View] = {}
        self._triggers: dict[str, tuple[str, float]] = {}  # trigger id -> (user, issued at)
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._tickets: set[str] = set()
        self._socket: WebSocket | None = None
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connections = 0  # Socket Mode connections accepted
        self.base_url = ""  # where the last Web API call came in: Socket Mode URLs start there
        self.app = Starlette(routes=[
            Route("/api/{method}", self._endpoint, methods=["POST"]),
            WebSocketRoute("/link", self._link),
        ])

    # ------------------------------------------------------------------ what tests look at

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == method]

    def message(self, channel: str, ts: str) -> Message:
        return next(m for m in self.messages if m.channel == channel and m.ts == ts)

    def thread(self, channel: str, ts: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts == ts]

    def ephemeral(self, user: str) -> list[Message]:
        return [m for m in self.messages if m.ephemeral_for == user]

    # ------------------------------------------------------------------ people acting

    async def press(
        self, channel: str, ts: str, user: dict[str, str], action_id: str
    ) -> httpx.Response:
        """A person presses the button ``action_id`` on a message: Slack posts block_actions."""
        return await self.send(self.press_payload(channel, ts, user, action_id))

    async def press_over_socket(
        self, channel: str, ts: str, user: dict[str, str], action_id: str
    ) -> dict[str, Any]:
        """The same press delivered over Socket Mode; returns the app's ack."""
        return await self.deliver("interactive", self.press_payload(channel, ts, user, action_id))

    async def submit_over_socket(
        self, view_id: str, user: dict[str, str], code: str
    ) -> dict[str, Any]:
        """A modal submission delivered over Socket Mode; returns the app's ack."""
        return await self.deliver("interactive", self.submit_payload(view_id, user, code))

    async def command_over_socket(
        self, channel: str, user: dict[str, str], text: str
    ) -> dict[str, Any]:
        """``/opsicle text`` typed in ``channel``, over Socket Mode; returns the app's ack."""
        payload = {"command": "/opsicle", "text": text, "user_id": user["id"],
                   "user_name": user.get("username", ""), "channel_id": channel,
                   "team_id": "T1", "api_app_id": "A1",
                   "trigger_id": f"{next(self._ids)}.{secrets_hex()}"}
        return await self.deliver("slash_commands", payload)

    def press_payload(
        self, channel: str, ts: str, user: dict[str, str], action_id: str
    ) -> dict[str, Any]:
        message = self.message(channel, ts)
        for block in message.blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    button, block_id = element, block.get("block_id", "")
                    break
            else:
                continue
            break
        else:
            raise AssertionError(f"message {ts} has no button {action_id!r}")
        trigger = f"{next(self._ids)}.{secrets_hex()}"
        self._triggers[trigger] = (user["id"], time.monotonic())
        return {
            "type": "block_actions",
            "user": {"id": user["id"], "username": user.get("username", ""), "team_id": "T1"},
            "api_app_id": "A1",
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel},
            "trigger_id": trigger,
            "team": {"id": "T1", "domain": "opsicle"},
            "channel": {"id": channel, "name": "approvals"},
            "message": {
                "type": "message",
                "ts": ts,
                "text": message.text,
                "blocks": message.blocks,
            },
            "response_url": "http://127.0.0.1:9/unused",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": button.get("value", ""),
                    "text": button["text"],
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    async def submit(self, view_id: str, user: dict[str, str], code: str) -> httpx.Response:
        """A person types ``code`` into an open modal and submits it: view_submission."""
        return await self.send(self.submit_payload(view_id, user, code))

    def submit_payload(self, view_id: str, user: dict[str, str], code: str) -> dict[str, Any]:
        opened = self.views[view_id]
        state: dict[str, dict[str, Any]] = {}
        for block in opened.view.get("blocks", []):
            if block.get("type") == "input":
                element = block["element"]
                state[block["block_id"]] = {
                    element["action_id"]: {"type": element["type"], "value": code}
                }
        return {
            "type": "view_submission",
            "team": {"id": "T1", "domain": "opsicle"},
            "user": {"id": user["id"], "username": user.get("username", ""), "team_id": "T1"},
            "api_app_id": "A1",
            "trigger_id": f"{next(self._ids)}.{secrets_hex()}",
            "view": {
                **opened.view,
                "id": view_id,
                "state": {"values": state},
            },
        }

    # ------------------------------------------------------------------ Socket Mode

    async def deliver(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an envelope over the app's Socket Mode connection; wait for its ack."""
        for _ in range(500):
            if self._socket is not None:
                break
            await asyncio.sleep(0.02)
        socket = self._socket
        if socket is None:
            raise AssertionError("the app has no Socket Mode connection")
        envelope_id = secrets.token_hex(8)
        acked = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = acked
        await socket.send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                "accepts_response_payload": kind != "events_api",
                                "retry_attempt": 0, "retry_reason": ""})
        return await asyncio.wait_for(acked, timeout=10)

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Tell the app this connection is about to close, as Slack does every few hours."""
        socket = self._socket
        if socket is None:
            raise AssertionError("the app has no Socket Mode connection")
        self._socket = None
        await socket.send_json({"type": "disconnect", "reason": reason,
                                "debug_info": {"host": "standin"}})

    async def drop(self) -> None:
        """Cut the connection without a word, as a network failure would."""
        socket = self._socket
        if socket is None:
            raise AssertionError("the app has no Socket Mode connection")
        self._socket = None
        await socket.close(code=1011)

    async def _link(self, ws: WebSocket) -> None:
        ticket = ws.query_params.get("ticket", "")
        if ticket not in self._tickets:
            await ws.close(code=4001)  # refused before the handshake completes
            return
        self._tickets.discard(ticket)  # a URL opens one connection
        await ws.accept()
        self.connections += 1
        self._socket = ws
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A1"},
                            "debug_info": {"host": "standin", "approximate_connection_time":
                                           18060}})
        try:
            while True:
                ack = await ws.receive_json()
                acked = self._acks.pop(str(ack.get("envelope_id")), None)
                if acked is not None and not acked.done():
                    acked.set_result(ack)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self._socket is ws:
                self._socket = None

    async def send(
        self,
        payload: dict[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """POST ``payload`` to the request URL, signed as Slack does (or as a test spoils it)."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + stamp.encode() + b":" + body
        key = (self.signing_secret if secret is None else secret).encode()
        sig = signature or "v0=" + hmac.new(key, base, hashlib.sha256).hexdigest()
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": stamp,
            "x-slack-signature": sig,
            "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(self.request_url, content=body, headers=headers)

    # ------------------------------------------------------------------ the Web API

    async def _endpoint(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        try:
            auth = request.headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                raise SlackError("not_authed")
            given = auth.removeprefix("Bearer ")
            wanted = self.app_token if method == "apps.connections.open" else self.token
            if given != wanted:
                known = {self.token, self.app_token} - {""}
                raise SlackError("not_allowed_token_type" if given in known else "invalid_auth")
            if method in self.refuse:
                raise SlackError(self.refuse[method])
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method")
            kind = request.headers.get("content-type", "")
            if method in FORM_ONLY:
                if not kind.startswith("application/x-www-form-urlencoded"):
                    raise SlackError("invalid_form_data")
                body = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            else:
                if not kind.startswith("application/json"):
                    raise SlackError("invalid_form_data")
                try:
                    body = json.loads(await request.body())
                except ValueError as exc:
                    raise SlackError("invalid_json") from exc
            if not isinstance(body, dict):
                raise SlackError("invalid_json")
            self.base_url = str(request.base_url)
            self.calls.append((method, body))
            result = await handler(body)
        except SlackError as exc:
            self.refused.append((method, exc.error))
            return JSONResponse({"ok": False, "error": exc.error})
        return JSONResponse({"ok": True, **result})

    def _channel(self, body: dict[str, Any]) -> str:
        channel = body.get("channel")
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        if channel.startswith("#") and channel[1:] in self.names:
            channel = self.names[channel[1:]]  # Slack takes a name where it takes an id
        if channel not in self.channels:
            raise SlackError("not_in_channel" if channel in self.names.values()
                             else "channel_not_found")
        return channel

    async def _m_chat_postMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        text, blocks = _content(body)
        thread_ts = body.get("thread_ts")
        if thread_ts is not None and not any(
            m.channel == channel and m.ts == thread_ts for m in self.messages
        ):
            raise SlackError("thread_not_found")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackError("invalid_metadata_format")
        ts = self._new_ts()
        message = Message(channel, ts, text, blocks, thread_ts=thread_ts, metadata=metadata)
        self.messages.append(message)
        return {"channel": channel, "ts": ts, "message": {"text": text, "blocks": blocks}}

    def _new_ts(self) -> str:
        """A message id as Slack makes them: the Unix time, unique within the channel."""
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _m_apps_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        base = self.base_url.replace("http://", "ws://", 1).rstrip("/")
        return {"url": f"{base}/link?ticket={ticket}"}

    async def _m_conversations_list(self, body: dict[str, Any]) -> dict[str, Any]:
        listed = sorted(self.names.items(), key=lambda item: item[1])
        limit = min(int(body.get("limit") or 100), self.list_page)
        start = int(body.get("cursor") or 0)
        page = listed[start:start + limit]
        more = start + limit < len(listed)
        channels = [{"id": cid, "name": name, "is_channel": True, "is_archived": False,
                     "is_member": cid in self.channels} for name, cid in page]
        return {"channels": channels,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    async def _m_conversations_history(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = str(body.get("channel") or "")
        if channel not in self.channels:
            raise SlackError("not_in_channel" if channel in self.names.values()
                             else "channel_not_found")
        oldest = float(body.get("oldest") or 0)
        with_metadata = body.get("include_all_metadata") == "true"
        found = [m for m in reversed(self.messages)  # newest first, as Slack lists them
                 if m.channel == channel and m.thread_ts is None and m.ephemeral_for is None
                 and float(m.ts) > oldest]
        limit = int(body.get("limit") or 100)
        start = int(body.get("cursor") or 0)
        page = found[start:start + limit]
        more = start + limit < len(found)
        messages = [{"type": "message", "ts": m.ts, "text": m.text,
                     **({"metadata": m.metadata} if with_metadata and m.metadata else {})}
                    for m in page]
        return {"messages": messages, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    async def _m_chat_update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        ts = body.get("ts")
        if not isinstance(ts, str):
            raise SlackError("invalid_arguments")
        found = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not found or found[0].ephemeral_for:
            raise SlackError("message_not_found")
        text, blocks = _content(body)
        found[0].text, found[0].blocks = text, blocks
        return {"channel": channel, "ts": ts, "text": text}

    async def _m_chat_postEphemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        user = body.get("user")
        if not isinstance(user, str) or not user.startswith(("U", "W")):
            raise SlackError("user_not_in_channel")
        text, blocks = _content(body)
        ts = self._new_ts()
        self.messages.append(Message(channel, ts, text, blocks, ephemeral_for=user))
        return {"message_ts": ts}

    async def _m_views_open(self, body: dict[str, Any]) -> dict[str, Any]:
        trigger = body.get("trigger_id")
        if not isinstance(trigger, str) or trigger not in self._triggers:
            raise SlackError("invalid_trigger_id")
        user, issued = self._triggers.pop(trigger)  # a trigger opens one view
        if time.monotonic() - issued > 3:
            raise SlackError("expired_trigger_id")
        view = body.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise SlackError("invalid_arguments")
        title = view.get("title") or {}
        if title.get("type") != "plain_text" or not 0 < len(str(title.get("text", ""))) <= 24:
            raise SlackError("invalid_arguments")
        blocks = _blocks(view.get("blocks"))
        if any(b["type"] == "input" for b in blocks) and "submit" not in view:
            raise SlackError("invalid_arguments")
        if len(str(view.get("private_metadata", ""))) > 3000:
            raise SlackError("invalid_arguments")
        if len(str(view.get("callback_id", ""))) > 255:
            raise SlackError("invalid_arguments")
        view_id = f"V{next(self._ids):08d}"
        self.views[view_id] = View(view_id, view, user)
        return {"view": {**view, "id": view_id}}


def _content(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = body.get("text", "")
    blocks = _blocks(body.get("blocks", []))
    if not isinstance(text, str) or (not text.strip() and not blocks):
        raise SlackError("no_text")
    return text, blocks


def _blocks(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > 50:
        raise SlackError("invalid_blocks")
    for block in value:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise SlackError("invalid_blocks")
        if block["type"] == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                raise SlackError("invalid_blocks")
            ids = [e.get("action_id") for e in elements]
            if len(set(ids)) != len(ids):
                raise SlackError("invalid_blocks")
            for element in elements:
                text = element.get("text") or {}
                if element.get("type") != "button" or text.get("type") != "plain_text":
                    raise SlackError("invalid_blocks")
                if len(text.get("text", "")) > 75 or len(element.get("value", "")) > 2000:
                    raise SlackError("invalid_blocks")
        if block["type"] == "section":
            text = block.get("text") or {}
            if text.get("type") not in ("mrkdwn", "plain_text") or len(text.get("text", "")) > 3000:
                raise SlackError("invalid_blocks")
        if block["type"] == "input" and (
            not isinstance(block.get("element"), dict) or "label" not in block
        ):
            raise SlackError("invalid_blocks")
    return value


def secrets_hex() -> str:
    return secrets.token_hex(8)
