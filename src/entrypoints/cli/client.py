"""What every controller-facing command shares: the SDK client, the saved session, output."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from domain.errors import Unauthenticated
from entrypoints import settings
from entrypoints.output import console, emit

if TYPE_CHECKING:
    # The SDK (httpx, cattrs, the wire schemas) is imported when a command runs, so that
    # building the command tree for `opsicle --help` or `opsicle version` stays cheap.
    from adapters.http.controller_client import ControllerClient

T = TypeVar("T")


def current() -> settings.Settings:
    return settings.current.get(settings.load())


def session_path(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opsicle" / "session.json"


def save_session(controller_url: str, token: str, email: str) -> Path:
    """Keep the session token for later commands, readable by this user only (0600)."""
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps({"controllerUrl": controller_url, "token": token, "email": email})
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(data)
    tmp.replace(path)
    return path


def load_session() -> dict[str, str]:
    try:
        data = json.loads(session_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def clear_session() -> bool:
    try:
        session_path().unlink()
    except FileNotFoundError:
        return False
    return True


def controller_url(flag: str | None) -> str:
    """--controller-url, else OPSICLE_CONTROLLER_URL or the config file, else the default."""
    return str(current().with_flags(controller_url=flag)["controller-url"]).rstrip("/")


def run(
    flag_url: str | None,
    action: Callable[[ControllerClient], Awaitable[T]],
    *,
    authenticated: bool = True,
) -> T:
    """Run ``action`` with a client for the controller, logged in unless told otherwise."""
    import asyncio

    from adapters.http.controller_client import ControllerClient

    url = controller_url(flag_url)
    token = None
    if authenticated:
        saved = load_session()
        if not saved.get("token"):
            raise Unauthenticated("you are not logged in: run 'opsicle login'")
        if saved.get("controllerUrl", url).rstrip("/") != url:
            raise Unauthenticated(
                f"your session is for {saved['controllerUrl']}, not {url}: run 'opsicle login'"
            )
        token = saved["token"]

    async def main() -> T:
        async with ControllerClient(url, token) as client:
            return await action(client)

    return asyncio.run(main())


def show(data: Any, *, columns: Sequence[str] = (), title: str = "") -> None:
    """Print a wire object (or a list of them) in the chosen output format."""
    from adapters.serialization import to_json

    emit(to_json(data), current()["output"], columns=columns, title=title)


def say(text: str) -> None:
    """A human sentence in text mode; nothing in json or yaml mode (they print data only)."""
    if current()["output"] == "text":
        console().print(text, markup=False)
