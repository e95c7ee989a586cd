"""``opsicle explain``: what exit codes mean."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from domain.errors import FieldError, Invalid
from entrypoints import settings
from entrypoints.exitcodes import MEANINGS, ExitCode
from entrypoints.output import emit

app = App(name="explain", help="Explain what Opsicle's outputs mean.")


@app.command(name="exitcode", alias=["exit-code"])
def exitcode(
    code: Annotated[int | None, Parameter(help="The exit code to explain.")] = None,
    *,
    all: Annotated[bool, Parameter(help="List every exit code.")] = False,
) -> int:
    """Say what an exit code of an opsicle command means."""
    fmt = settings.current.get(settings.load())["output"]
    if all:
        emit(
            [{"code": int(c), "name": c.name.lower(), "meaning": m} for c, m in MEANINGS.items()],
            fmt,
            columns=("code", "name", "meaning"),
        )
        return 0
    if code is None:
        raise Invalid(
            "give an exit code, or --all",
            errors=(FieldError("code", "expected a number such as 3, or --all"),),
        )
    try:
        known = ExitCode(code)
    except ValueError:
        choices = ", ".join(str(int(c)) for c in ExitCode)
        raise Invalid(
            f"{code} is not an exit code opsicle uses",
            errors=(FieldError("code", f"expected one of: {choices}"),),
        ) from None
    emit({"code": int(known), "name": known.name.lower(), "meaning": MEANINGS[known]}, fmt)
    return 0
