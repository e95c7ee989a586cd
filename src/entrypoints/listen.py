"""Checking a listen address before a server starts on it."""

from __future__ import annotations

import socket

from domain.errors import FieldError, Invalid, Unavailable


def check_listen(listen: str, setting: str = "listen") -> str:
    """Check ``listen`` is host:port and free now, so a mistake costs no start-up work."""
    with listen_socket(listen, setting):
        return listen


def listen_socket(listen: str, setting: str = "listen") -> socket.socket:
    """A socket listening on ``listen`` (host:port), held until a server takes it over.

    Raises ``Invalid`` when it is not host:port, ``Unavailable`` naming the setting and the
    address when it cannot be listened on (the port is taken, the host is not this machine's).
    """
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
        sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
            sock.listen()
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on {listen} (--{setting}): {exc.strerror or exc}"
        ) from exc
    return sock
