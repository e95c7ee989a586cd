"""A newcomer's journey through the CLI only: account, MFA, org, colleague, role, token, audit.

Runs twice: on the embedded default (SQLite, in-process cache, SQL audit log) and on the
production stores (MariaDB, Redis, and the audit log on MongoDB — here the nx-27017
stand-in, or a real server named by OPSICLE_TEST_MONGODB_URL).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.contract.mongo_fixture import mongo_url  # noqa: F401 (a fixture)
from tests.e2e.conftest import OPSICLE, PASSWORD, ROOT, User, mariadb_database
from tests.support import free_port, port_open, require_service

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["embedded", "production-stores"])
def controller(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    env = {**os.environ, "OPSICLE_LOG_LEVEL": "warning"}
    databases: Iterator[str] | None = None
    if request.param == "production-stores":
        require_service("Redis", port_open("127.0.0.1", 6379))
        databases = mariadb_database()
        env |= {
            "OPSICLE_DATABASE_URL": next(databases),
            "OPSICLE_REDIS_URL": "redis://127.0.0.1:6379/0",
            "OPSICLE_REDIS_PREFIX": f"opsicle-journey-{uuid.uuid4().hex[:8]}:",
            "OPSICLE_MONGO_URL": request.getfixturevalue("mongo_url"),
            "OPSICLE_MONGO_DATABASE": f"opsicle_journey_{uuid.uuid4().hex[:8]}",
        }
    listen = f"127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen(
        # A configured database is migrated on request only; the embedded one always is.
        [*OPSICLE, "start", "controller", "--listen", listen, "--data-dir", str(data),
         "--migrate"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{listen}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "controller.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "controller.log").read_text()
            time.sleep(0.2)
        yield f"http://{listen}", data
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        if databases is not None:
            next(databases, None)


def test_from_sign_up_to_audit_trail(controller: tuple[str, Path], tmp_path: Path) -> None:
    url, data = controller
    ada = User(url, data, tmp_path / "ada", f"ada+{uuid.uuid4().hex[:6]}@example.com")
    grace = User(url, data, tmp_path / "grace", f"grace-{uuid.uuid4().hex[:6]}@example.org")
    ada.sign_up()

    # MFA: enrol, confirm, and from then on a login needs a code.
    app = pyotp.parse_uri(ada.json("create", "mfa", "--password", PASSWORD)["uri"])
    assert isinstance(app, pyotp.TOTP)
    recovery = ada.json("create", "mfa", "--code", app.now())["codes"]
    assert len(recovery) == 10
    ada("logout")
    ada("login", "--email", ada.email, "--password", PASSWORD, code=2, stdin="")
    later = app.at(datetime.now(UTC).timestamp() + 30)
    ada("login", "--email", ada.email, "--password", PASSWORD, "--code", later)
    assert ada.json("whoami")["email"] == ada.email

    org = f"journey-{uuid.uuid4().hex[:6]}"
    ada("create", "org", "Journey Operations", "--code", org)

    # A colleague joins with the emailed code and is given a role.
    grace.sign_up()
    ada("invite", grace.email, "--org", org)
    grace("join", "org", "--code", grace.mailed(r"(join-\S+)"))
    ada("create", "org", "role", "operators", "--org", org, "--allow", "templates=view,execute")
    ada("assign", "org", "role", "operators", "--org", org, "--user", grace.email)
    allowed = grace("can", "execute", "templates", "--org", org)
    assert "operators" in allowed
    grace("can", "delete", "org", "--org", org, code=7)

    # A worker token, created and revoked.
    token = ada.json("create", "org", "token", "edge-1", "--org", org)
    ada("revoke", "org", "token", token["id"], "--org", org)
    assert ada.json("get", "org", "token", token["id"], "--org", org)["revokedAt"]

    # The trail of all of it, and an intact chain.
    trail = ada.json("list", "audit-logs", "--org", org, "--limit", "100")["items"]
    verbs = {e["verb"] for e in trail}
    assert {
        "org.create",
        "org.invite",
        "role.create",
        "role.assign",
        "token.create",
        "token.revoke",
    } <= verbs, verbs
    mine = {e["verb"] for e in ada.json("list", "audit-logs", "--limit", "100")["items"]}
    assert any(v.startswith("session.") or v.startswith("login") for v in mine), mine
    assert "the chain holds" in ada("audit", "verify")
