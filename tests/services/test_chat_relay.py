"""The approver's relay shows requests made elsewhere and concludes those decided elsewhere."""

from __future__ import annotations

import attrs

from adapters.telegram.bot import PROMPT_MARK, TelegramChannel, TelegramPoller, callback_data
from domain.approvals import Verdict
from domain.automations import RunStatus
from domain.chat_links import ChatPlatform
from domain.services import approvals, runs
from domain.services.chat_links import issue_link_code
from entrypoints.approver import ChatDesk, ChatRelay, telegram_chats
from tests.services.test_chat_approvals import POLICY, rig
from tests.standins.rigs import ALICE_TG, TG_CHAT


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

        await ChatRelay(w.p, [r.tg_channel]).sweep()
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
        restarted = ChatRelay(w.p, [fresh])
        await restarted.sweep()
        await restarted.sweep()
        assert len([m for m in r.tg.sent("sendMessage") if "Approval requested" in m["text"]]) == 2
        edits = r.tg.sent("editMessageText")
        assert len(edits) == 2
        assert any("Approved" in e["text"] for e in edits)
        assert any("Rejected" in e["text"] for e in edits)
        async with w.p.uow() as uow:
            assert (await uow.approvals.get(second_id)).messages["telegram"] == "concluded"
