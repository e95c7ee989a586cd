"""The Runner contract, run against the process runner (sandboxed and not) and the Docker runner."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiodocker
import attrs
import pytest

from adapters.runners.docker import (
    RUN_LABEL,
    DockerRunner,
    default_docker_url,
    docker_available,
    image_exists,
)
from adapters.runners.process import ProcessRunner
from adapters.runners.shared import MAX_LINE_BYTES
from domain.automations import PhaseStatus
from domain.errors import Invalid
from domain.ports import Mount, OutputLine, PhaseJob, PhaseOutcome, Runner, Stream
from domain.resources import AutomationSpec, Phase
from tests.support import require_service

# Short, so stopping a phase costs well under a second per test.
GRACE = 0.3
IMAGE = "busybox:latest"
PROJECT_DOCKER_SOCKET = "/run/opsicle-docker/docker.sock"
# Carried by every process a phase starts; lets the test find leftovers on the host by their
# environment, whatever PID namespace they live in.
MARKER = "OPSICLE_TEST_MARKER"


@attrs.frozen
class Leg:
    """A runner under test and what it can promise."""

    name: str
    runner: Runner
    sandboxed: bool
    docker_url: str | None = None
    run_id: str = attrs.field(factory=lambda: f"test-{uuid.uuid4().hex[:12]}")

    def mount_target(self, host: Path) -> str:
        """Where a phase sees a mount: elsewhere when the runner can move it, else in place."""
        if self.sandboxed:
            return f"/opsicle-test-{uuid.uuid4().hex[:8]}/data"
        return str(host)

    @property
    def host_pids(self) -> bool:
        """Whether ``$$`` inside a phase is a PID on this host (no PID namespace)."""
        return self.docker_url is None and not self.sandboxed


def _docker_url() -> str:
    if os.environ.get("DOCKER_HOST"):
        return default_docker_url()
    if Path(PROJECT_DOCKER_SOCKET).exists():
        return f"unix://{PROJECT_DOCKER_SOCKET}"
    return default_docker_url()


# The engine is asked once per session; the answer is kept here.
_docker_probe: dict[str, tuple[bool, bool]] = {}


@pytest.fixture
async def docker_url() -> str:
    return await _require_docker()


async def _require_docker() -> str:
    url = _docker_url()
    if url not in _docker_probe:
        up = await docker_available(url)
        _docker_probe[url] = (up, up and await image_exists(url, IMAGE))
    up, has_image = _docker_probe[url]
    require_service("Docker engine", up, f"nothing answers at {url}; run .ci/docker-up")
    require_service(f"image {IMAGE}", has_image, f"not on the engine at {url}; run .ci/docker-up")
    return url


def _process_leg(sandbox: bool | None) -> Leg:
    runner = ProcessRunner(sandbox=sandbox, grace_seconds=GRACE)
    return Leg("process" if sandbox is None else "process-unsandboxed", runner, runner.sandboxed)


@pytest.fixture(
    params=["process", "process-unsandboxed", pytest.param("docker", marks=pytest.mark.docker)]
)
async def leg(request: pytest.FixtureRequest) -> AsyncIterator[Leg]:
    if request.param == "process":
        made = _process_leg(None)
        require_service("bubblewrap", made.sandboxed, "install Debian's bubblewrap package")
        yield made
    elif request.param == "process-unsandboxed":
        yield _process_leg(False)
    else:
        url = await _require_docker()
        made = Leg("docker", DockerRunner(url, grace_seconds=GRACE), sandboxed=True, docker_url=url)
        yield made
        assert await _containers_of(url, made.run_id) == [], "a container was left behind"


async def _containers_of(url: str, run_id: str) -> list[str]:
    async with aiodocker.Docker(url=url) as docker:
        found = await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"{RUN_LABEL}={run_id}"]})
        )
    return [c.id for c in found]


# ---------------------------------------------------------------- helpers


def _job(
    leg: Leg,
    workdir: Path,
    commands: Sequence[str],
    *,
    env: Mapping[str, str] = {},
    timeout: int = 30,
    mounts: Sequence[Mount] = (),
    name: str = "main",
    marker: str = "",
) -> PhaseJob:
    return PhaseJob(
        run_id=leg.run_id,
        phase=Phase(name=name, image=IMAGE, commands=tuple(commands), timeout=timeout),
        env={**env, MARKER: marker or uuid.uuid4().hex},
        workdir=str(workdir),
        mounts=tuple(mounts),
    )


class Collected:
    """A sink that keeps every line, and wakes a waiter when a line starts with a prefix."""

    def __init__(self) -> None:
        self.lines: list[OutputLine] = []
        self.seen: dict[str, asyncio.Event] = {}

    async def __call__(self, line: OutputLine) -> None:
        self.lines.append(line)
        for prefix, event in self.seen.items():
            if line.text.startswith(prefix):
                event.set()

    def on(self, prefix: str) -> asyncio.Event:
        return self.seen.setdefault(prefix, asyncio.Event())

    def texts(self, stream: Stream | None = None) -> list[str]:
        return [ln.text for ln in self.lines if stream is None or ln.stream == stream]

    def value(self, key: str) -> str:
        return next(t.split("=", 1)[1] for t in self.texts() if t.startswith(f"{key}="))


async def _run(
    leg: Leg,
    workdir: Path,
    *commands: str,
    env: Mapping[str, str] = {},
    mounts: Sequence[Mount] = (),
    name: str = "main",
    marker: str = "",
    timeout: int = 30,  # noqa: ASYNC109 (the phase's timeout, not this call's)
) -> tuple[PhaseOutcome, Collected]:
    sink = Collected()
    job = _job(
        leg, workdir, commands, env=env, timeout=timeout, mounts=mounts, name=name, marker=marker
    )
    outcome = await asyncio.wait_for(leg.runner.run_phase(job, sink), 120)
    return outcome, sink


def _with_marker(marker: str) -> list[int]:
    """PIDs of live processes on this host whose environment carries ``marker``."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


async def _assert_nothing_left(leg: Leg, marker: str, pids: Sequence[int] = ()) -> None:
    # Killed processes take a moment to be reaped by the kernel; allow a short settle.
    for _ in range(20):
        left = _with_marker(marker)
        if not left:
            break
        await asyncio.sleep(0.05)
    assert left == [], f"processes left behind: {left}"
    if leg.host_pids:
        # Without a PID namespace the PIDs the phase printed are this host's: check each.
        for pid in pids:
            assert not _environ_has(pid, marker), f"process {pid} is still running"
    if leg.docker_url is not None:
        assert await _containers_of(leg.docker_url, leg.run_id) == []


def _environ_has(pid: int, marker: str) -> bool:
    try:
        return f"{MARKER}={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


# ---------------------------------------------------------------- output and environment


async def test_output_lines_arrive_in_order_on_their_stream(leg: Leg, tmp_path: Path) -> None:
    outcome, sink = await _run(
        leg, tmp_path, "echo one; echo two >&2", "echo three", "printf 'no newline at end'"
    )

    assert outcome == PhaseOutcome(PhaseStatus.SUCCEEDED, 0)
    assert sink.texts(Stream.STDOUT) == ["one", "three", "no newline at end"]
    assert sink.texts(Stream.STDERR) == ["two"]


async def test_variables_arrive_verbatim_never_interpreted(leg: Leg, tmp_path: Path) -> None:
    tricky = 'it\'s "quoted" $(touch pwned) `touch pwned2` ${HOME} and  spaces\nsecond line;'

    outcome, sink = await _run(
        leg,
        tmp_path,
        'printf "%s" "$TRICKY" > value.txt',
        'echo "run=$OPSICLE_RUN_ID"; echo "phase=$OPSICLE_PHASE"',
        env={"TRICKY": tricky},
        name="show-env",
    )

    assert outcome.status is PhaseStatus.SUCCEEDED
    assert (tmp_path / "value.txt").read_text() == tricky
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()
    assert sink.value("run") == leg.run_id
    assert sink.value("phase") == "show-env"


async def test_the_workers_environment_does_not_leak(
    leg: Leg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSICLE_TEST_WORKER_SECRET", "hunter2")

    outcome, sink = await _run(leg, tmp_path, "env")

    assert outcome.status is PhaseStatus.SUCCEEDED
    assert not [t for t in sink.texts() if "hunter2" in t]


# ---------------------------------------------------------------- commands and exit codes


async def test_commands_stop_at_the_first_that_fails(leg: Leg, tmp_path: Path) -> None:
    outcome, sink = await _run(leg, tmp_path, "echo first", "exit 3", "echo never")

    assert outcome.status is PhaseStatus.FAILED
    assert outcome.exit_code == 3
    assert sink.texts() == ["first"]


async def test_each_command_is_joined_whole(leg: Leg, tmp_path: Path) -> None:
    outcome, sink = await _run(
        leg,
        tmp_path,
        "false || echo rescued",
        "echo second # a comment",
        "mkdir sub && cd sub",
        'echo "in=$(basename "$PWD")"',
    )

    assert outcome.status is PhaseStatus.SUCCEEDED
    assert sink.texts() == ["rescued", "second", "in=sub"]


@pytest.mark.parametrize(
    ("command", "status", "code"),
    [
        ("true", PhaseStatus.SUCCEEDED, 0),
        ("false", PhaseStatus.FAILED, 1),
        ("exit 42", PhaseStatus.FAILED, 42),
    ],
)
async def test_exit_codes(
    leg: Leg, tmp_path: Path, command: str, status: PhaseStatus, code: int
) -> None:
    outcome, _ = await _run(leg, tmp_path, command)

    assert (outcome.status, outcome.exit_code) == (status, code)


# ---------------------------------------------------------------- files shared between phases


async def test_the_work_directory_is_shared_between_phases(leg: Leg, tmp_path: Path) -> None:
    first, _ = await _run(
        leg,
        tmp_path,
        'echo "from the first phase" > note.txt',
        'test "$PWD" = "$OPSICLE_WORKDIR"',
        name="write",
    )
    second, sink = await _run(leg, tmp_path, "cat note.txt", name="read")

    assert first.status is PhaseStatus.SUCCEEDED
    assert second.status is PhaseStatus.SUCCEEDED
    assert sink.texts() == ["from the first phase"]


async def test_a_mount_written_by_one_phase_is_seen_by_the_next(leg: Leg, tmp_path: Path) -> None:
    host = tmp_path / "data"
    host.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    target = leg.mount_target(host)
    mounts = [Mount(host=str(host), container=target)]
    spec = AutomationSpec(phases=(Phase("write", IMAGE, ("true",)),))
    await leg.runner.prepare(spec, mounts)

    first, _ = await _run(leg, workdir, f"echo shared > {target}/file", mounts=mounts)
    second, sink = await _run(leg, workdir, f"cat {target}/file", mounts=mounts)

    assert (first.status, second.status) == (PhaseStatus.SUCCEEDED, PhaseStatus.SUCCEEDED)
    assert sink.texts() == ["shared"]
    assert (host / "file").read_text() == "shared\n"


async def test_a_read_only_mount_cannot_be_written(leg: Leg, tmp_path: Path) -> None:
    if not leg.sandboxed:
        pytest.skip("an unsandboxed runner refuses read-only mounts (tested below)")
    host = tmp_path / "ro"
    host.mkdir()
    target = leg.mount_target(host)
    mounts = [Mount(host=str(host), container=target, read_only=True)]

    outcome, _ = await _run(leg, tmp_path, f"echo no > {target}/file", mounts=mounts)

    assert outcome.status is PhaseStatus.FAILED
    assert not (host / "file").exists()


# ---------------------------------------------------------------- stopping phases

# Prints the shell's and a background child's PIDs, then waits for the child forever.
_LINGER = 'echo "shell=$$"; sleep 1000 & echo "child=$!"; wait'


async def test_a_timed_out_phase_is_stopped_with_everything_it_started(
    leg: Leg, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex

    outcome, sink = await _run(leg, tmp_path, _LINGER, timeout=1, marker=marker)

    assert outcome.status is PhaseStatus.TIMED_OUT
    pids = [int(sink.value("shell")), int(sink.value("child"))]
    await _assert_nothing_left(leg, marker, pids)


async def test_the_phase_gets_sigterm_before_the_kill(leg: Leg, tmp_path: Path) -> None:
    outcome, sink = await _run(
        leg, tmp_path, "trap 'echo got-TERM; exit 9' TERM; sleep 1000 & wait", timeout=1
    )

    assert outcome.status is PhaseStatus.TIMED_OUT
    assert "got-TERM" in sink.texts()


async def test_a_phase_ignoring_sigterm_is_killed_after_the_grace_period(
    leg: Leg, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex

    outcome, sink = await _run(leg, tmp_path, f"trap '' TERM; {_LINGER}", timeout=1, marker=marker)

    assert outcome.status is PhaseStatus.TIMED_OUT
    await _assert_nothing_left(leg, marker, [int(sink.value("shell")), int(sink.value("child"))])


async def test_cancelling_the_caller_stops_the_phase_and_reraises(leg: Leg, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    sink = Collected()
    started = sink.on("child=")
    job = _job(leg, tmp_path, [_LINGER], timeout=600, marker=marker)
    task = asyncio.create_task(leg.runner.run_phase(job, sink))
    await asyncio.wait_for(started.wait(), 60)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    await _assert_nothing_left(leg, marker, [int(sink.value("shell")), int(sink.value("child"))])


async def test_a_failing_sink_stops_the_phase_and_its_error_propagates(
    leg: Leg, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex

    async def broken(line: OutputLine) -> None:
        # An OSError on purpose: it must not pass for the engine or the pipes failing.
        raise ConnectionError("log store is down")

    job = _job(leg, tmp_path, ["echo hello; sleep 1000 & wait"], timeout=600, marker=marker)
    with pytest.raises(ConnectionError, match="log store is down"):
        await asyncio.wait_for(leg.runner.run_phase(job, broken), 60)
    await _assert_nothing_left(leg, marker)


async def test_a_phase_that_exits_leaves_nothing_running(leg: Leg, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex

    outcome, sink = await _run(
        leg, tmp_path, 'sleep 1000 > /dev/null 2>&1 & echo "child=$!"', marker=marker
    )

    assert outcome.status is PhaseStatus.SUCCEEDED
    await _assert_nothing_left(leg, marker, [int(sink.value("child"))])


async def test_a_process_that_left_the_group_is_stopped_too(leg: Leg, tmp_path: Path) -> None:
    if not leg.sandboxed:
        pytest.skip("without a PID namespace a process that calls setsid escapes; documented")
    marker = uuid.uuid4().hex

    outcome, _ = await _run(
        leg,
        tmp_path,
        "setsid sleep 1000 > /dev/null 2>&1 < /dev/null &",
        "echo started",
        marker=marker,
    )

    assert outcome.status is PhaseStatus.SUCCEEDED
    await _assert_nothing_left(leg, marker)


# ---------------------------------------------------------------- isolation


async def test_there_is_no_network(leg: Leg, tmp_path: Path) -> None:
    if not leg.sandboxed:
        pytest.skip("an unsandboxed process shares the host's network; describe() says so")

    outcome, sink = await _run(leg, tmp_path, "cat /proc/net/dev")

    assert outcome.status is PhaseStatus.SUCCEEDED
    interfaces = [t.split(":")[0].strip() for t in sink.texts()[2:]]
    assert interfaces == ["lo"]


# ---------------------------------------------------------------- large output


async def test_a_very_long_line_arrives_in_bounded_pieces(leg: Leg, tmp_path: Path) -> None:
    size = 3 * MAX_LINE_BYTES + 1000

    outcome, sink = await _run(
        leg, tmp_path, f"head -c {size} /dev/zero | tr '\\0' x; echo; echo after"
    )

    assert outcome.status is PhaseStatus.SUCCEEDED
    texts = sink.texts()
    assert [len(t) for t in texts[:-1]] == [MAX_LINE_BYTES] * 3 + [1000]
    assert set("".join(texts[:-1])) == {"x"}
    assert texts[-1] == "after"


async def test_a_large_output_is_streamed_with_bounded_memory(leg: Leg, tmp_path: Path) -> None:
    line = "0123456789" * 9 + "abcdefghi"  # 99 characters, 100 bytes with the newline
    total = 20_000_000
    count = 0
    longest = 0

    async def counting(out: OutputLine) -> None:
        nonlocal count, longest
        count += 1
        longest = max(longest, len(out.text))

    job = _job(leg, tmp_path, [f"yes {line} | head -c {total}"])
    tracemalloc.start()
    try:
        outcome = await asyncio.wait_for(leg.runner.run_phase(job, counting), 300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert outcome.status is PhaseStatus.SUCCEEDED
    assert (count, longest) == (total // 100, 99)
    # 20 MB went through; what the runner held at any time stays far below it.
    assert peak < 4_000_000, f"peak traced memory {peak} bytes"


# ---------------------------------------------------------------- prepare


async def test_the_docker_runner_refuses_a_missing_image_naming_the_phase(docker_url: str) -> None:
    runner = DockerRunner(docker_url, grace_seconds=GRACE)
    image = f"opsicle-test-missing-{uuid.uuid4().hex[:8]}:none"
    spec = AutomationSpec(
        phases=(Phase("fine", IMAGE, ("true",)), Phase("deploy", image, ("true",)))
    )

    with pytest.raises(Invalid) as caught:
        await runner.prepare(spec, ())

    message = str(caught.value)
    assert "'deploy'" in message
    assert image in message
    assert "--pull" in message
    assert "'fine'" not in message


async def test_the_docker_runner_refuses_to_run_a_missing_image(
    docker_url: str, tmp_path: Path
) -> None:
    leg = Leg("docker", DockerRunner(docker_url, grace_seconds=GRACE), True, docker_url)
    job = attrs.evolve(
        _job(leg, tmp_path, ["true"], name="deploy"),
        phase=Phase("deploy", f"opsicle-test-missing-{uuid.uuid4().hex[:8]}:x", ("true",)),
    )

    with pytest.raises(Invalid, match="'deploy'"):
        await leg.runner.run_phase(job, Collected())
    assert await _containers_of(docker_url, leg.run_id) == []


async def test_docker_helpers_report_an_absent_engine(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-engine.sock"

    assert await docker_available(url) is False


async def test_the_unsandboxed_runner_refuses_a_mount_it_cannot_place(tmp_path: Path) -> None:
    runner = ProcessRunner(sandbox=False)
    spec = AutomationSpec(phases=(Phase("backup", IMAGE, ("true",)),))
    moved = Mount(host=str(tmp_path), container="/srv/data")

    with pytest.raises(Invalid) as caught:
        await runner.prepare(spec, [moved])

    message = str(caught.value)
    assert "'backup'" in message
    assert str(tmp_path) in message
    assert "/srv/data" in message
    assert "bubblewrap" in message
    assert "docker runner" in message
    await runner.prepare(spec, [Mount(host=str(tmp_path), container=str(tmp_path))])


async def test_the_unsandboxed_runner_refuses_a_read_only_mount(tmp_path: Path) -> None:
    runner = ProcessRunner(sandbox=False)
    spec = AutomationSpec(phases=(Phase("backup", IMAGE, ("true",)),))

    with pytest.raises(Invalid, match="read-only"):
        await runner.prepare(spec, [Mount(str(tmp_path), str(tmp_path), read_only=True)])


async def test_without_pidfds_the_process_runner_waits_for_phases_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfds(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open is not implemented (Linux before 5.3)")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    leg = _process_leg(False)
    outcome, sink = await _run(leg, tmp_path, "sleep 0.2; echo done; exit 3")
    assert outcome == PhaseOutcome(PhaseStatus.FAILED, 3, "exited with status 3")
    assert sink.texts(Stream.STDOUT) == ["done"]


def test_without_bubblewrap_the_process_runner_says_it_is_unsandboxed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    runner = ProcessRunner()

    assert runner.sandboxed is False
    assert "unsandboxed (bubblewrap not found)" in runner.describe()


@pytest.mark.skipif(not Path("/var/run").is_symlink(), reason="needs /var/run to be a symlink")
async def test_the_sandboxed_runner_refuses_a_target_behind_a_symlink(tmp_path: Path) -> None:
    runner = ProcessRunner(grace_seconds=GRACE)
    require_service("bubblewrap", runner.sandboxed, "install Debian's bubblewrap package")
    spec = AutomationSpec(phases=(Phase("backup", IMAGE, ("true",)),))

    await runner.prepare(spec, [Mount(str(tmp_path), "/opsicle-test-new/data")])
    with pytest.raises(Invalid, match="'backup'"):
        await runner.prepare(spec, [Mount(str(tmp_path), "/var/run/opsicle-test-new/data")])
