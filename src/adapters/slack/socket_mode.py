"""Slack Socket Mode: interactions over a WebSocket the app opens, instead of a request URL."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from adapters.slack.web import SlackInteractions, SlackWeb
from domain.errors import Invalid, Unavailable

log = logging.getLogger("opsicle.slack")


class SlackSocketMode:
    """One Socket Mode connection per ``run_once``: apps.connections.open with the app-level
    token, then envelopes until Slack says ``disconnect`` (it is about to close: return, and
    the caller's loop connects again at once) or the connection drops (``Unavailable``: the
    loop backs off, then connects again).

    Each envelope is acknowledged by its ``envelope_id``: button presses at once (Slack wants
    an ack within 3 s, and the answer opens a modal on its own), modal submissions and slash
    commands with the response their handling gives (field errors, the command's reply).
    """

    def __init__(self, web: SlackWeb, app_token: str, interactions: SlackInteractions,
                 *, open_timeout: float = 10.0) -> None:
        self._web = web
        self._token = app_token
        self._interactions = interactions
        self._open_timeout = open_timeout
        self.connections = 0  # connections opened, for probes and tests

    async def run_once(self) -> None:
        try:
            url = await self._web.socket_url(self._token)
        except Invalid as exc:
            # Refused for the app's setup (a missing scope, Socket Mode off): the loop connects
            # again at once after a normal return, so this must back off like an outage.
            raise Unavailable(f"Slack Socket Mode could not start: {exc.message}") from exc
        handling: set[asyncio.Task[None]] = set()
        try:
            async with connect(url, open_timeout=self._open_timeout, max_size=2**22,
                               ping_interval=30, ping_timeout=20) as ws:
                self.connections += 1
                async for raw in ws:
                    envelope = _envelope(raw)
                    if envelope.get("type") == "disconnect":
                        log.info("Slack Socket Mode asks to reconnect (%s)",
                                 envelope.get("reason", "?"))
                        return
                    if envelope.get("envelope_id"):
                        task = asyncio.create_task(self._handle(ws, envelope))
                        handling.add(task)
                        task.add_done_callback(handling.discard)
        except (ConnectionClosed, InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
            raise Unavailable(f"Slack Socket Mode connection ended ({type(exc).__name__})"
                              ) from exc
        finally:
            if handling:
                await asyncio.gather(*handling, return_exceptions=True)
        raise Unavailable("Slack closed the Socket Mode connection")

    async def _handle(self, ws: ClientConnection, envelope: dict[str, Any]) -> None:
        envelope_id = str(envelope["envelope_id"])
        kind = envelope.get("type")
        payload = envelope.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        try:
            if kind == "interactive" and payload.get("type") == "block_actions":
                await _ack(ws, envelope_id)
                await self._interactions.interaction(payload)
            elif kind == "interactive":
                await _ack(ws, envelope_id, await self._interactions.interaction(payload))
            elif kind == "slash_commands":
                form = {k: str(v) for k, v in payload.items()}
                await _ack(ws, envelope_id, await self._interactions.command(form))
            else:
                await _ack(ws, envelope_id)  # events and the rest are not Opsicle's
        except ConnectionClosed:
            log.warning("Slack envelope %s handled after its connection closed", envelope_id)
        except Exception:
            log.exception("Slack envelope %s could not be handled", envelope_id)


def _envelope(raw: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _ack(ws: ClientConnection, envelope_id: str,
               payload: dict[str, Any] | None = None) -> None:
    ack: dict[str, Any] = {"envelope_id": envelope_id}
    if payload is not None:
        ack["payload"] = payload
    await ws.send(json.dumps(ack))
