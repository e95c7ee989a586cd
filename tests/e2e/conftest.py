"""Fixtures for end-to-end tests: the opsicle command from source or the frozen executable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support import require_service

ROOT = Path(__file__).parents[2]


def frozen_binary() -> Path:
    """dist/opsicle (or $OPSICLE_BINARY); skips, or fails under CI, when it is not built."""
    binary = Path(os.environ.get("OPSICLE_BINARY", ROOT / "dist" / "opsicle"))
    require_service(
        "the frozen executable",
        binary.is_file(),
        f"{binary} is missing; build it with packaging/build.sh",
    )
    return binary


@pytest.fixture(params=["source", "frozen"])
def opsicle(request: pytest.FixtureRequest) -> list[str]:
    """The argv prefix that runs opsicle: from the source tree, or dist/opsicle."""
    if request.param == "source":
        return [sys.executable, "-m", "entrypoints.main"]
    return [str(frozen_binary())]


@pytest.fixture
def frozen() -> Path:
    """The one-file executable, for what only the shipped build does."""
    return frozen_binary()


def docker_host() -> str | None:
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    project_socket = Path("/run/opsicle-docker/docker.sock")
    return f"unix://{project_socket}" if project_socket.exists() else None
