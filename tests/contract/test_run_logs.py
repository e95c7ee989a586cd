"""Contract of the RunLogStore port: offset-addressed, idempotent appends and bounded reads."""

from __future__ import annotations

import os

import pytest

from domain.errors import Conflict
from domain.ports import RunLogStore
from tests.contract.builders import uid


async def test_a_new_log_is_empty(run_logs: RunLogStore) -> None:
    run_id = uid("run")
    assert await run_logs.size(run_id) == 0
    assert await run_logs.read(run_id) == b""


async def test_appends_return_the_new_length_and_read_back_in_order(run_logs: RunLogStore) -> None:
    run_id = uid("run")
    assert await run_logs.append(run_id, 0, b"hello ") == 6
    assert await run_logs.append(run_id, 6, b"world\n") == 12
    assert await run_logs.read(run_id) == b"hello world\n"
    assert await run_logs.read(run_id, 6) == b"world\n"
    assert await run_logs.read(run_id, 3, 5) == b"lo wo"
    assert await run_logs.read(run_id, 12) == b""
    assert await run_logs.size(run_id) == 12


async def test_a_resent_chunk_is_stored_once(run_logs: RunLogStore) -> None:
    run_id = uid("run")
    await run_logs.append(run_id, 0, b"abc")
    await run_logs.append(run_id, 3, b"def")
    assert await run_logs.append(run_id, 3, b"def") == 6
    assert await run_logs.append(run_id, 0, b"abc") == 6
    assert await run_logs.read(run_id) == b"abcdef"


async def test_a_resend_that_runs_past_the_end_adds_only_the_new_tail(
        run_logs: RunLogStore) -> None:
    run_id = uid("run")
    await run_logs.append(run_id, 0, b"abc")
    assert await run_logs.append(run_id, 1, b"bcdef") == 6
    assert await run_logs.read(run_id) == b"abcdef"


async def test_an_offset_beyond_the_end_is_a_conflict_naming_the_expected_offset(
        run_logs: RunLogStore) -> None:
    run_id = uid("run")
    await run_logs.append(run_id, 0, b"abc")
    with pytest.raises(Conflict, match="expected offset 3"):
        await run_logs.append(run_id, 4, b"x")
    with pytest.raises(Conflict, match="expected offset 0"):
        await run_logs.append(uid("run"), 10, b"x")
    assert await run_logs.read(run_id) == b"abc"


async def test_logs_of_different_runs_are_separate(run_logs: RunLogStore) -> None:
    first, second = uid("run"), uid("run")
    await run_logs.append(first, 0, b"first")
    await run_logs.append(second, 0, b"2nd")
    assert await run_logs.read(first) == b"first"
    assert await run_logs.size(second) == 3


async def test_a_large_log_reads_back_in_pieces_no_bigger_than_the_limit(
        run_logs: RunLogStore) -> None:
    run_id = uid("run")
    data = os.urandom(3 * 1024 * 1024 + 17)
    piece = 200_000
    for offset in range(0, len(data), piece):
        await run_logs.append(run_id, offset, data[offset:offset + piece])
    assert await run_logs.size(run_id) == len(data)

    limit = 65_536 + 123
    out = bytearray()
    while True:
        chunk = await run_logs.read(run_id, len(out), limit)
        assert len(chunk) <= limit
        if not chunk:
            break
        out += chunk
    assert out == data
