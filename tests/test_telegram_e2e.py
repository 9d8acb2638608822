"""Telegram end to end: a customer on Telegram (updates posted to the real gateway's webhook), the
agent on the real websocket, the replies at the Bot API stand-in. The FAQ answers, /agent hands
off, the agent's reply and "typing…" reach the chat; a 429 for one chat delays that chat only;
a customer who blocked the bot surfaces to the agent as delivery_failed."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest_asyncio

from support import ALICE_TOKEN, Agent, GatewayProcess
from support_telegram import post_update, serve_api, start, telegram_config
from telegram_api import BotApi, message

MEI, BO = 5553001, 5553002


@pytest_asyncio.fixture
async def api() -> AsyncIterator[BotApi]:
    async with serve_api() as bot_api:
        yield bot_api


class Chat:
    """One Telegram user writing to the bot."""

    def __init__(self, gateway: GatewayProcess, api: BotApi, chat_id: int) -> None:
        self.gateway, self.api, self.chat_id = gateway, api, chat_id
        self._message_ids = iter(range(1, 10_000))

    async def say(self, text: str) -> None:
        update = {"update_id": self.api.new_update_id(), "message": message(self.chat_id, text,
                                                                             message_id=next(self._message_ids))}
        assert (await post_update(self.gateway, update))[0] == 200

    async def received(self, text: str) -> None:
        """Wait until ``text`` was sent to this chat (successfully or not)."""
        while not [c for c in self.api.sent("sendMessage", self.chat_id) if c.params.get("text") == text]:
            await self.api.wait_for("sendMessage", len(self.api.sent("sendMessage", self.chat_id)) + 1, self.chat_id)

    def texts(self) -> list[str]:
        return [c.params["text"] for c in self.api.sent("sendMessage", self.chat_id)]


async def handed_to(alice: Agent, chat: Chat) -> str:
    await chat.say("/agent")
    offer = (await alice.next("offer"))["conversation"]
    assert offer["channel"] == "telegram"
    await alice.send(type="accept", conversation_id=offer["id"])
    await alice.next("assigned", conversation_id=offer["id"])
    return offer["id"]


async def test_faq_then_agent_typing_reply_and_a_blocked_user(tmp_path: Path, store_url: str, api: BotApi) -> None:
    gateway = await start(tmp_path, telegram_config(store_url, api))
    try:
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
        mei = Chat(gateway, api, MEI)
        await mei.say("How do I track my parcel?")
        await api.wait_for("sendMessage", 2, MEI)
        greeting, answer = mei.texts()
        assert greeting.startswith("Hi!") and "track" in answer.lower()

        await mei.say("/agent")
        offer = (await alice.next("offer"))["conversation"]
        assert offer["channel"] == "telegram" and offer["customer"]["name"] == "Mei Chen"
        assert [e["text"] for e in offer["transcript"] if e["author"] == "customer"] == \
            ["How do I track my parcel?", "/agent"]
        conversation_id = offer["id"]
        await alice.send(type="accept", conversation_id=conversation_id)
        await alice.next("assigned")
        # The handoff note went out, and (once) the place in line.
        await mei.received("Let me find you an agent. Please hold on.")
        await api.wait_for("sendMessage", 4, MEI)
        assert len([t for t in mei.texts() if t.startswith("You are")]) == 1

        await alice.send(type="typing", conversation_id=conversation_id)
        [action] = await api.wait_for("sendChatAction", 1, MEI)
        assert action.params["action"] == "typing"
        await alice.send(type="message", conversation_id=conversation_id, id="a1", text="Hi Mei, I'm Alice. Your number?")
        await alice.next("ack", id="a1")
        await mei.received("Hi Mei, I'm Alice. Your number?")

        await mei.say("It is 1Z999")
        assert (await alice.next("message", conversation_id=conversation_id))["text"] == "It is 1Z999"

        # Mei blocks the bot: Telegram answers 403; the agent hears it, and it is not tried again.
        api.fail("sendMessage", status=403, chat_id=MEI)
        await alice.send(type="message", conversation_id=conversation_id, id="a2", text="Found it, on its way")
        failed = await alice.next("delivery_failed", conversation_id=conversation_id)
        assert "blocked the bot" in failed["reason"]
        assert mei.texts().count("Found it, on its way") == 1
    finally:
        await gateway.stop()


async def test_a_429_for_one_chat_delays_that_chat_only(tmp_path: Path, sqlite_url: str, api: BotApi) -> None:
    gateway = await start(tmp_path, telegram_config(sqlite_url, api))
    try:
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
        mei, bo = Chat(gateway, api, MEI), Chat(gateway, api, BO)
        for_mei, for_bo = await handed_to(alice, mei), await handed_to(alice, bo)
        await mei.received("Let me find you an agent. Please hold on.")
        await bo.received("Let me find you an agent. Please hold on.")

        api.fail("sendMessage", status=429, retry_after=3, chat_id=MEI)
        await alice.send(type="message", conversation_id=for_mei, id="m1", text="Hello Mei")
        await alice.next("ack", id="m1")
        await mei.received("Hello Mei")  # the first try: 429
        await alice.send(type="message", conversation_id=for_bo, id="b1", text="Hello Bo")
        await bo.received("Hello Bo")
        await api.wait_for("sendMessage", len(api.sent("sendMessage", MEI)) + 1, MEI)
        order = [(c.chat_id, c.params["text"]) for c in api.calls
                 if c.method == "sendMessage" and c.params.get("text") in ("Hello Mei", "Hello Bo")]
        # Bo's went out while Mei's chat was held; Mei's went again after its retry_after, once.
        assert order == [(MEI, "Hello Mei"), (BO, "Hello Bo"), (MEI, "Hello Mei")]
    finally:
        await gateway.stop()
