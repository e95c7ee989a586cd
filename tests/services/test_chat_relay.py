"""The approver's relay shows requests made elsewhere and concludes those decided elsewhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

import attrs
import pytest

from adapters.memory.approvals import InMemoryApprovalChannel
from adapters.memory.relay_claims import in_memory_relay_claims
from adapters.slack.web import SlackChannel
from adapters.telegram.bot import PROMPT_MARK, TelegramChannel, TelegramPoller, callback_data
from domain.approvals import Approval, Verdict
from domain.automations import Run, RunStatus
from domain.chat_links import ChatPlatform
from domain.errors import Invalid
from domain.services import approvals, runs
from domain.services.chat_links import issue_link_code
from entrypoints.approver import ChatDesk, ChatRelay, slack_channels, telegram_chats
from tests.services.test_chat_approvals import POLICY, rig
from tests.standins.rigs import ALICE_TG, SLACK_CHANNEL, TG_CHAT


async def test_the_relay_posts_once_and_concludes_what_was_decided_elsewhere() -> None:
    async with rig() as r:
        w = r.w
        w.p = attrs.evolve(w.p, approval_channels=())  # the creating process has no chats
        await w.setup(POLICY)
        desk = ChatDesk(w.p, r.links)
        poller = TelegramPoller(r.poller._bot, desk.answer, clock=w.clock,
                                poll_timeout=0, commands=desk.command)
        code = (await issue_link_code(w.p, w.alice, ChatPlatform.TELEGRAM)).code
        await r.tg.say(TG_CHAT, ALICE_TG, f"/link {code}")
        await poller.poll_once()
        secret = await w.mfa(w.alice)
        first, second = await w.run(), await w.run()
        assert "Linked" in r.tg.sent("sendMessage")[-1]["text"]  # nothing posted yet

        claims = in_memory_relay_claims(w.p.uow)
        await ChatRelay(w.p, [r.tg_channel], claims).sweep()
        posted = [m for m in r.tg.sent("sendMessage") if "Approval requested" in m["text"]]
        assert len(posted) == 2
        first_id = await w.approval_id(first.run.id)
        second_id = await w.approval_id(second.run.id)
        async with w.p.uow() as uow:
            stored = await uow.approvals.get(first_id)
        assert stored.messages["telegram"] == "announced"
        message_id = int(stored.messages[f"telegram:{TG_CHAT}"])

        await r.tg.press(TG_CHAT, message_id, ALICE_TG, callback_data(Verdict.APPROVE, first_id))
        await poller.poll_once()
        prompt = r.tg.visible(TG_CHAT)[-1]
        assert prompt.text.startswith(PROMPT_MARK)
        await r.tg.reply(TG_CHAT, prompt.message_id, ALICE_TG, w.totp(secret))
        await poller.poll_once()
        assert (await runs.get_run(w.p, w.admin, first.run.id)).run.status is RunStatus.QUEUED
        await approvals.respond_to(w.p, w.bob, second_id, Verdict.REJECT)

        # A restarted approver: a new channel that remembers nothing, and a new relay.
        fresh = TelegramChannel(r.poller._bot, telegram_chats)
        restarted = ChatRelay(w.p, [fresh], claims)
        await restarted.sweep()
        await restarted.sweep()
        assert len([m for m in r.tg.sent("sendMessage") if "Approval requested" in m["text"]]) == 2
        edits = r.tg.sent("editMessageText")
        assert len(edits) == 2
        assert any("Approved" in e["text"] for e in edits)
        assert any("Rejected" in e["text"] for e in edits)
        async with w.p.uow() as uow:
            assert (await uow.approvals.get(second_id)).messages["telegram"] == "concluded"


def requests_posted(messages: list[dict[str, object]]) -> int:
    return len([m for m in messages if "Approval requested" in str(m.get("text"))])


async def test_two_relays_on_one_store_post_each_approval_once_per_chat() -> None:
    async with rig() as r:
        w = r.w
        w.p = attrs.evolve(w.p, approval_channels=())
        await w.setup(POLICY)
        for _ in range(3):
            await w.run()
        claims = in_memory_relay_claims(w.p.uow)
        bot, web = r.poller._bot, r.slack_channel._web

        def relay() -> ChatRelay:  # an approver process of its own: channels remember nothing
            return ChatRelay(w.p, [TelegramChannel(bot, telegram_chats),
                                   SlackChannel(web, slack_channels)], claims)

        one, two = relay(), relay()
        assert one.owner != two.owner
        for _ in range(3):
            await asyncio.gather(one.sweep(), two.sweep())
        assert requests_posted(r.tg.sent("sendMessage")) == 3
        assert requests_posted(r.slack.sent("chat.postMessage")) == 3


async def test_a_claim_left_by_a_stopped_relay_is_taken_over_and_slack_adopts_its_message(
) -> None:
    async with rig() as r:
        w = r.w
        w.p = attrs.evolve(w.p, approval_channels=())
        await w.setup(POLICY)
        started = await w.run()
        approval_id = await w.approval_id(started.run.id)
        claims = in_memory_relay_claims(w.p.uow)
        web = r.slack_channel._web
        # A process claimed, posted to Slack, and stopped before recording where.
        now = w.clock.now()
        assert await claims.claim(approval_id, "slack", "stopped", now=now,
                                  until=now + timedelta(minutes=2))
        async with w.p.uow() as uow:
            approval = await uow.approvals.get(approval_id)
            run = await uow.runs.get(approval.run_id)
        await SlackChannel(web, slack_channels).announce(approval, run)
        [first] = r.slack.sent("chat.postMessage")

        relay = ChatRelay(w.p, [SlackChannel(web, slack_channels)], claims)
        await relay.sweep()  # the claim is the stopped process's still: nothing happens
        async with w.p.uow() as uow:
            assert not (await uow.approvals.get(approval_id)).messages
        w.clock.advance(120)
        await relay.sweep()
        assert len(r.slack.sent("chat.postMessage")) == 1  # found in history, not posted again
        [posted] = [m for m in r.slack.messages if m.metadata]
        async with w.p.uow() as uow:
            stored = await uow.approvals.get(approval_id)
        assert stored.messages["slack"] == "announced"
        assert stored.messages[f"slack:{SLACK_CHANNEL}"] == posted.ts
        assert first["metadata"]["event_payload"] == {"approval_id": approval_id}


async def test_a_relay_announces_with_recover_only_after_taking_a_claim_over() -> None:
    async with rig() as r:
        w = r.w
        w.p = attrs.evolve(w.p, approval_channels=())
        await w.setup(POLICY)
        taken, fresh = await w.run(), await w.run()
        taken_id = await w.approval_id(taken.run.id)
        claims = in_memory_relay_claims(w.p.uow)
        now = w.clock.now()
        assert await claims.claim(taken_id, "memory", "stopped", now=now,
                                  until=now + timedelta(seconds=30))
        memory = InMemoryApprovalChannel()
        relay = ChatRelay(w.p, [memory], claims, lease=timedelta(seconds=30))
        await relay.sweep()
        assert [a.id for a, _ in memory.announced] == [await w.approval_id(fresh.run.id)]
        w.clock.advance(30)
        await relay.sweep()
        assert memory.recovered == [taken_id]
        assert len(memory.announced) == 2


class RefusingChannel(InMemoryApprovalChannel):
    """A chat whose configuration is wrong: every announcement is refused."""

    async def announce(
        self, approval: Approval, run: Run, *, recover: bool = False
    ) -> Mapping[str, str]:
        raise Invalid("Slack channel #gone does not exist")


async def test_a_refusal_is_logged_once_and_forgotten_once_its_request_is_decided(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        w = r.w
        w.p = attrs.evolve(w.p, approval_channels=())
        await w.setup(POLICY)
        approval_id = await w.approval_id((await w.run()).run.id)
        relay = ChatRelay(w.p, [RefusingChannel()], in_memory_relay_claims(w.p.uow))
        with caplog.at_level(logging.ERROR, logger="opsicle.approver"):
            await relay.sweep()
            await relay.sweep()
        assert len([m for m in caplog.messages if approval_id in m]) == 1
        assert relay.told
        await approvals.respond_to(w.p, w.bob, approval_id, Verdict.REJECT)
        await relay.sweep()
        assert relay.told == set()


async def test_claims_left_on_decided_requests_are_purged_a_day_after_their_lease_ended(
) -> None:
    async with rig() as r:
        w = r.w
        w.p = attrs.evolve(w.p, approval_channels=())
        await w.setup(POLICY)
        decided = await w.approval_id((await w.run()).run.id)
        pending = await w.approval_id((await w.run()).run.id)
        claims = in_memory_relay_claims(w.p.uow)
        now = w.clock.now()
        # Left by a process that stopped, on a chat this relay does not serve.
        for approval_id in (decided, pending):
            assert await claims.claim(approval_id, "telegram", "stopped", now=now,
                                      until=now + timedelta(seconds=30))
        await approvals.respond_to(w.p, w.bob, decided, Verdict.REJECT)
        relay = ChatRelay(w.p, [InMemoryApprovalChannel()], claims)
        w.clock.advance(30)
        await relay.sweep()
        w.clock.advance(timedelta(days=1, seconds=1).total_seconds())
        await relay.sweep()
        later = w.clock.now()
        gone = await claims.claim(decided, "telegram", "next", now=later, until=later)
        kept = await claims.claim(pending, "telegram", "next", now=later, until=later)
        assert gone is not None and not gone.taken_over
        assert kept is not None and kept.taken_over
