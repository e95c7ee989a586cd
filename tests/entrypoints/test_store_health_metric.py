"""``/metrics`` carries each store's health as the last readiness check saw it."""

from __future__ import annotations

import httpx

from domain.errors import Unavailable
from entrypoints.http.common import build_app


class SwitchableCheck:
    """A store whose answer the test decides."""

    def __init__(self, name: str, up: bool) -> None:
        self.name = name
        self.up = up

    async def check(self) -> None:
        if not self.up:
            raise Unavailable(f"{self.name} is down")


def store_up(metrics: str, role: str, store: str) -> float:
    prefix = f'opsicle_store_up{{role="{role}",store="{store}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, metrics
    return float(lines[0].removeprefix(prefix))


async def test_store_health_follows_the_readiness_check() -> None:
    database, cache = SwitchableCheck("database", True), SwitchableCheck("redis", False)
    app = build_app("controller", [], [database, cache])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://controller"
    ) as client:
        assert "opsicle_store_up{" not in (await client.get("/metrics")).text
        assert (await client.get("/readyz")).status_code == 503
        metrics = (await client.get("/metrics")).text
        assert store_up(metrics, "controller", "database") == 1.0
        assert store_up(metrics, "controller", "redis") == 0.0

        cache.up, database.up = True, False
        assert (await client.get("/readyz")).status_code == 503
        metrics = (await client.get("/metrics")).text
        assert store_up(metrics, "controller", "database") == 0.0
        assert store_up(metrics, "controller", "redis") == 1.0
