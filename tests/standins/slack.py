"""A Slack stand-in: the Web API methods Opsicle uses, and the interactions Slack sends.

Web API calls go to ``POST /api/<method>`` with ``Authorization: Bearer <bot token>`` and a
JSON body; like Slack it answers HTTP 200 with ``{"ok": false, "error": ...}`` on mistakes.
``press`` and ``submit`` act as people: they POST form-encoded ``payload=…`` to the app's
request URL, signed with the signing secret exactly as Slack signs (v0, HMAC-SHA256).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BLOCK_TYPES = {"section", "actions", "context", "divider", "header", "input", "image"}


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


@attrs.define
class View:
    id: str
    view: dict[str, Any]
    user: str


class SlackStandIn:
    """The Web API for one bot token and workspace, and the sender of interaction payloads."""

    def __init__(self, token: str, signing_secret: str, channels: tuple[str, ...]) -> None:
        self.token = token
        self.signing_secret = signing_secret
        self.channels = set(channels)
        self.request_url = ""  # where interaction payloads go; set by the test
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, str]] = []
        self.messages: list[Message] = []
        self.views: dict[str, View] = {}
        self._triggers: dict[str, tuple[str, float]] = {}  # trigger id -> (user, issued at)
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self.app = Starlette(routes=[Route("/api/{method}", self._endpoint, methods=["POST"])])

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
        payload = {
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
        return await self.send(payload)

    async def submit(self, view_id: str, user: dict[str, str], code: str) -> httpx.Response:
        """A person types ``code`` into an open modal and submits it: view_submission."""
        opened = self.views[view_id]
        state: dict[str, dict[str, Any]] = {}
        for block in opened.view.get("blocks", []):
            if block.get("type") == "input":
                element = block["element"]
                state[block["block_id"]] = {
                    element["action_id"]: {"type": element["type"], "value": code}
                }
        payload = {
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
        return await self.send(payload)

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
            if auth.removeprefix("Bearer ") != self.token:
                raise SlackError("invalid_auth")
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method")
            if not request.headers.get("content-type", "").startswith("application/json"):
                raise SlackError("invalid_form_data")
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise SlackError("invalid_json") from exc
            if not isinstance(body, dict):
                raise SlackError("invalid_json")
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
        if channel not in self.channels:
            raise SlackError("channel_not_found")
        return channel

    async def _m_chat_postMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        text, blocks = _content(body)
        thread_ts = body.get("thread_ts")
        if thread_ts is not None and not any(
            m.channel == channel and m.ts == thread_ts for m in self.messages
        ):
            raise SlackError("thread_not_found")
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        message = Message(channel, ts, text, blocks, thread_ts=thread_ts)
        self.messages.append(message)
        return {"channel": channel, "ts": ts, "message": {"text": text, "blocks": blocks}}

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
        ts = f"{1_700_000_000 + next(self._ts)}.000200"
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
    import secrets

    return secrets.token_hex(8)
