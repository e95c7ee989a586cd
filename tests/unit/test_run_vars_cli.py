"""`--var key=value`, for `opsicle run FILE` and `opsicle run template`: each key once."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.errors import Invalid
from entrypoints.local_run import parse_vars
from entrypoints.main import run


def test_var_options_become_a_mapping() -> None:
    assert parse_vars(["a=1", "b= x=y "]) == {"a": "1", "b": " x=y "}
    with pytest.raises(Invalid) as bad:
        parse_vars(["novalue"])
    assert bad.value.field_map() == {"--var": "expected key=value, got 'novalue'"}


def test_a_var_given_twice_is_named() -> None:
    with pytest.raises(Invalid) as info:
        parse_vars(["ratio=1", "other=2", " ratio=2"])
    assert info.value.field_map() == {"--var": "'ratio' is given more than once"}


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello.yaml"


@pytest.mark.parametrize("target", [["template", "t", "--org", "o"], [str(EXAMPLE)]])
def test_both_runs_refuse_a_repeated_var(
    target: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["run", *target, "--var", "who=1", "--var", "who=2"]) == 2
    assert "--var: 'who' is given more than once" in capsys.readouterr().err
