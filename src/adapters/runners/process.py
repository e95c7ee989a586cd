"""The process runner: each phase is `/bin/sh -c` on this host, inside bubblewrap when present."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from adapters.runners.shared import (
    READ_CHUNK_BYTES,
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

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How long to wait for output still in the pipes once the phase's processes are gone.
DRAIN_SECONDS = 2.0
# Inside the sandbox /tmp is a private, empty tmpfs, not the host's shared one.
SANDBOX_TMP = "/tmp"  # noqa: S108


class ProcessRunner:
    """Runs phases as local processes; ``sandbox`` None means "bubblewrap when it works".

    The phase's environment is built from scratch (never the worker's own, which may hold
    secrets), and the phase runs in its own session so the whole process group can be
    signalled. With bubblewrap the phase also gets its own PID namespace, so anything it
    starts dies with it even if it left the process group.
    """

    def __init__(
        self,
        *,
        sandbox: bool | None = None,
        grace_seconds: float = 5.0,
        bwrap: str | None = None,
    ) -> None:
        self._want_sandbox = sandbox
        self._grace = grace_seconds
        self._bwrap = bwrap or shutil.which("bwrap")
        self._usable: bool | None = None

    @property
    def name(self) -> str:
        return "process"

    @property
    def sandboxed(self) -> bool:
        """Whether phases run inside bubblewrap (probing it once, if not done yet)."""
        if self._want_sandbox is False:
            return False
        if self._usable is None:
            self._usable = self._probe()
        return self._usable

    def describe(self) -> str:
        if self.sandboxed:
            return (
                f"process runner, sandboxed with bubblewrap ({self._bwrap}): read-only "
                "host, private /tmp, no network unless a phase asks"
            )
        return (
            f"process runner, unsandboxed ({self._why_unsandboxed()}): phases run as this "
            "user with full access to the host and its network"
        )

    def _probe(self) -> bool:
        if self._bwrap is None:
            return False
        try:
            done = subprocess.run(
                [self._bwrap, *self._isolation(network=False), "--", "/bin/true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0

    async def _is_sandboxed(self) -> bool:
        if self._want_sandbox is not False and self._usable is None:
            # The probe runs a process; keep it off the event loop.
            self._usable = await asyncio.to_thread(self._probe)
        return self.sandboxed

    async def prepare(self, spec: AutomationSpec, mounts: Sequence[Mount]) -> None:
        sandboxed = await self._checked_sandbox()
        errors = _mount_errors(spec, mounts, sandboxed=sandboxed, why=self._why_unsandboxed())
        if errors:
            raise Invalid("the process runner cannot provide these mounts", errors=errors)

    def _why_unsandboxed(self) -> str:
        if self._want_sandbox is False:
            return "sandbox disabled"
        if self._bwrap is None:
            return "bubblewrap not found"
        return f"bubblewrap at {self._bwrap} does not work here"

    async def _checked_sandbox(self) -> bool:
        sandboxed = await self._is_sandboxed()
        if self._want_sandbox is True and not sandboxed:
            raise Unavailable(f"a sandbox was required but this is a {self.describe()}")
        return sandboxed

    async def run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        sandboxed = await self._checked_sandbox()
        script = join_commands(job.phase.commands)
        argv = ["/bin/sh", "-c", script]
        if sandboxed:
            assert self._bwrap is not None
            argv = [self._bwrap, *self._sandbox_args(job), "--", *argv]
        env = _environment(job)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            # Our own pipes rather than asyncio's: the wait then ends when the shell exits,
            # not when the last process holding its stdout does, and closing them is ours to
            # do when something that escaped the group keeps them open. Popen starts it as
            # asyncio's subprocess support does (synchronously); ``_exit_status`` waits.
            proc = subprocess.Popen(  # noqa: ASYNC220
                argv,
                cwd=job.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            return PhaseOutcome(PhaseStatus.FAILED, None, f"could not start the phase: {exc}")
        finally:
            os.close(out_w)
            os.close(err_w)
        group = _Group(proc.pid, spare=proc.pid if sandboxed else None)
        # One sink call at a time: callers need not make their sink safe for interleaving.
        lock = asyncio.Lock()

        async def one_at_a_time(line: OutputLine) -> None:
            async with lock:
                await sink(line)

        pipes = [_Pipe(out_r, Stream.STDOUT), _Pipe(err_r, Stream.STDERR)]
        pumps = [asyncio.create_task(p.pump(one_at_a_time)) for p in pipes]
        waiter = asyncio.create_task(_exit_status(proc))
        timed_out = False
        try:
            timed_out = await wait_for_exit(waiter, pumps, job.phase.timeout)
            if timed_out:
                await self._stop(group, waiter)
        except BaseException:
            # Cancelled, or the sink failed: stop the phase the same way, then re-raise.
            with contextlib.suppress(Exception):
                await self._stop(group, waiter)
            raise
        finally:
            group.kill(signal.SIGKILL)
            failure = await _finish(waiter, pumps, pipes)
        if failure is not None:
            raise failure
        if timed_out:
            return PhaseOutcome(
                PhaseStatus.TIMED_OUT, None, f"timed out after {job.phase.timeout}s"
            )
        return _outcome(waiter.result())

    async def _stop(self, group: _Group, waiter: asyncio.Task[int]) -> None:
        """SIGTERM to everything the phase started, a grace period, then SIGKILL."""
        group.kill(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._grace)
        except TimeoutError:
            pass
        finally:
            group.kill(signal.SIGKILL)

    def _isolation(self, *, network: bool, targets: Sequence[str] = ()) -> list[str]:
        args = [
            *_root_args(targets),
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            SANDBOX_TMP,
            "--unshare-all",
            "--die-with-parent",
        ]
        if network:
            args.append("--share-net")
        return args

    def _sandbox_args(self, job: PhaseJob) -> list[str]:
        targets = [m.container for m in job.mounts]
        args = self._isolation(network=job.network, targets=targets)
        args += ["--bind", job.workdir, job.workdir]
        for m in job.mounts:
            args += ["--ro-bind" if m.read_only else "--bind", m.host, m.container]
        if _rebuilt(targets):
            # The rebuilt root is a tmpfs; once the mount points exist it becomes read-only too.
            args += ["--remount-ro", "/"]
        args += ["--chdir", job.workdir]
        return args


def _rebuilt(targets: Sequence[str]) -> set[str]:
    """Directories to rebuild (not bind whole) so the missing mount targets can be created.

    The sandbox shows this host's root read-only, where no new mount point can be made;
    each existing ancestor of a missing target is recreated instead, its entries bound one
    by one, leaving room for the new directory.
    """
    rebuilt: set[str] = set()
    for target in targets:
        path = Path(os.path.normpath(target))
        if path.exists() or Path(SANDBOX_TMP) in path.parents:
            continue
        present = path.parent
        while not present.exists():
            present = present.parent
        rebuilt.update(str(p) for p in (present, *present.parents))
    return rebuilt


def _root_args(targets: Sequence[str]) -> list[str]:
    rebuilt = _rebuilt(targets)
    if not rebuilt:
        return ["--ro-bind", "/", "/"]
    args: list[str] = []
    _rebuild("/", rebuilt, args)
    return args


def _rebuild(directory: str, rebuilt: set[str], args: list[str]) -> None:
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        path = entry.path
        if path in ("/proc", "/dev", SANDBOX_TMP):
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(path), path]
        elif path in rebuilt and entry.is_dir():
            args += ["--dir", path]
            _rebuild(path, rebuilt, args)
        else:
            args += ["--ro-bind", path, path]


def _mount_errors(
    spec: AutomationSpec, mounts: Sequence[Mount], *, sandboxed: bool, why: str
) -> tuple[FieldError, ...]:
    first = spec.phases[0].name if spec.phases else "(none)"
    errors = []
    for i, m in enumerate(mounts):
        problem = _mount_problem(m, sandboxed=sandboxed, why=why)
        if problem:
            errors.append(FieldError(f"volumeMounts[{i}]", f"phase {first!r}: {problem}"))
    return tuple(errors)


def _mount_problem(m: Mount, *, sandboxed: bool, why: str) -> str | None:
    where = f"mount {m.host} -> {m.container}"
    instead = "install bubblewrap or use the docker runner"
    if not (os.path.isabs(m.host) and os.path.isabs(m.container)):
        return f"{where}: both paths must be absolute"
    if not os.path.exists(m.host):
        return f"{where}: host path {m.host} does not exist"
    if not sandboxed and os.path.normpath(m.host) != os.path.normpath(m.container):
        return (
            f"{where} cannot be provided: the process runner is unsandboxed ({why}), so a "
            f"mount's container path must equal its host path; {instead}"
        )
    if not sandboxed and m.read_only:
        return (
            f"{where} cannot be made read-only: the process runner is unsandboxed ({why}); "
            f"{instead}"
        )
    if sandboxed and not _mountable(m.container):
        return (
            f"{where}: a symlink on this host leads into the container path, so the sandbox "
            "cannot create it; mount it elsewhere or use the docker runner"
        )
    return None


def _mountable(container: str) -> bool:
    # A missing target can be made unless a symlink leads into a directory bound whole.
    path = Path(os.path.normpath(container))
    if path.exists() or Path(SANDBOX_TMP) in path.parents:
        return True
    present = path.parent
    while not present.exists():
        present = present.parent
    return os.path.realpath(present) == str(present)


def _environment(job: PhaseJob) -> dict[str, str]:
    env = {"PATH": BASE_PATH, "HOME": job.workdir, "LANG": "C.UTF-8"}
    env.update(job.env)
    env.update(opsicle_env(job, job.workdir))
    check_env(job, env)
    return env


async def _exit_status(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit, reap it and return its status.

    The exit is learnt from the process's pidfd in the event loop: asyncio's own subprocess
    support (before Python 3.12) starts a thread per child and waits for it to run, a
    millisecond or more of a busy event loop's time per phase. Without pidfds (Linux before
    5.3), a thread of the default executor waits instead.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


def _outcome(code: int | None) -> PhaseOutcome:
    if code == 0:
        return PhaseOutcome(PhaseStatus.SUCCEEDED, 0)
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return PhaseOutcome(PhaseStatus.FAILED, 128 - code, f"killed by {name}")
    return PhaseOutcome(PhaseStatus.FAILED, code, f"exited with status {code}")


class _Pipe:
    """The read end of one of the phase's output pipes, turned into lines for the sink."""

    def __init__(self, fd: int, stream: Stream) -> None:
        self.fd = fd
        self.stream = stream
        self.transport: asyncio.ReadTransport | None = None

    async def pump(self, sink: LineSink) -> None:
        loop = asyncio.get_running_loop()
        # The reader's limit bounds what is buffered: past it the pipe is no longer read and
        # the phase blocks on its writes until the sink catches up.
        reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES, loop=loop)
        self.transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
            os.fdopen(self.fd, "rb", buffering=0),
        )
        splitter = LineSplitter()
        while chunk := await reader.read(READ_CHUNK_BYTES):
            await emit(sink, self.stream, splitter.feed(chunk))
        await emit(sink, self.stream, splitter.flush())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        else:
            with contextlib.suppress(OSError):
                os.close(self.fd)


async def _finish(
    waiter: asyncio.Task[int], pumps: list[asyncio.Task[None]], pipes: list[_Pipe]
) -> BaseException | None:
    """Reap the shell, take the output still in the pipes (boundedly), close everything.

    Returns the sink's failure, if it failed, for the caller to raise.
    """
    try:
        await asyncio.shield(waiter)
        # A process that left the group may still hold a pipe open; do not wait for it forever.
        await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
    finally:
        for task in pumps:
            if not task.done():
                task.cancel()
        results = await asyncio.gather(*pumps, return_exceptions=True)
        for pipe in pipes:
            pipe.close()
    return next((r for r in results if isinstance(r, Exception)), None)


class _Group:
    """The phase's process group, signalled as a whole.

    Sandboxed, the group holds bubblewrap's own monitor process; it must not get the SIGTERM,
    because it would die at once and take the sandbox down without the grace period.
    """

    def __init__(self, pgid: int, *, spare: int | None) -> None:
        self.pgid = pgid
        self.spare = spare

    def kill(self, sig: signal.Signals) -> None:
        if sig == signal.SIGKILL or self.spare is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
            return
        for pid in _members(self.pgid):
            if pid != self.spare:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)


def _members(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain anything.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids
