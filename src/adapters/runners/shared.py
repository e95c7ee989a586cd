"""What both runners share: joining a phase's commands, splitting output, waiting for the end."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from domain.errors import Invalid
from domain.ports import LineSink, OutputLine, PhaseJob, Stream

MAX_LINE_BYTES = 64 * 1024
READ_CHUNK_BYTES = 64 * 1024


def join_commands(commands: Sequence[str]) -> str:
    """One ``sh -c`` script running each command in turn, stopping at the first that fails.

    Each command sits in its own brace group ended by a newline, so ``&&`` joins whole
    commands even when one contains ``||``, ``;``, ``&`` or a trailing comment, while
    ``cd`` and ``export`` still carry over to the next command as in one shell session.
    """
    groups = [f"{{ {c}\n}}" if c.strip() else "{ :\n}" for c in commands]
    return " && ".join(groups) if groups else ":"


def opsicle_env(job: PhaseJob, workdir: str) -> dict[str, str]:
    """What Opsicle tells every phase about itself; it wins over variables of the same name."""
    return {
        "OPSICLE_RUN_ID": job.run_id,
        "OPSICLE_PHASE": job.phase.name,
        "OPSICLE_WORKDIR": workdir,
    }


def check_env(job: PhaseJob, env: Mapping[str, str]) -> None:
    """Raise ``Invalid`` for variables no process environment can carry."""
    bad = sorted(k for k, v in env.items() if not k or "=" in k or "\0" in k or "\0" in v)
    if bad:
        raise Invalid(
            f"phase {job.phase.name!r}: environment variables that cannot be "
            f"passed to a process: {', '.join(map(repr, bad))}"
        )


def _char_boundary(buf: bytearray, start: int, end: int) -> int:
    # Cut a long line before a UTF-8 continuation byte so no character is split in two;
    # bytes that are not UTF-8 at all are cut where they fall.
    for cut in range(end, max(end - 3, start + 1) - 1, -1):
        if buf[cut] & 0xC0 != 0x80:
            return cut
    return end


class LineSplitter:
    """Bytes in, decoded lines out; a line longer than ``max_bytes`` comes out in pieces.

    Memory stays bounded by ``max_bytes`` plus one fed chunk, whatever the output looks like.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        buf, out, start = self._buf, [], 0
        while True:
            newline = buf.find(b"\n", start, start + self._max + 1)
            if newline != -1:
                out.append(buf[start:newline].decode("utf-8", errors="replace"))
                start = newline + 1
            elif len(buf) - start > self._max:
                end = _char_boundary(buf, start, start + self._max)
                out.append(buf[start:end].decode("utf-8", errors="replace"))
                start = end
            else:
                break
        del buf[:start]
        return out

    def flush(self) -> list[str]:
        """What is left once the stream ended: a last line without a newline, if any."""
        if not self._buf:
            return []
        rest = self._buf.decode("utf-8", errors="replace")
        self._buf.clear()
        return [rest]


async def emit(sink: LineSink, stream: Stream, lines: list[str]) -> None:
    for text in lines:
        await sink(OutputLine(stream=stream, text=text))


async def wait_for_exit(
    waiter: asyncio.Task[object], pumps: Sequence[asyncio.Task[None]], seconds: float
) -> bool:
    """Wait ``seconds`` at most for the phase to exit; True on timeout.

    A pump that fails (the sink raised) ends the wait by raising its exception.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pending: set[asyncio.Task[object]] = {waiter, *pumps}
    while not waiter.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        done, pending = await asyncio.wait(
            pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not waiter:
                task.result()
    return False
