"""ULID identifiers and the clocks they are made from."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.clock import FakeClock, SequentialIdGenerator
from adapters.system import (
    SystemClock,
    UlidIdGenerator,
    decode_ulid,
    encode_ulid,
    ulid_timestamp_ms,
)
from domain.ports import Clock, IdGenerator

ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_ulid_is_26_crockford_chars_and_carries_its_time() -> None:
    clock = FakeClock(datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=UTC))
    ids: IdGenerator = UlidIdGenerator(clock)
    new = ids.new_id()
    assert ULID.fullmatch(new)
    assert ulid_timestamp_ms(new) == int(clock.now().timestamp() * 1000)


def test_ulids_are_unique_and_increase_within_one_millisecond() -> None:
    ids = UlidIdGenerator(FakeClock())
    made = [ids.new_id() for _ in range(5000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)


def test_ulids_keep_increasing_when_the_wall_clock_steps_back() -> None:
    clock = FakeClock()
    ids = UlidIdGenerator(clock)
    before = ids.new_id()
    clock.set(clock.now() - timedelta(minutes=5))
    assert ids.new_id() > before


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=2, max_size=30))
def test_ulids_sort_by_creation_time(steps_ms: list[int]) -> None:
    clock = FakeClock()
    ids = UlidIdGenerator(clock)
    made = []
    for step in steps_ms:
        clock.advance(step / 1000)
        made.append(ids.new_id())
    assert made == sorted(made)
    assert len(set(made)) == len(made)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 1, 1),
                    timezones=st.just(UTC)),
       st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 1, 1),
                    timezones=st.just(UTC)))
def test_ulids_from_different_milliseconds_order_like_their_times(a: datetime,
                                                                  b: datetime) -> None:
    first = UlidIdGenerator(FakeClock(a)).new_id()
    second = UlidIdGenerator(FakeClock(b)).new_id()
    ms_a, ms_b = (int((t - EPOCH) / timedelta(milliseconds=1)) for t in (a, b))
    if ms_a != ms_b:
        assert (first < second) == (ms_a < ms_b)


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_ulid_encoding_round_trips(value: int) -> None:
    text = encode_ulid(value)
    assert ULID.fullmatch(text)
    assert decode_ulid(text) == value
    assert decode_ulid(text.lower()) == value


@pytest.mark.parametrize("text", ["", "0" * 25, "8" + "0" * 25, "U" * 26, "0" * 27])
def test_decode_rejects_what_is_not_a_ulid(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        decode_ulid(text)


def test_system_clock_is_aware_utc_and_monotonic() -> None:
    clock: Clock = SystemClock()
    now = clock.now()
    assert now.utcoffset() == timedelta(0)
    assert clock.monotonic() <= clock.monotonic()


async def test_system_clock_sleeps() -> None:
    clock = SystemClock()
    start = clock.monotonic()
    await clock.sleep(0.01)
    assert clock.monotonic() > start


async def test_fake_clock_sleep_advances_and_lets_other_tasks_run() -> None:
    clock = FakeClock()
    start_wall, start_mono = clock.now(), clock.monotonic()
    ran = []

    async def other() -> None:
        ran.append(True)

    task = asyncio.create_task(other())
    await clock.sleep(90)
    assert ran == [True]
    await task
    assert clock.now() - start_wall == timedelta(seconds=90)
    assert clock.monotonic() - start_mono == 90
    assert clock.slept == [90]


def test_fake_clock_refuses_naive_time_and_going_back() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="forward"):
        FakeClock().advance(-1)


def test_sequential_ids_count_up() -> None:
    ids: IdGenerator = SequentialIdGenerator("run-")
    assert [ids.new_id() for _ in range(3)] == ["run-000001", "run-000002", "run-000003"]
