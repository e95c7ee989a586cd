"""The Opsicle image (packaging/Dockerfile) built on the local engine and run without a network."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, docker_host
from tests.support import require_service

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

# Built from this host's glibc by packaging/base-image.sh: nothing here can be pulled.
BASE = "opsicle-base:local"


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image of the frozen executable on the local base, removed afterwards."""
    binary = Path(os.environ.get("OPSICLE_BINARY", ROOT / "dist" / "opsicle"))
    require_service("the frozen executable", binary.is_file(), f"{binary}: run packaging/build.sh")
    host = docker_host()
    require_service(
        "Docker engine",
        host is not None and shutil.which("docker") is not None,
        "run .ci/docker-up",
    )
    os.environ["DOCKER_HOST"] = str(host)
    if docker("image", "inspect", BASE).returncode != 0:
        built = subprocess.run(
            [str(ROOT / "packaging" / "base-image.sh"), BASE],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert built.returncode == 0, built.stderr
    context = tmp_path_factory.mktemp("image-context")
    shutil.copy2(binary, context / "opsicle")
    tag = f"opsicle-test:{secrets.token_hex(4)}"
    build = docker(
        "build",
        "--network",
        "none",
        "-q",
        "-f",
        str(ROOT / "packaging" / "Dockerfile"),
        "--build-arg",
        f"BASE={BASE}",
        "-t",
        tag,
        str(context),
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    try:
        yield tag
    finally:
        docker("image", "rm", "-f", tag)


def test_the_image_runs_opsicle_as_a_non_root_user(image: str) -> None:
    [config] = json.loads(docker("image", "inspect", image).stdout)
    assert config["Config"]["Entrypoint"] == ["opsicle"]
    assert config["Config"]["User"] == "10001:10001"
    assert set(config["Config"]["ExposedPorts"]) == {f"{p}/tcp" for p in range(13370, 13374)}
    assert config["Config"]["Healthcheck"]["Test"][:3] == ["CMD", "opsicle", "healthcheck"]
    version = docker("run", "--rm", "--network", "none", image, "version", "-o", "json")
    assert version.returncode == 0, version.stderr
    assert set(json.loads(version.stdout)) == {"version", "commit", "buildDate"}


def test_a_role_in_the_image_becomes_healthy_and_stops_cleanly(image: str) -> None:
    name = f"opsicle-test-{secrets.token_hex(4)}"
    started = docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--health-interval",
        "1s",
        "--health-start-period",
        "60s",
        "-e",
        "OPSICLE_LISTEN=0.0.0.0:13372",
        image,
        "start",
        "coordinator",
    )
    assert started.returncode == 0, started.stderr
    try:
        # The image's own HEALTHCHECK (opsicle healthcheck on OPSICLE_LISTEN) decides this.
        deadline = time.monotonic() + 120
        while (
            status := docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        ) != "healthy":
            assert status == "starting", docker("logs", name).stderr
            assert time.monotonic() < deadline, docker("logs", name).stderr
            time.sleep(1)
        ready = docker("exec", name, "opsicle", "healthcheck", "--ready")
        assert ready.returncode == 0, ready.stderr
        assert ready.stdout.strip() == "http://127.0.0.1:13372/readyz: 200"
        processes = docker("top", name, "-o", "pid,uid").stdout.splitlines()[1:]
        assert processes
        assert {line.split()[1] for line in processes} == {"10001"}
        stopped = docker("stop", "-t", "30", name, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        assert state["ExitCode"] == 0, docker("logs", name).stderr
        assert "Traceback" not in docker("logs", name).stderr
    finally:
        docker("rm", "-f", name)
