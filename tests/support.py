"""Helpers shared by the test suites."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, available: bool, why: str = "") -> None:
    """Skip on a laptop when ``name`` is missing; fail under ``CI=true``, where it must exist."""
    if available:
        return
    message = f"{name} is not available" + (f": {why}" if why else "")
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires every service leg to run)")
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
