"""Shared pieces of the runners: joining a phase's commands and splitting output into lines."""

from __future__ import annotations

from collections.abc import Sequence

from domain.ports import LineSink, OutputLine, Stream

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
