"""Variables: typed resolution, environment names, and secrets masked everywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import Invalid
from domain.resources import MAX_VALUE_BYTES, Variable, VariableType, coerce_value, env_name
from domain.variables import MASK, MAX_TOTAL_BYTES, Redactor, environment, missing_required, resolve

DECLARED = (
    Variable("target-host", VariableType.STRING, is_required=True),
    Variable("dry-run", VariableType.BOOL, default=False),
    Variable("retries", VariableType.NUMBER, default=3),
    Variable("ratio", VariableType.FLOAT),
    Variable("api-token", VariableType.STRING, secret=True),
)


def test_environment_names_follow_the_documented_rule() -> None:
    assert env_name("target-host") == "TARGET_HOST"
    assert env_name("dryRun") == "DRYRUN"
    assert env_name("a.b-c_d") == "A_B_C_D"


def test_given_values_are_typed_and_defaults_fill_the_rest() -> None:
    values = resolve(DECLARED, {"target-host": "db1", "dry-run": "yes", "ratio": "0.5"})
    assert values == {"target-host": "db1", "dry-run": True, "retries": 3, "ratio": 0.5}
    assert environment(DECLARED, values) == {
        "TARGET_HOST": "db1",
        "DRY_RUN": "true",
        "RETRIES": "3",
        "RATIO": "0.5",
    }


def test_every_problem_is_named() -> None:
    with pytest.raises(Invalid) as info:
        resolve(DECLARED, {"retries": "three", "ratio": "x", "colour": "red"})
    assert info.value.field_map() == {
        "variables.colour": "is not a variable of this runbook; it has: target-host, dry-run, "
        "retries, ratio, api-token",
        "variables.target-host": "is required (string)",
        "variables.retries": "expected a whole number, got a string ('three')",
        "variables.ratio": "expected a number, got a string ('x')",
    }


def test_missing_required_lists_only_those_without_value_or_default() -> None:
    assert [v.id for v in missing_required(DECLARED, {})] == ["target-host"]
    assert missing_required(DECLARED, {"target-host": "x"}) == []


secrets = st.text(min_size=1).filter(lambda s: s.strip() and "*" not in s)


@given(secrets, st.text(), st.text())
def test_secrets_never_survive_redaction(secret: str, before: str, after: str) -> None:
    redact = Redactor.for_values(DECLARED, {"api-token": secret, "target-host": "h"})
    assert secret not in redact(before + secret + after)
    for line in filter(str.strip, secret.splitlines()):
        assert line not in redact(before + line + after)


def test_displayed_values_mask_secrets() -> None:
    values = {"api-token": "s3cr3t", "target-host": "h"}
    shown = Redactor.for_values(DECLARED, values).values(DECLARED, values)
    assert shown == {"api-token": MASK, "target-host": "h"}


@pytest.mark.parametrize(
    ("vtype", "raw", "expected"),
    [
        (VariableType.BOOL, "TRUE", True),
        (VariableType.BOOL, "off", False),
        (VariableType.NUMBER, " 42 ", 42),
        (VariableType.NUMBER, 7.0, 7),
        (VariableType.FLOAT, "1e3", 1000.0),
        (VariableType.STRING, 5, "5"),
    ],
)
def test_coercion(vtype: VariableType, raw: object, expected: object) -> None:
    assert coerce_value(vtype, raw) == expected


@pytest.mark.parametrize(
    ("vtype", "raw"),
    [
        (VariableType.BOOL, "maybe"),
        (VariableType.NUMBER, "1.5"),
        (VariableType.NUMBER, True),
        (VariableType.FLOAT, "nan"),
        (VariableType.FLOAT, "inf"),
        (VariableType.FLOAT, float("nan")),
        (VariableType.FLOAT, float("-inf")),
        pytest.param(VariableType.FLOAT, 10**400, id="float-beyond-any-float"),
        (VariableType.FLOAT, True),
        (VariableType.NUMBER, float("inf")),
        (VariableType.STRING, [1]),
    ],
)
def test_coercion_refuses(vtype: VariableType, raw: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        coerce_value(vtype, raw)


def test_a_mistyped_secret_is_not_echoed_in_the_error() -> None:
    pin = Variable("pin", VariableType.NUMBER, secret=True)
    with pytest.raises(Invalid) as info:
        resolve((pin,), {"pin": "12ab-secret"})
    assert "12ab-secret" not in str(info.value)
    assert info.value.field_map() == {"variables.pin": "expected a number value"}


def test_non_finite_floats_are_refused_by_name() -> None:
    with pytest.raises(Invalid) as info:
        resolve(DECLARED, {"target-host": "h", "ratio": float("nan")})
    assert info.value.field_map() == {
        "variables.ratio": "expected a finite number, got a number (nan)"
    }


def test_a_number_with_too_many_digits_is_named() -> None:
    with pytest.raises(Invalid) as info:
        resolve(DECLARED, {"target-host": "h", "retries": "1" * 5000})
    assert info.value.field_map() == {
        "variables.retries": "expected a whole number, got a string "
        "('1111111111111111111111111111111111111...')"
    }


def test_values_must_fit_in_a_phase_environment() -> None:
    assert coerce_value(VariableType.STRING, "é" * (MAX_VALUE_BYTES // 2)) == "é" * 32768
    with pytest.raises(Invalid) as info:
        resolve(DECLARED, {"target-host": "x" * 200_000, "api-token": "é" * 40_000})
    too_long = "is too long ({} bytes as UTF-8); at most 65536 bytes (64 KiB) fit in a phase's "
    assert info.value.field_map() == {
        "variables.target-host": too_long.format(200_000) + "environment",
        # A secret's size is no secret; its value still is not shown.
        "variables.api-token": too_long.format(80_000) + "environment",
    }


def test_all_values_together_must_fit_in_a_phase_environment() -> None:
    declared = tuple(Variable(f"v{i}", VariableType.STRING) for i in range(20))
    each = "x" * (MAX_VALUE_BYTES - 100)
    fits = {f"v{i}": each for i in range(15)}
    assert len(resolve(declared, fits)) == 15
    with pytest.raises(Invalid) as info:
        resolve(declared, {f"v{i}": each for i in range(20)})
    [(field, message)] = info.value.field_map().items()
    assert field == "variables" and message.startswith("are too long together (")
    assert f"at most {MAX_TOTAL_BYTES} bytes (1 MiB)" in message
