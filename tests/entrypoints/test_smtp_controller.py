"""A controller configured with smtp-host emails its codes over SMTP instead of the outbox."""

from __future__ import annotations

from pathlib import Path

import httpx

from entrypoints import bootstrap, settings
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_routes
from tests.contract.test_mailer import _serve


async def test_verification_codes_go_out_over_smtp(tmp_path: Path) -> None:
    server = _serve()
    smtp = next(server)
    try:
        env = {
            "XDG_CONFIG_HOME": str(tmp_path),
            "OPSICLE_SMTP_HOST": "127.0.0.1",
            "OPSICLE_SMTP_PORT": str(smtp.port),
            "OPSICLE_SMTP_STARTTLS": "off",
            "OPSICLE_SMTP_FROM": "noreply@opsicle.test",
        }
        resolved = settings.load(None, env, data_dir=str(tmp_path / "data"))
        async with bootstrap.embedded_platform(resolved) as (platform, _):
            app = build_app("controller", controller_routes(platform), [])
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://c"
            ) as client:
                reply = await client.post(
                    "/api/v1/users",
                    json={"email": "smtp-user@example.com", "password": "Sm7p-passw0rd!"},
                )
                assert reply.status_code == 201, reply.text
    finally:
        next(server, None)
    [mail] = smtp.inbox.emails()
    assert mail.to == "smtp-user@example.com"
    assert "opsicle verify email --code" in mail.text
    assert not (tmp_path / "data" / "outbox").exists()
