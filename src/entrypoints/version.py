"""Opsicle's version, and the commit and date of the build when it was built by packaging/."""

from __future__ import annotations

VERSION = "0.1.0"


def build_info() -> dict[str, str]:
    try:
        from entrypoints import _build  # type: ignore[attr-defined,unused-ignore]

        commit, date = str(_build.COMMIT), str(_build.DATE)
    except ImportError:
        commit, date = "source", "source"
    return {"version": VERSION, "commit": commit, "buildDate": date}
