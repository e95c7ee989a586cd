"""The file outbox mailer and the in-memory mail and approval fakes."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.mail.outbox import FileOutboxMailer, list_outbox
from adapters.memory.approvals import InMemoryApprovalChannel
from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from domain.approvals import Approval
from domain.automations import new_run
from domain.errors import Unavailable
from domain.ports import ApprovalChannel, Email, Mailer
from domain.resources import AutomationSpec, Phase

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def read_only_email(directory: Path) -> bytes:
    (path,) = directory.glob("*.eml")
    return path.read_bytes()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_each_email_is_an_owner_only_file_in_an_owner_only_directory(
        tmp_path: Path) -> None:
    outbox = tmp_path / "state" / "outbox"
    mailer: Mailer = FileOutboxMailer(outbox, FakeClock(T0))
    await mailer.send(Email(to="ada@example.org", subject="Welcome", text="Hello"))
    assert mode(outbox) == 0o700
    files = list(outbox.iterdir())
    assert len(files) == 1
    assert files[0].suffix == ".eml"
    assert mode(files[0]) == 0o600


async def test_existing_directory_is_tightened(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir(mode=0o755)
    os.chmod(outbox, 0o755)  # noqa: S103 - a loose directory for the mailer to tighten
    await FileOutboxMailer(outbox, FakeClock(T0)).send(Email("a@example.org", "s", "t"))
    assert mode(outbox) == 0o700


async def test_emails_read_back_newest_last(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    mailer = FileOutboxMailer(tmp_path / "outbox", clock, sender="Ops <ops@example.org>")
    sent = [
        Email(to="ada@example.org", subject="Reset your password",
              text="Open https://opsicle.example/reset?code=123\nIt expires in 1 hour."),
        Email(to="grace@example.org", subject="Überprüfung ✓", text="Zeile 1\nZeile 2 ünïcödé"),
        Email(to="linus@example.org", subject="Long", text="x" * 2000),
    ]
    for email in sent:
        await mailer.send(email)
        clock.advance(0.0005)  # some in the same millisecond: the order must still hold
    found = list_outbox(tmp_path / "outbox")
    assert [f.email for f in found] == sent
    assert [f.path.name for f in found] == sorted(f.path.name for f in found)
    assert found[0].sent_at == T0
    assert found[0].sender == "Ops <ops@example.org>"


async def test_files_are_standard_messages(tmp_path: Path) -> None:
    await FileOutboxMailer(tmp_path, FakeClock(T0)).send(Email("a@example.org", "Hi", "Body"))
    raw = read_only_email(tmp_path)
    for header in (b"From: ", b"To: a@example.org", b"Subject: Hi", b"Date: ", b"Message-ID: "):
        assert header in raw


def test_missing_outbox_lists_empty(tmp_path: Path) -> None:
    assert list_outbox(tmp_path / "never-created") == []


async def test_unwritable_outbox_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(Unavailable, match="outbox"):
        await FileOutboxMailer(blocker / "outbox", FakeClock(T0)).send(Email("a@b.c", "s", "t"))


async def test_in_memory_mailer_keeps_what_it_sent() -> None:
    mailer = InMemoryMailer()
    port: Mailer = mailer
    await port.send(Email("Ada@Example.org", "one", "1"))
    await port.send(Email("grace@example.org", "two", "2"))
    assert [e.subject for e in mailer.sent] == ["one", "two"]
    assert [e.subject for e in mailer.to("ada@example.org")] == ["one"]
    mailer.unavailable = True
    with pytest.raises(Unavailable):
        await port.send(Email("a@b.c", "three", "3"))
    assert len(mailer.sent) == 2


async def test_in_memory_approval_channel_records_what_it_showed() -> None:
    spec = AutomationSpec(phases=(Phase("one", "busybox", ("true",)),))
    run, _ = new_run("run-1", spec, T0, needs_approval=True)
    approval = Approval(id="ap-1", run_id=run.id, requested_by="u-1", quorum=1,
                        expires_at=T0, created_at=T0)
    channel = InMemoryApprovalChannel("slack-test")
    port: ApprovalChannel = channel
    assert port.name == "slack-test"
    await port.announce(approval, run)
    await port.conclude(approval, run)
    assert channel.announced == [(approval, run)]
    assert channel.concluded == [(approval, run)]
    channel.unavailable = True
    with pytest.raises(Unavailable, match="slack-test"):
        await port.announce(approval, run)
