"""The event loop of the long-running roles: the servers and the worker run on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop
from uvloop._version import __version__ as uvloop_version

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on uvloop, whose loop (libuv's) takes less of each request's
    and each run's time than asyncio's own; ``bench/dispatch.py`` runs on it too."""
    return uvloop.run(main)


def describe() -> str:
    """The running loop, as the start-up lines name it: ``uvloop 0.23.0`` or ``asyncio``."""
    if isinstance(asyncio.get_running_loop(), uvloop.Loop):
        return f"uvloop {uvloop_version}"
    return "asyncio"
