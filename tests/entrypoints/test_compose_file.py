"""docker-compose.yml and packaging/Dockerfile: services, health, start order and real commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cyclopts.exceptions import UnknownCommandError

from entrypoints import settings
from entrypoints.main import app

ROOT = Path(__file__).parents[2]
STORES = {"mysql": "mysql:8", "mongodb": "mongo:", "redis": "redis:", "nats": "nats:"}
ROLES = {"controller": 13371, "coordinator": 13372, "approver": 13370}
OPSICLE = {"migrate", *ROLES, "worker"}
SETTINGS_VARIABLES = {settings.env_key(name) for name in settings.DEFAULTS}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return dict(compose["services"])


def opsicle_command(tokens: list[str]) -> str:
    """The dotted name of the function ``opsicle TOKENS…`` runs, parsed but not run."""
    command, _, _ = app.parse_args(tokens, exit_on_error=False, print_error=False)
    name = f"{command.__module__}.{command.__qualname__}"
    assert name.startswith("entrypoints.cli."), f"opsicle {' '.join(tokens)} runs {name}"
    return name


def test_the_stores_and_every_role_are_services(services: dict[str, Any]) -> None:
    assert set(services) == set(STORES) | OPSICLE
    for name, image in STORES.items():
        assert services[name]["image"].startswith(image)
    images = {services[name]["image"] for name in OPSICLE}
    assert images == {"${OPSICLE_IMAGE:-opsicle:local}"}
    for name in OPSICLE:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "packaging" / "Dockerfile"
        )
    assert services["worker"]["profiles"] == ["worker"]


def test_each_opsicle_service_runs_a_real_opsicle_command(services: dict[str, Any]) -> None:
    commands = {name: opsicle_command(services[name]["command"]) for name in OPSICLE}
    assert commands == {
        "migrate": "entrypoints.cli.config.migrations",
        "controller": "entrypoints.cli.start.controller",
        "coordinator": "entrypoints.cli.start.coordinator",
        "approver": "entrypoints.cli.start.approver",
        "worker": "entrypoints.cli.start.worker",
    }


def test_a_misspelt_command_would_be_caught() -> None:
    with pytest.raises(UnknownCommandError, match="controllr"):
        opsicle_command(["start", "controllr"])
    with pytest.raises(AssertionError, match="help_print"):
        opsicle_command(["start"])


def test_every_service_has_a_health_check_that_works_in_its_image(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        check = service["healthcheck"]
        if name == "migrate":
            assert check == {"disable": True}  # a one-shot: its exit code is its health
            continue
        test = check["test"]
        assert test[0] == "CMD", name
        assert check["retries"] >= 3, name
        if name in OPSICLE:
            assert test[1] == "opsicle", name
            assert opsicle_command(test[2:]) == "entrypoints.cli.probe.healthcheck"
    assert "--coordinators" in services["worker"]["healthcheck"]["test"]
    for role in ROLES:
        assert "--ready" in services[role]["healthcheck"]["test"]


def test_roles_start_after_healthy_stores_and_a_finished_migration(
    services: dict[str, Any],
) -> None:
    assert services["migrate"]["depends_on"] == {"mysql": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for role in ROLES:
        depends = services[role]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        for store in STORES:
            assert depends[store] == {"condition": "service_healthy"}, role
    assert services["worker"]["depends_on"] == {"coordinator": {"condition": "service_healthy"}}
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, name
            if rule["condition"] == "service_healthy":
                assert "test" in services[target]["healthcheck"], f"{name} → {target}"


def test_ports_are_published_on_loopback_where_each_role_listens(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), name
    for role, port in ROLES.items():
        assert services[role]["ports"] == [f"127.0.0.1:{port}:{port}"]
        assert services[role]["environment"]["OPSICLE_LISTEN"] == f"0.0.0.0:{port}"
    for name in ("migrate", "worker"):
        assert "ports" not in services[name]


def test_every_opsicle_variable_is_a_setting(services: dict[str, Any]) -> None:
    used = {
        key
        for name in OPSICLE
        for key in services[name]["environment"]
        if key.startswith("OPSICLE_")
    }
    assert used >= {"OPSICLE_DATABASE_URL", "OPSICLE_SECRET_KEY", "OPSICLE_COORDINATOR_URL"}
    assert used <= SETTINGS_VARIABLES, used - SETTINGS_VARIABLES
    dockerfile = (ROOT / "packaging" / "Dockerfile").read_text(encoding="utf-8")
    in_image = set(re.findall(r"\b(OPSICLE_[A-Z_]+)=", dockerfile))
    assert in_image
    assert in_image <= SETTINGS_VARIABLES, in_image - SETTINGS_VARIABLES


def test_the_server_roles_share_their_stores_key_and_data_volume(
    services: dict[str, Any],
) -> None:
    shared = (
        "OPSICLE_DATABASE_URL",
        "OPSICLE_MONGO_URL",
        "OPSICLE_REDIS_URL",
        "OPSICLE_NATS_URL",
        "OPSICLE_SECRET_KEY",
    )
    values = {tuple(services[role]["environment"][key] for key in shared) for role in ROLES}
    assert len(values) == 1
    [(database, mongo, redis, nats, key)] = values
    default_key = re.fullmatch(r"\$\{OPSICLE_SECRET_KEY:-(.+)\}", key)
    assert default_key and len(default_key[1]) >= 32  # what master_key() accepts
    assert database.startswith("mysql+asyncmy://") and "@mysql:3306/" in database
    assert (mongo, redis, nats) == (
        "mongodb://mongodb:27017",
        "redis://redis:6379/0",
        "nats://nats:4222",
    )
    assert services["migrate"]["environment"]["OPSICLE_DATABASE_URL"] == database
    for role in ROLES:
        assert services[role]["volumes"] == ["opsicle:/var/lib/opsicle"]
    assert "OPSICLE_DATA_DIR=/var/lib/opsicle" in (ROOT / "packaging" / "Dockerfile").read_text()


def test_the_worker_takes_the_token_file_opsicle_writes_as_its_environment(
    services: dict[str, Any], tmp_path: Path
) -> None:
    from adapters.http.schemas.orgs import IssuedSecret
    from entrypoints.cli.orgs import write_token_files

    [env_file] = services["worker"]["env_file"]
    assert env_file == {
        "path": "${OPSICLE_WORKER_TOKEN_FILE:-./worker-token.env}",
        "required": False,
    }
    issued = IssuedSecret(id="tok_1", org_id="org_1", name="edge-1", token="s3cret", roles=[])
    [env] = [p for p in write_token_files(tmp_path, issued) if p.suffix == ".env"]
    # compose reads NAME=value lines; each name must be a setting the worker reads.
    variables = dict(line.split("=", 1) for line in env.read_text().splitlines())
    assert variables == {"OPSICLE_TOKEN_ID": "tok_1", "OPSICLE_TOKEN": "s3cret"}
    assert set(variables) <= SETTINGS_VARIABLES


def test_the_approver_takes_every_chat_token_from_the_shell(services: dict[str, Any]) -> None:
    chats = {settings.env_key(name) for name in settings.SECRET
             if name.startswith(("telegram-", "slack-"))}
    assert "OPSICLE_SLACK_APP_TOKEN" in chats
    environment = services["approver"]["environment"]
    # A bare key: Compose passes the shell's value through, and sets nothing when it is unset.
    assert {key: environment.get(key, "missing") for key in chats} == dict.fromkeys(chats)
