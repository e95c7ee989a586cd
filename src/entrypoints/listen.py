"""Checking a listen address before a server starts on it."""

from __future__ import annotations

import socket

from domain.errors import FieldError, Invalid, Unavailable


def check_listen(listen: str, setting: str = "listen") -> str:
    """Check ``listen`` is host:port and free now, so a mistake costs no start-up work."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(
            f"--{setting} {listen!r} is not host:port",
            errors=(
                FieldError(setting, f"expected host:port such as 127.0.0.1:13371, got '{listen}'"),
            ),
        )
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise Unavailable(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    return listen
