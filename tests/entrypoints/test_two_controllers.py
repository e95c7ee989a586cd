"""Two controllers on one database and one Redis: sessions and rate limits hold across both."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.mail.outbox import list_outbox
from entrypoints import bootstrap, settings
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_routes
from tests.support import port_open, require_service

PASSWORD = "Tw0-controllers!"


@pytest.fixture
async def controllers(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    require_service("Redis", port_open("127.0.0.1", 6379))
    env = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "OPSICLE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "OPSICLE_REDIS_PREFIX": f"opsicle-test-{uuid.uuid4().hex}:",
        "OPSICLE_SECRET_KEY": "k" * 40,
    }
    resolved = settings.load(None, env, data_dir=str(tmp_path / "data"))
    async with (
        bootstrap.embedded_platform(resolved) as (one, _),
        bootstrap.embedded_platform(resolved) as (two, _),
    ):
        apps = [build_app("controller", controller_routes(p), []) for p in (one, two)]
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://a") as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://b") as b,
        ):
            yield a, b


async def verified_user(a: httpx.AsyncClient, data_dir: Path) -> str:
    email = f"two-{uuid.uuid4().hex[:8]}@example.com"
    assert (await a.post("/api/v1/users", json={"email": email, "password": PASSWORD})).is_success
    mail = next(m for m in list_outbox(data_dir / "outbox") if email in m.email.to)
    match = re.search(r"/api/v1/verification/(\S+)", mail.email.text)
    assert match is not None
    assert (await a.get(f"/api/v1/verification/{match.group(1)}")).is_success
    return email


async def test_a_session_from_one_controller_works_and_ends_on_the_other(
    controllers: tuple[httpx.AsyncClient, httpx.AsyncClient], tmp_path: Path
) -> None:
    a, b = controllers
    email = await verified_user(a, tmp_path / "data")
    login = await a.post("/api/v1/sessions", json={"email": email, "password": PASSWORD})
    token = login.json()["sessionToken"]
    auth = {"authorization": f"Bearer {token}"}
    assert (await b.get("/api/v1/whoami", headers=auth)).json()["email"] == email
    assert (await b.delete("/api/v1/sessions/current", headers=auth)).is_success
    refused = await a.get("/api/v1/whoami", headers=auth)
    assert refused.status_code == 401


async def test_failed_logins_count_across_controllers(
    controllers: tuple[httpx.AsyncClient, httpx.AsyncClient], tmp_path: Path
) -> None:
    a, b = controllers
    email = await verified_user(a, tmp_path / "data")
    wrong = {"email": email, "password": "Wr0ng-password!"}
    codes = [
        (await (a if i % 2 else b).post("/api/v1/sessions", json=wrong)).status_code
        for i in range(12)
    ]
    # Ten failures are allowed per account, wherever they land; the eleventh is refused.
    assert codes == [401] * 10 + [429, 429]
    limited = await a.post("/api/v1/sessions", json={"email": email, "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
