"""Text tables on a terminal of ordinary width: ids, which the next command needs, stay whole."""

from __future__ import annotations

import pytest

from entrypoints.output import emit

RUN_ID = "01M8HE2DY7C8690174W2GWWM8K"
LONG = "a phase's reason that is far too long to fit in any column of this table"
COLUMNS = ("id", "name", "status", "waiting", "requestedBy", "createdAt")


def table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, run_id: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    row = {
        "id": run_id,
        "name": "nightly-backup",
        "status": "cancelled",
        "waiting": LONG,
        "requestedBy": "01M8HE1K8QV24X0BMGS3NTYS19",
        "createdAt": "2026-11-28T15:58:34.948069+00:00",
    }
    emit([row], "text", columns=COLUMNS)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    return out


def test_an_id_is_shown_whole_on_one_line_while_other_columns_are_cut(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = table(capsys, monkeypatch, RUN_ID)
    assert RUN_ID in out
    assert "01M8HE1K8QV24X0BMGS3NTYS19" not in out  # the other id column is cut short


def test_an_id_wider_than_half_the_terminal_is_folded_not_cut(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_id = "embedded-c46bcc3b.01M8HE1T879QMKP9Y997BJFTEA"
    out = table(capsys, monkeypatch, worker_id)
    first_column = "".join(
        line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")
    )
    assert first_column == worker_id
