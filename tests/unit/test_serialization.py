"""The wire converter: camelCase, strict JSON types, located errors, and lossless round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.serialization import from_json, to_json
from domain.errors import Invalid


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Inner:
    when: datetime
    colour: Colour = Colour.RED


@attrs.frozen
class Outer:
    display_name: str
    retry_count: int = 0
    ratio: float = 0.0
    enabled: bool = False
    tags: tuple[str, ...] = ()
    inner: Inner | None = None
    labels: dict[str, str] = attrs.field(factory=dict)


def test_keys_are_camel_case_on_the_wire() -> None:
    value = Outer("x", 2, inner=Inner(datetime(2026, 1, 1, tzinfo=UTC)))
    data = to_json(value)
    assert data["displayName"] == "x" and data["retryCount"] == 2
    assert data["inner"] == {"when": "2026-01-01T00:00:00+00:00", "colour": "red"}
    assert from_json(data, Outer) == value


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"displayName": "is required"}),
        ({"displayName": 5}, {"displayName": "expected a string"}),
        ({"displayName": "x", "retryCount": "2"}, {"retryCount": "expected a whole number"}),
        ({"displayName": "x", "retryCount": True}, {"retryCount": "expected a whole number"}),
        ({"displayName": "x", "enabled": "yes"}, {"enabled": "expected true or false"}),
        ({"displayName": "x", "tags": ["a", 1]}, {"tags[1]": "expected a string"}),
        ({"displayName": "x", "colour": "red"}, {"body": "unknown field: colour"}),
        (
            {"displayName": "x", "inner": {"when": "2026-01-01T00:00:00", "colour": "green"}},
            {
                "inner.when": "expected a time zone (for example 2026-01-01T00:00:00Z)",
                "inner.colour": "expected one of: red, blue",
            },
        ),
        (
            {"displayName": "x", "inner": {"when": "9999-12-31T23:59:59-23:59"}},
            {"inner.when": "expected a time whose UTC falls in years 1 to 9999"},
        ),
        (
            {"displayName": "x", "retryCount": 2**63},
            {"retryCount": "expected a whole number from -2^63 to 2^63-1"},
        ),
        ({"displayName": "x", "labels": [1, 2]}, {"labels": "expected a JSON object"}),
        ([1, 2], {"body": "expected a JSON object"}),
    ],
)
def test_every_problem_names_its_field(body: object, errors: dict[str, str]) -> None:
    with pytest.raises(Invalid) as info:
        from_json(body, Outer)
    assert dict(info.value.field_map()) == errors


values = st.builds(
    Outer,
    display_name=st.text(),
    retry_count=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    enabled=st.booleans(),
    tags=st.lists(st.text()).map(tuple),
    inner=st.none()
    | st.builds(Inner, when=st.datetimes(timezones=st.just(UTC)), colour=st.sampled_from(Colour)),
    labels=st.dictionaries(st.text(), st.text()),
)


@given(values)
def test_round_trip(value: Outer) -> None:
    assert from_json(to_json(value), Outer) == value
