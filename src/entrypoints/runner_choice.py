"""Choosing the runner for a run: Docker when asked or when every image is there, else a process."""

from __future__ import annotations

from collections.abc import Callable

from adapters.runners.docker import DockerRunner, docker_available, image_exists
from adapters.runners.process import ProcessRunner
from domain.ports import Runner
from domain.resources import AutomationSpec


async def choose_runner(
    choice: str,
    spec: AutomationSpec,
    *,
    docker_host: str | None,
    pull: bool,
    grace_seconds: float,
    note: Callable[[str], None],
    process: ProcessRunner | None = None,
) -> Runner:
    """The runner for ``spec``: ``process`` or ``docker`` as asked; ``auto`` takes Docker when
    an engine answers and every image is present locally (air-gapped: nothing is pulled
    unless asked), and a local process otherwise. ``note`` hears one line saying why.
    ``process`` is the process runner to use (a worker keeps one, so that bubblewrap is
    probed once, not before every run)."""
    if process is None:
        process = ProcessRunner(grace_seconds=grace_seconds)
    if choice == "process":
        note(f"runner: process, as asked; {process.describe()}")
        return process
    docker = DockerRunner(docker_host, pull=pull, grace_seconds=grace_seconds)
    if choice == "docker":
        note(f"runner: docker, as asked; {docker.describe()}")
        return docker
    if not await docker_available(docker.url):
        reason = f"no Docker engine answers at {docker.url}"
    else:
        images = sorted({p.image for p in spec.phases})
        missing = [i for i in images if not await image_exists(docker.url, i)]
        if not missing:
            note(f"runner: docker (engine at {docker.url}; every image is present locally)")
            return docker
        reason = f"image {', '.join(missing)} is not present locally"
    note(f"runner: process ({reason}); {process.describe()}")
    return process
