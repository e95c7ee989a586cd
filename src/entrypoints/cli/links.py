"""``opsicle link telegram|slack``: tie a chat identity to your account with a one-time code."""

from __future__ import annotations

from typing import Annotated, Literal

from cyclopts import Parameter

from entrypoints.cli import client


def link(
    platform: Annotated[
        Literal["telegram", "slack"], Parameter(help="The chat to link: telegram or slack.")
    ],
    /,
    *,
    controller_url: Annotated[
        str | None,
        Parameter(help="The controller's URL. Default: $OPSICLE_CONTROLLER_URL, the config "
                  "file, or http://127.0.0.1:13371"),
    ] = None,
) -> int:
    """Link your Telegram or Slack identity to your account, so your answers to approval
    requests there count as yours (and your own TOTP codes are asked).

    Prints a single-use code that works for ten minutes: send /link CODE to the bot in
    Telegram, or type /opsicle link CODE in Slack.
    """
    from adapters.http.chat_links_client import ChatLinksClient

    issued = client.run(controller_url, lambda c: ChatLinksClient(c).link_code(platform))
    if client.current()["output"] == "text":
        client.say(f"To link your {platform} account, {issued.instructions}")
        client.say(f"The code works once, until {issued.expires_at:%Y-%m-%d %H:%M} UTC.")
    else:
        client.show(issued)
    return 0
