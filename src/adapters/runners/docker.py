"""The Docker runner: each phase is a container on a Docker (or Podman-compatible) engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiodocker
import aiohttp

from adapters.runners.shared import (
    LineSplitter,
    check_env,
    emit,
    join_commands,
    opsicle_env,
    wait_for_exit,
)
from domain.automations import PhaseStatus
from domain.errors import FieldError, Invalid, Unavailable
from domain.ports import LineSink, Mount, OutputLine, PhaseJob, PhaseOutcome, Stream
from domain.resources import AutomationSpec

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
CONTAINER_WORKDIR = "/opsicle/work"
RUN_LABEL = "opsicle.run-id"
PHASE_LABEL = "opsicle.phase"
PROBE_SECONDS = 5.0
# Engine calls made while stopping or removing a container must not hang a worker forever.
CLEANUP_SECONDS = 30.0
# Failures that mean "the engine did not answer", as opposed to an answer we did not like.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


def default_docker_url() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


@contextlib.asynccontextmanager
async def _engine(url: str) -> AsyncIterator[aiodocker.Docker]:
    try:
        docker = aiodocker.Docker(url=url)
    except _TRANSPORT_ERRORS as exc:
        raise Unavailable(f"cannot reach the Docker engine at {url}: {exc}") from exc
    try:
        yield docker
    except _TRANSPORT_ERRORS as exc:
        raise Unavailable(f"the Docker engine at {url} did not answer: {exc}") from exc
    finally:
        await docker.close()


async def docker_available(url: str | None = None) -> bool:
    """Whether an engine answers at ``url`` (default: ``DOCKER_HOST`` or the usual socket)."""
    try:
        async with _engine(url or default_docker_url()) as docker:
            await asyncio.wait_for(docker.version(), PROBE_SECONDS)
    except (Unavailable, aiodocker.DockerError):
        return False
    return True


async def image_exists(url: str | None, image: str) -> bool:
    """Whether ``image`` is present on the engine; raises ``Unavailable`` when none answers."""
    async with _engine(url or default_docker_url()) as docker:
        return await _has_image(docker, image)


async def _has_image(docker: aiodocker.Docker, image: str) -> bool:
    try:
        await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False
        raise Unavailable(f"the Docker engine could not inspect {image}: {exc}") from exc
    return True


class DockerRunner:
    """Runs each phase in a fresh container that is removed afterwards, whatever happened.

    The run's work directory is bind-mounted at ``/opsicle/work``; containers have no network
    unless the job asks for it, and images are never pulled unless ``pull`` is set.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pull: bool = False,
        grace_seconds: float = 5.0,
    ) -> None:
        self.url = url or default_docker_url()
        self.pull = pull
        self._grace = grace_seconds
        # Removals in flight, kept referenced so a second cancellation cannot drop them.
        self._removals: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return "docker"

    def describe(self) -> str:
        images = "pulls missing images" if self.pull else "uses local images only, never pulls"
        return (
            f"docker runner, engine at {self.url}: one container per phase, no network "
            f"unless a phase asks; {images}"
        )

    async def prepare(self, spec: AutomationSpec, mounts: Sequence[Mount]) -> None:
        errors: list[FieldError] = []
        for i, m in enumerate(mounts):
            if not (m.host.startswith("/") and m.container.startswith("/")):
                errors.append(
                    FieldError(
                        f"volumeMounts[{i}]",
                        f"{m.host} -> {m.container}: both paths must be absolute",
                    )
                )
        async with _engine(self.url) as docker:
            try:
                await asyncio.wait_for(docker.version(), PROBE_SECONDS)
            except aiodocker.DockerError as exc:
                raise Unavailable(f"the Docker engine at {self.url} failed: {exc}") from exc
            checked: dict[str, bool] = {}
            for i, phase in enumerate(spec.phases):
                if phase.image not in checked:
                    checked[phase.image] = await self._ensure_image(docker, phase.image)
                if not checked[phase.image]:
                    errors.append(
                        FieldError(f"phases[{i}].image", self._missing(phase.name, phase.image))
                    )
        if errors:
            raise Invalid("the docker runner cannot run this automation", errors=tuple(errors))

    def _missing(self, phase: str, image: str) -> str:
        if self.pull:
            return (
                f"phase {phase!r}: image {image} is not on the Docker engine at "
                f"{self.url} and pulling it failed"
            )
        return (
            f"phase {phase!r}: image {image} is not on the Docker engine at {self.url}; "
            "Opsicle never pulls images unless --pull is given (or load it with "
            "`docker load` / `docker import`)"
        )

    async def _ensure_image(self, docker: aiodocker.Docker, image: str) -> bool:
        if await _has_image(docker, image):
            return True
        if not self.pull:
            return False
        with contextlib.suppress(aiodocker.DockerError):
            await docker.images.pull(image)
        return await _has_image(docker, image)

    async def run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        try:
            return await self._run_phase(job, sink)
        except _SinkFailed as failed:
            raise failed.error from None

    async def _run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        config = self._container_config(job)
        async with _engine(self.url) as docker:
            try:
                container = await docker.containers.create(config)
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    raise Invalid(
                        self._missing(job.phase.name, job.phase.image),
                        errors=(
                            FieldError("image", self._missing(job.phase.name, job.phase.image)),
                        ),
                    ) from exc
                raise Unavailable(
                    f"phase {job.phase.name!r}: the Docker engine could not "
                    f"create its container: {exc}"
                ) from exc
            try:
                return await self._run(container, job, sink)
            finally:
                # A task of its own, shielded: the container goes even if we are cancelled
                # again while removing it.
                removal = asyncio.create_task(self._remove(container.id))
                self._removals.add(removal)
                removal.add_done_callback(self._removals.discard)
                await asyncio.shield(removal)

    def _container_config(self, job: PhaseJob) -> dict[str, Any]:
        env = dict(job.env)
        env.update(opsicle_env(job, CONTAINER_WORKDIR))
        check_env(job, env)
        binds = [f"{job.workdir}:{CONTAINER_WORKDIR}"]
        binds += [f"{m.host}:{m.container}" + (":ro" if m.read_only else "") for m in job.mounts]
        host_config: dict[str, Any] = {
            "Binds": binds,
            # Output reaches Opsicle through the attach stream; a log file on the engine
            # would only be a second, unbounded copy.
            "LogConfig": {"Type": "none", "Config": {}},
        }
        if not job.network:
            host_config["NetworkMode"] = "none"
        return {
            "Image": job.phase.image,
            "Cmd": ["/bin/sh", "-c", join_commands(job.phase.commands)],
            "Env": [f"{k}={v}" for k, v in env.items()],
            "WorkingDir": CONTAINER_WORKDIR,
            "Labels": {RUN_LABEL: job.run_id, PHASE_LABEL: job.phase.name},
            "AttachStdin": False,
            "AttachStdout": True,
            "AttachStderr": True,
            "OpenStdin": False,
            "Tty": False,
            "HostConfig": host_config,
        }

    async def _run(self, container: Any, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        # Attach before starting, so no output is lost; the stream's flow control bounds what
        # is buffered, and a slow sink makes the container block on its writes.
        async with container.attach(stdout=True, stderr=True) as stream:
            await container.start()
            pump = asyncio.create_task(_pump(stream, sink))
            waiter = asyncio.create_task(container.wait())
            try:
                timed_out = await wait_for_exit(waiter, [pump], job.phase.timeout)
                if timed_out:
                    await self._stop(container, waiter)
                else:
                    # The stream ends once the container's output is closed.
                    await pump
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._stop(container, waiter)
                raise
            finally:
                for task in (pump, waiter):
                    task.cancel()
                await asyncio.gather(pump, waiter, return_exceptions=True)
        if timed_out:
            return PhaseOutcome(
                PhaseStatus.TIMED_OUT, None, f"timed out after {job.phase.timeout}s"
            )
        status = waiter.result()
        code = int(status.get("StatusCode", -1))
        if code == 0:
            return PhaseOutcome(PhaseStatus.SUCCEEDED, 0)
        error = (status.get("Error") or {}).get("Message") or ""
        return PhaseOutcome(PhaseStatus.FAILED, code, error or f"exited with status {code}")

    async def _stop(self, container: Any, waiter: asyncio.Task[Any]) -> None:
        """SIGTERM to every process in the container, a grace period, then SIGKILL."""
        with contextlib.suppress(aiodocker.DockerError, *_TRANSPORT_ERRORS):
            await asyncio.wait_for(container.kill(signal="SIGTERM"), CLEANUP_SECONDS)
            # The shell is PID 1, which ignores SIGTERM unless it traps it, and the engine
            # signals only PID 1: tell the rest of the phase's processes as well.
            signaller = await container.exec(
                ["/bin/sh", "-c", "kill -TERM -1"], stdout=False, stderr=False
            )
            await asyncio.wait_for(signaller.start(detach=True), CLEANUP_SECONDS)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._grace)
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(aiodocker.DockerError, *_TRANSPORT_ERRORS):
                await asyncio.wait_for(container.kill(signal="SIGKILL"), CLEANUP_SECONDS)

    async def _remove(self, container_id: str) -> None:
        async with _engine(self.url) as docker:
            container = docker.containers.container(container_id)
            try:
                await asyncio.wait_for(container.delete(force=True), CLEANUP_SECONDS)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise Unavailable(
                        f"could not remove container {container_id[:12]}: {exc}"
                    ) from exc


class _SinkFailed(Exception):
    """The sink's own failure, kept apart from engine errors so it is not taken for one."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def _pump(stream: Any, sink: LineSink) -> None:
    async def guarded(line: OutputLine) -> None:
        try:
            await sink(line)
        except Exception as exc:
            raise _SinkFailed(exc) from exc

    await _read(stream, guarded)


async def _read(stream: Any, sink: LineSink) -> None:
    splitters = {1: LineSplitter(), 2: LineSplitter()}
    streams = {1: Stream.STDOUT, 2: Stream.STDERR}
    while (message := await stream.read_out()) is not None:
        kind = 2 if message.stream == 2 else 1
        await emit(sink, streams[kind], splitters[kind].feed(message.data))
    for kind, splitter in splitters.items():
        await emit(sink, streams[kind], splitter.flush())
