"""Log lines carry the id of the request they belong to."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from entrypoints import logs


def test_log_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    logs.configure("info")
    try:
        token = logs.request_id.set("abc123")
        try:
            logging.getLogger("opsicle.test").info("inside a request")
        finally:
            logs.request_id.reset(token)
        logging.getLogger("opsicle.test").info("outside")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "INFO opsicle.test [abc123] inside a request" in err
    assert "INFO opsicle.test [-] outside" in err


def test_log_lines_go_to_the_standard_error_of_the_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("info")
    try:
        logging.getLogger("opsicle.test").info("one")
        first.close()  # as a capture that ended, or a caller that closed its stream
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("opsicle.test").info("two")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    assert "two" in second.getvalue() and "one" not in second.getvalue()
