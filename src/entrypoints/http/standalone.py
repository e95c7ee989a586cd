"""The standalone role's HTTP app: every role's routes in one process on embedded stores."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp

from domain.ports import HealthCheck
from entrypoints.http.common import build_app


def create_app(checks: Sequence[HealthCheck]) -> ASGIApp:
    return build_app("standalone", [], checks)
