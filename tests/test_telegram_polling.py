"""Telegram by polling: the gateway's own getUpdates loop against the Bot API stand-in. The offset
moves past an update only once it is stored; a restart picks up what Telegram still holds, and
what it sends again is stored once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest_asyncio

from support_telegram import events, messages, only_conversation, serve_api, start, telegram_config
from telegram_api import BotApi, message

CHAT = 5552001


@pytest_asyncio.fixture
async def api() -> AsyncIterator[BotApi]:
    async with serve_api() as bot_api:
        yield bot_api


def offsets(api: BotApi, upto: int | None = None) -> list[int | None]:
    calls = [c for c in api.calls[:upto] if c.method == "getUpdates"]
    return [int(c.params["offset"]) if c.params.get("offset") else None for c in calls]


async def stored_updates(api: BotApi, update_id: int) -> None:
    """Wait until the loop asks for what comes after ``update_id``: it stored that one."""
    async with asyncio.timeout(15):
        while update_id + 1 not in offsets(api):
            await api.wait_for("getUpdates", len(api.sent("getUpdates")) + 1)


async def test_offset_moves_only_after_storing_and_a_restart_resumes(tmp_path: Path, sqlite_url: str,
                                                                     api: BotApi) -> None:
    api.webhook = {"url": "https://old.example/hook"}  # left over from webhook mode
    config = telegram_config(sqlite_url, api, mode="polling")
    gateway = await start(tmp_path, config)
    try:
        first = api.push({"message": message(CHAT, "How do I track my parcel?", message_id=1)})
        await stored_updates(api, first["update_id"])
        assert api.sent("deleteWebhook") and api.webhook is None, "polling deletes a webhook first"
        assert offsets(api)[0] is None

        # A photo whose download fails twice: the update is tried again, the offset stays put.
        file_id = api.add_file(b"\xff\xd8 a small jpeg")
        api.fail("getFile", status=500, times=2)
        photo = api.push({"message": message(CHAT, photo=[{"file_id": file_id, "file_unique_id": "p", "width": 9,
                                                           "height": 9, "file_size": 15}], message_id=2)})
        await api.wait_for("getFile", 3)
        third_get_file = next(i for i, c in enumerate(api.calls) if c.method == "getFile" and
                              len([d for d in api.calls[:i + 1] if d.method == "getFile"]) == 3)
        assert max(o or 0 for o in offsets(api, third_get_file)) <= photo["update_id"]
        await stored_updates(api, photo["update_id"])
        conversation_id, found = await only_conversation(gateway)
        assert [e["data"].get("attachments", [{}])[0].get("size") for e in found
                if e["author"] == "customer"] == [None, 15]
    finally:
        await gateway.stop()

    # While the gateway is down a customer writes; Telegram keeps it until it is confirmed.
    later = api.push({"message": message(CHAT, "Hello? Anyone?", message_id=3)})
    gateway = await start(tmp_path, config)
    try:
        await stored_updates(api, later["update_id"])
    finally:
        await gateway.stop()
    # As if that process died after storing the update but before its next getUpdates told
    # Telegram so: Telegram sends it again.
    api.pending.insert(0, later)
    again = api.push({"message": message(CHAT, "still there?", message_id=4)})
    gateway = await start(tmp_path, config)
    try:
        await stored_updates(api, again["update_id"])
        customer = [t for a, t in messages(await events(gateway, conversation_id)) if a == "customer"]
        assert customer == ["How do I track my parcel?", "(photo)", "Hello? Anyone?", "still there?"]
    finally:
        await gateway.stop()
