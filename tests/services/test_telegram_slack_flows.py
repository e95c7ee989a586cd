"""Approval requests in Telegram and Slack, answered by people, against loopback stand-ins.

The core's respond use case has not landed yet, so answers go to a recording handler that
replies as the core would (scripted per test); the adapters' side of each flow is real.
"""

from __future__ import annotations

import json
import logging
import time

import attrs
import pytest

from adapters.telegram.answers import AnswerResult, AnswerStatus, ChatAnswer
from adapters.telegram.bot import TelegramBot, callback_data
from domain.approvals import ApprovalResponse, ApprovalStatus, Verdict
from domain.errors import Forbidden, Unavailable
from tests.standins.rigs import (
    ALICE_SLACK,
    ALICE_TG,
    MALLORY_SLACK,
    MALLORY_TG,
    NOW,
    SLACK_CHANNEL,
    TG_CHAT,
    TG_TOKEN,
    Recorder,
    sample,
    slack_rig,
    telegram_rig,
)

CODE_REQUIRED = AnswerResult(AnswerStatus.CODE_REQUIRED)
DECIDED = AnswerResult(AnswerStatus.DECIDED)


def approved(approval_id: str = "apv-01") -> tuple[object, object]:
    approval, run = sample(approval_id)
    response = ApprovalResponse("alice", Verdict.APPROVE, NOW, channel="telegram")
    return attrs.evolve(approval, status=ApprovalStatus.APPROVED, responses=(response,)), run


# ---------------------------------------------------------------- Telegram


async def test_telegram_request_shows_run_facts_with_secrets_masked_and_two_buttons() -> None:
    async with telegram_rig() as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        (sent,) = rig.standin.sent("sendMessage")
        assert sent["chat_id"] == TG_CHAT
        for fact in ("restart-db v3", "bob", "host=db-1", "password=***", "nightly maintenance"):
            assert fact in sent["text"]
        buttons = sent["reply_markup"]["inline_keyboard"][0]
        assert [b["callback_data"] for b in buttons] == [
            "opsicle:approve:apv-01",
            "opsicle:reject:apv-01",
        ]


async def test_telegram_button_press_becomes_an_answer_and_is_acknowledged() -> None:
    recorder = Recorder(script=[AnswerResult(AnswerStatus.RECORDED, "alice approved (1 of 2)")])
    async with telegram_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        message_id = rig.channel.message_of(approval.id, TG_CHAT)
        assert message_id is not None
        query = await rig.standin.press(
            TG_CHAT, message_id, ALICE_TG, callback_data(Verdict.APPROVE, approval.id)
        )
        assert await rig.poller.poll_once() == 1
        assert recorder.answers == [
            ChatAnswer(
                approval_id="apv-01",
                channel="telegram",
                user_id="4242",
                username="@alice",
                verdict=Verdict.APPROVE,
                code=None,
                chat=str(TG_CHAT),
                message=str(message_id),
            )
        ]
        assert query in rig.standin.callback_answers
        assert any("1 of 2" in m.text for m in rig.standin.visible(TG_CHAT))
        # The update was confirmed by the next offset: it does not come back.
        assert await rig.poller.poll_once() == 0


async def test_telegram_code_is_asked_with_force_reply_and_the_code_message_deleted() -> None:
    recorder = Recorder(script=[CODE_REQUIRED, DECIDED])
    async with telegram_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        original = rig.channel.message_of(approval.id, TG_CHAT)
        assert original is not None
        await rig.standin.press(
            TG_CHAT, original, ALICE_TG, callback_data(Verdict.APPROVE, approval.id)
        )
        await rig.poller.poll_once()

        prompt = rig.standin.sent("sendMessage")[-1]
        assert prompt["reply_markup"]["force_reply"] is True
        assert prompt["reply_parameters"]["message_id"] == original
        (prompt_id,) = [m.message_id for m in rig.standin.visible(TG_CHAT) if "🔓" in m.text]

        code_message = await rig.standin.reply(TG_CHAT, prompt_id, ALICE_TG, " 123456 ")
        await rig.poller.poll_once()

        assert recorder.answers[-1].code == "123456"
        assert recorder.answers[-1].verdict is Verdict.APPROVE
        deleted = {(d["chat_id"], d["message_id"]) for d in rig.standin.sent("deleteMessage")}
        assert deleted == {(TG_CHAT, code_message), (TG_CHAT, prompt_id)}
        assert all("123456" not in m.text for m in rig.standin.visible(TG_CHAT))

        # The core decides and concludes: the request is edited to the outcome, buttons gone.
        done, run = approved()
        await rig.channel.conclude(done, run)  # type: ignore[arg-type]
        message = rig.standin.messages[(TG_CHAT, original)]
        assert "✅ Approved by alice" in message.text
        assert message.reply_markup is None
        assert rig.standin.refused == []  # every request passed Telegram's checks


async def test_telegram_wrong_code_is_refused_in_the_chat_and_still_deleted() -> None:
    recorder = Recorder(script=[CODE_REQUIRED, AnswerResult(AnswerStatus.REFUSED, "wrong code")])
    async with telegram_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        original = rig.channel.message_of(approval.id, TG_CHAT)
        assert original is not None
        await rig.standin.press(
            TG_CHAT, original, ALICE_TG, callback_data(Verdict.APPROVE, approval.id)
        )
        await rig.poller.poll_once()
        (prompt_id,) = [m.message_id for m in rig.standin.visible(TG_CHAT) if "🔓" in m.text]
        code_message = await rig.standin.reply(TG_CHAT, prompt_id, ALICE_TG, "000000")
        await rig.poller.poll_once()

        assert rig.standin.messages[(TG_CHAT, code_message)].deleted
        texts = [m.text for m in rig.standin.visible(TG_CHAT)]
        assert "⛔ @alice: wrong code" in texts
        # The request keeps its buttons: alice can try again.
        assert rig.standin.messages[(TG_CHAT, original)].reply_markup is not None


async def test_telegram_unauthorised_responder_is_answered_in_the_chat() -> None:
    async def refuse(answer: ChatAnswer) -> AnswerResult:
        raise Forbidden(f"{answer.username} may not answer this request")

    async with telegram_rig(refuse) as rig:  # type: ignore[arg-type]
        approval, run = sample()
        await rig.channel.announce(approval, run)
        original = rig.channel.message_of(approval.id, TG_CHAT)
        assert original is not None
        query = await rig.standin.press(
            TG_CHAT, original, MALLORY_TG, callback_data(Verdict.APPROVE, approval.id)
        )
        await rig.poller.poll_once()
        assert rig.standin.callback_answers[query]["show_alert"] is True
        assert "may not answer" in rig.standin.callback_answers[query]["text"]
        assert "⛔ @mallory: @mallory may not answer this request" in [
            m.text for m in rig.standin.visible(TG_CHAT)
        ]


async def test_telegram_reply_to_someone_elses_prompt_is_deleted_and_refused() -> None:
    recorder = Recorder(script=[CODE_REQUIRED, DECIDED])
    async with telegram_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        original = rig.channel.message_of(approval.id, TG_CHAT)
        assert original is not None
        await rig.standin.press(
            TG_CHAT, original, ALICE_TG, callback_data(Verdict.APPROVE, approval.id)
        )
        await rig.poller.poll_once()
        (prompt_id,) = [m.message_id for m in rig.standin.visible(TG_CHAT) if "🔓" in m.text]
        intruder = await rig.standin.reply(TG_CHAT, prompt_id, MALLORY_TG, "111111")
        await rig.poller.poll_once()
        assert rig.standin.messages[(TG_CHAT, intruder)].deleted
        assert len(recorder.answers) == 1  # mallory's code never reached the core
        # alice's prompt still stands.
        await rig.standin.reply(TG_CHAT, prompt_id, ALICE_TG, "222222")
        await rig.poller.poll_once()
        assert [a.code for a in recorder.answers] == [None, "222222"]


async def test_telegram_code_after_the_prompt_expired_is_not_handed_over() -> None:
    recorder = Recorder(script=[CODE_REQUIRED])
    async with telegram_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        original = rig.channel.message_of(approval.id, TG_CHAT)
        assert original is not None
        await rig.standin.press(
            TG_CHAT, original, ALICE_TG, callback_data(Verdict.REJECT, approval.id)
        )
        await rig.poller.poll_once()
        (prompt_id,) = [m.message_id for m in rig.standin.visible(TG_CHAT) if "🔓" in m.text]
        rig.clock.advance(600)
        late = await rig.standin.reply(TG_CHAT, prompt_id, ALICE_TG, "123456")
        await rig.poller.poll_once()
        assert rig.standin.messages[(TG_CHAT, late)].deleted
        assert len(recorder.answers) == 1
        assert any("expired" in m.text for m in rig.standin.visible(TG_CHAT))


async def test_telegram_token_shows_in_no_error_and_no_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with telegram_rig() as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        async with TelegramBot("999:wrong-token", base_url=rig.bot.base_url) as wrong:
            with pytest.raises(Unavailable) as caught:
                await wrong.send_message(TG_CHAT, "hello")
        assert "Telegram" in str(caught.value)
        assert "wrong-token" not in str(caught.value)
        assert rig.standin.refused[-1] == ("sendMessage", "Unauthorized")
    assert caplog.records  # httpx logged the requests …
    assert all(TG_TOKEN not in r.getMessage() for r in caplog.records)  # … without the token


# ---------------------------------------------------------------- Slack


async def test_slack_request_is_block_kit_with_approve_and_reject_buttons() -> None:
    async with slack_rig() as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        (sent,) = rig.standin.sent("chat.postMessage")
        assert sent["channel"] == SLACK_CHANNEL
        text = json.dumps(sent["blocks"])
        assert "password=***" in text and "restart-db v3" in text
        (actions,) = [b for b in sent["blocks"] if b["type"] == "actions"]
        assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
            ("opsicle_approve", "apv-01"),
            ("opsicle_reject", "apv-01"),
        ]


async def test_slack_button_press_becomes_an_answer() -> None:
    recorder = Recorder(script=[AnswerResult(AnswerStatus.RECORDED, "alice approved (1 of 2)")])
    async with slack_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        ts = rig.channel.message_of(approval.id, SLACK_CHANNEL)
        assert ts is not None
        reply = await rig.standin.press(SLACK_CHANNEL, ts, ALICE_SLACK, "opsicle_approve")
        assert reply.status_code == 200
        assert recorder.answers == [
            ChatAnswer(
                approval_id="apv-01",
                channel="slack",
                user_id="U0ALICE",
                username="alice",
                verdict=Verdict.APPROVE,
                code=None,
                chat=SLACK_CHANNEL,
                message=ts,
            )
        ]
        assert [m.text for m in rig.standin.thread(SLACK_CHANNEL, ts)] == [
            "alice approved (1 of 2)"
        ]


async def test_slack_code_is_asked_in_a_modal_and_the_message_updated_to_the_outcome() -> None:
    recorder = Recorder(script=[CODE_REQUIRED, DECIDED])
    async with slack_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        ts = rig.channel.message_of(approval.id, SLACK_CHANNEL)
        assert ts is not None
        await rig.standin.press(SLACK_CHANNEL, ts, ALICE_SLACK, "opsicle_approve")
        (view_id,) = rig.standin.views
        view = rig.standin.views[view_id].view
        assert view["callback_id"] == "approval_code_apv-01"
        meta = json.loads(view["private_metadata"])
        assert meta == {
            "channel": SLACK_CHANNEL,
            "ts": ts,
            "approval": "apv-01",
            "user": "U0ALICE",
            "verdict": "approve",
        }
        reply = await rig.standin.submit(view_id, ALICE_SLACK, "654321")
        assert reply.status_code == 200 and reply.content == b""  # the modal closes
        assert recorder.answers[-1].code == "654321"
        assert recorder.answers[-1].message == ts

        done, run = approved()
        await rig.channel.conclude(done, run)  # type: ignore[arg-type]
        message = rig.standin.message(SLACK_CHANNEL, ts)
        assert "Approved" in message.text
        assert all(b["type"] != "actions" for b in message.blocks)
        assert rig.standin.refused == []  # every request passed Slack's checks


async def test_slack_wrong_code_keeps_the_modal_open_with_the_reason() -> None:
    recorder = Recorder(script=[CODE_REQUIRED, AnswerResult(AnswerStatus.REFUSED, "wrong code")])
    async with slack_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        ts = rig.channel.message_of(approval.id, SLACK_CHANNEL)
        assert ts is not None
        await rig.standin.press(SLACK_CHANNEL, ts, ALICE_SLACK, "opsicle_approve")
        (view_id,) = rig.standin.views
        reply = await rig.standin.submit(view_id, ALICE_SLACK, "000000")
        assert reply.json() == {"response_action": "errors", "errors": {"code": "wrong code"}}


async def test_slack_modal_submitted_by_someone_else_is_refused() -> None:
    recorder = Recorder(script=[CODE_REQUIRED])
    async with slack_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        ts = rig.channel.message_of(approval.id, SLACK_CHANNEL)
        assert ts is not None
        await rig.standin.press(SLACK_CHANNEL, ts, ALICE_SLACK, "opsicle_approve")
        (view_id,) = rig.standin.views
        reply = await rig.standin.submit(view_id, MALLORY_SLACK, "123456")
        assert reply.json()["response_action"] == "errors"
        assert len(recorder.answers) == 1


async def test_slack_unauthorised_responder_is_answered_in_the_channel() -> None:
    async def refuse(answer: ChatAnswer) -> AnswerResult:
        raise Forbidden(f"{answer.username} may not answer this request")

    async with slack_rig(refuse) as rig:  # type: ignore[arg-type]
        approval, run = sample()
        await rig.channel.announce(approval, run)
        ts = rig.channel.message_of(approval.id, SLACK_CHANNEL)
        assert ts is not None
        await rig.standin.press(SLACK_CHANNEL, ts, MALLORY_SLACK, "opsicle_approve")
        (note,) = rig.standin.ephemeral("U0MALLORY")
        assert note.channel == SLACK_CHANNEL
        assert "mallory may not answer" in note.text


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param({"secret": "not-the-signing-secret"}, id="wrong-secret"),
        pytest.param({"signature": "v0=" + "0" * 64}, id="forged-signature"),
        pytest.param({"timestamp": -301}, id="stale-timestamp"),
        pytest.param({"timestamp": +301}, id="future-timestamp"),
    ],
)
async def test_slack_interaction_with_a_bad_signature_is_refused(spoil: dict[str, object]) -> None:
    recorder = Recorder()
    async with slack_rig(recorder) as rig:
        approval, run = sample()
        await rig.channel.announce(approval, run)
        ts = rig.channel.message_of(approval.id, SLACK_CHANNEL)
        payload = {
            "type": "block_actions",
            "user": {"id": "U0MALLORY", "username": "mallory"},
            "channel": {"id": SLACK_CHANNEL},
            "container": {"message_ts": ts},
            "trigger_id": "1.2",
            "actions": [{"action_id": "opsicle_approve", "value": approval.id}],
        }
        if "timestamp" in spoil:  # seconds away from now, when the request is sent
            spoil = {"timestamp": int(time.time()) + int(str(spoil["timestamp"]))}
        reply = await rig.standin.send(payload, **spoil)  # type: ignore[arg-type]
        assert reply.status_code == 401
        assert recorder.answers == []
        # The same payload, signed properly and fresh, is accepted.
        assert (await rig.standin.send(payload)).status_code == 200
        assert len(recorder.answers) == 1
