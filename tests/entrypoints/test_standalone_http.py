"""The standalone role's HTTP surface: probes, readiness of its stores, metrics, request ids."""

from __future__ import annotations

from pathlib import Path

import httpx

from domain.errors import Unavailable
from entrypoints import bootstrap, settings
from entrypoints.http.common import build_app


async def test_probes_metrics_and_request_ids(tmp_path: Path) -> None:
    resolved = settings.load(None, {"XDG_CONFIG_HOME": str(tmp_path)}, data_dir=str(tmp_path))
    async with bootstrap.standalone(resolved) as role:
        transport = httpx.ASGITransport(app=role.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://opsicle") as client:
            health = await client.get("/healthz")
            assert health.json() == {"status": "ok"}
            ready = await client.get("/readyz", headers={"X-Request-ID": "abc123"})
            assert ready.status_code == 200
            assert ready.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}
            assert ready.headers["x-request-id"] == "abc123"
            assert len((await client.get("/healthz")).headers["x-request-id"]) == 32
            missing = await client.get("/nowhere")
            assert missing.status_code == 404
            metrics = (await client.get("/metrics")).text
    assert (tmp_path / "opsicle.db").is_file()
    readyz = 'method="GET",role="standalone",route="/readyz",status="200"} 1.0'
    assert f"opsicle_http_requests_total{{{readyz}" in metrics
    assert 'route="unmatched",status="404"' in metrics


class Down:
    name = "queue"

    async def check(self) -> None:
        raise Unavailable("NATS at 127.0.0.1:4222 did not answer")


async def test_readiness_names_the_store_that_is_down() -> None:
    app = build_app("test", [], [Down()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://opsicle") as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"queue": "NATS at 127.0.0.1:4222 did not answer"},
    }
