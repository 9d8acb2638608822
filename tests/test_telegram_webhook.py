"""The Telegram webhook: the real gateway process, Telegram's side played by the test (POSTs of
updates in Telegram's JSON) and the Bot API by the stand-in (tests/telegram_api.py), reached by
the real python-telegram-bot client through ``api_base``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import AsyncIterator

import pytest_asyncio

from support import GatewayProcess, database_away, serve_until_exit, serving
from support_telegram import (PATH, SECRET, admin_get, conversations, events, messages, only_conversation, post_update,
                              serve_api, start, telegram_config)
from telegram_api import TOKEN, BotApi, message, user

CHAT = 5551001


@pytest_asyncio.fixture
async def api() -> AsyncIterator[BotApi]:
    async with serve_api() as bot_api:
        yield bot_api


async def test_secret_body_and_the_same_update_twice(tmp_path: Path, store_url: str, api: BotApi) -> None:
    gateway = await start(tmp_path, telegram_config(store_url, api))
    try:
        # At start the webhook is set, with our secret and only the updates we read.
        await api.wait_for("setWebhook")
        assert api.webhook == {"url": "https://support.acme.example" + PATH, "secret_token": SECRET,
                               "allowed_updates": ["message", "edited_message", "callback_query"]}
        update = {"update_id": 700, "message": message(CHAT, "How do I track my parcel?", message_id=1,
                                                       sender=user(CHAT, language_code="de"))}
        assert (await post_update(gateway, update, secret=None))[0] == 401
        status, answer = await post_update(gateway, update, secret="wrong-secret")
        assert status == 401 and answer["error"] == "unauthorized"
        status, answer = await post_update(gateway, None, raw=b"{not json")
        assert status == 400 and answer["error"] == "bad_update"
        assert (await post_update(gateway, {"message": {"text": "no update_id"}}))[0] == 400
        status, answer = await post_update(gateway, {"update_id": 699, "message": {**message(CHAT, message_id=1), "text": 42}})
        assert status == 400 and "message.text is int" in answer["message"], answer
        assert (await post_update(gateway, None, raw=b'{"update_id": 1, "pad": "' + b"x" * 1_100_000 + b'"}'))[0] == 413
        assert await conversations(gateway) == [], "nothing was processed"

        assert await post_update(gateway, update) == (200, {"ok": True})
        conversation_id, first = await only_conversation(gateway)
        assert messages(first)[1:] == [("customer", "How do I track my parcel?"), ("bot", messages(first)[2][1])]
        assert "track" in messages(first)[2][1].lower()
        # Telegram thought the answer was slow and sent the update again: stored once.
        assert await post_update(gateway, update) == (200, {"ok": True})
        assert await events(gateway, conversation_id) == first
        # The greeting and the FAQ answer went out through the Bot API, once each.
        sent = await api.wait_for("sendMessage", 2, chat_id=CHAT)
        assert [c.params["text"] for c in sent] == [text for author, text in messages(first) if author == "bot"]

        customer = await admin_get(gateway, f"/api/customers/{(await conversations(gateway))[0]['customer_id']}")
        assert customer["name"] == "Mei Chen"
        assert customer["attributes"] == {"telegram_id": CHAT, "telegram_username": "meichen", "language": "de"}
    finally:
        await gateway.stop()
    assert TOKEN not in gateway.log_text(), "the bot's token is never logged"


async def test_a_rejected_token_stops_the_start_with_one_clear_line(tmp_path: Path, sqlite_url: str,
                                                                   api: BotApi) -> None:
    gateway = GatewayProcess.write_config(tmp_path, telegram_config(sqlite_url, api, token="999:revoked"))
    result = await serve_until_exit(gateway.config_path)
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [line] = [r for r in lines if r.get("msg") == "cannot start"]
    assert "telegram channel 'telegram': the Bot API rejected the token" in line["error"]
    assert "999:revoked" not in result.stderr and "Traceback" not in result.stderr


async def test_a_photo_a_file_too_large_and_a_failed_download(tmp_path: Path, sqlite_url: str, api: BotApi) -> None:
    gateway = await start(tmp_path, telegram_config(sqlite_url, api))
    try:
        picture = bytes(range(256)) * 40
        small, large = api.add_file(picture[:1000], suffix="jpg"), api.add_file(picture, suffix="jpg")
        photo = [{"file_id": small, "file_unique_id": "s", "width": 90, "height": 90, "file_size": 1000},
                 {"file_id": large, "file_unique_id": "l", "width": 1280, "height": 960, "file_size": len(picture)}]
        api.fail("getFile", status=500)  # the Bot API had a bad moment: not stored, Telegram sends it again
        update = {"update_id": 701, "message": message(CHAT, caption="the box arrived like this", photo=photo)}
        status, answer = await post_update(gateway, update)
        assert status == 500 and answer["error"] == "internal"
        assert await conversations(gateway) == []
        assert await post_update(gateway, update) == (200, {"ok": True})
        conversation_id, found = await only_conversation(gateway)
        stored = next(e for e in found if e["author"] == "customer")
        assert stored["text"] == "the box arrived like this"
        [attachment] = stored["data"]["attachments"]
        assert attachment["content_type"] == "image/jpeg" and attachment["size"] == len(picture)
        assert await admin_get(gateway, f"/api/attachments/{attachment['id']}") == picture  # the largest size

        # Over attachments.max_bytes: never downloaded; the customer is told, the text is kept.
        huge = api.add_file(b"%PDF", size=60_000, suffix="pdf")
        document = {"file_id": huge, "file_unique_id": "h", "file_name": "scan.pdf", "mime_type": "application/pdf",
                    "file_size": 60_000}
        assert (await post_update(gateway, {"update_id": 702, "message": message(CHAT, document=document)}))[0] == 200
        found = await events(gateway, conversation_id)
        said = messages(found)
        at = said.index(("customer", "(document scan.pdf)"))
        note = said[at + 1]
        assert note[0] == "bot" and '"scan.pdf"' in note[1] and "could not accept" in note[1]
        assert not [c for c in api.calls if c.method == "download" and c.params["path"].endswith(".pdf")]
    finally:
        await gateway.stop()


async def test_a_button_press_an_edit_and_commands(tmp_path: Path, sqlite_url: str, api: BotApi) -> None:
    gateway = await start(tmp_path, telegram_config(sqlite_url, api))
    try:
        start_update = {"update_id": 710, "message": message(CHAT, "/start order_123", message_id=1)}
        assert (await post_update(gateway, start_update))[0] == 200
        conversation_id, found = await only_conversation(gateway)
        assert [a for a, _ in messages(found)] == ["bot", "customer"], "the greeting only: /start gets no FAQ answer"
        customer = await admin_get(gateway, f"/api/customers/{(await conversations(gateway))[0]['customer_id']}")
        assert customer["attributes"]["telegram_start"] == "order_123"

        assert (await post_update(gateway, {"update_id": 711, "message": message(CHAT, "/help", message_id=2)}))[0] == 200
        found = await events(gateway, conversation_id)
        assert messages(found)[-1] == messages(found)[0], "/help repeats the greeting"

        # A press on a button we sent (Telegram sends the message back with its keyboard).
        ours = {"message_id": 900, "date": 1700000000, "chat": {"id": CHAT, "type": "private"},
                "text": "Did this help?", "reply_markup": {"inline_keyboard": [
                    [{"text": "Yes, thanks", "callback_data": "yes"}], [{"text": "No", "callback_data": "no"}]]}}
        press = {"update_id": 712, "callback_query": {"id": "cbq-77", "from": user(CHAT), "chat_instance": "c",
                                                      "data": "no", "message": ours}}
        assert (await post_update(gateway, press))[0] == 200
        [answered] = await api.wait_for("answerCallbackQuery")
        assert answered.params["callback_query_id"] == "cbq-77"
        found = await events(gateway, conversation_id)
        choice = [e for e in found if e["author"] == "customer"][-1]
        assert choice["text"] == "No" and choice["data"]["choice"] == {"value": "no", "message": 900}

        # An edit is recorded as an edit; the bot does not answer it again.
        before = len(found)
        edit = {"update_id": 713, "edited_message": message(CHAT, "/help me with 1Z999", message_id=2,
                                                            edit_date=1700000100)}
        assert (await post_update(gateway, edit))[0] == 200
        found = await events(gateway, conversation_id)
        assert len(found) == before + 1
        assert found[-1]["author"] == "customer" and found[-1]["data"]["edited"] == 2

        # /agent hands off at once, whatever the handoff phrases are.
        assert (await post_update(gateway, {"update_id": 714, "message": message(CHAT, "/agent", message_id=3)}))[0] == 200
        found = await events(gateway, conversation_id)
        assert found[-1]["kind"] == "queued" and found[-1]["data"]["reason"] == "handoff"
    finally:
        await gateway.stop()


async def test_a_store_that_is_down_answers_500_and_telegrams_retry_is_stored_once(
        tmp_path: Path, pg_url: str, pg_admin_dsn: str, api: BotApi) -> None:
    gateway = await start(tmp_path, telegram_config(pg_url, api))
    try:
        update = {"update_id": 900, "message": message(CHAT, "How do I track my parcel?", message_id=9)}
        async with database_away(pg_url, pg_admin_dsn):
            status, _ = await post_update(gateway, update)
            assert status == 500  # Telegram delivers the update again later
        assert await post_update(gateway, update) == (200, {"ok": True})
        assert await post_update(gateway, update) == (200, {"ok": True})
        _, found = await only_conversation(gateway)
        assert [text for author, text in messages(found) if author == "customer"] == ["How do I track my parcel?"]
    finally:
        await gateway.stop()


async def test_two_bots_in_one_gateway_keep_their_own_conversations_and_replies_for_one_customer(
        tmp_path: Path, sqlite_url: str, api: BotApi) -> None:
    other_token = "987654321:AAsecond-bot_for_the_stand-in"
    other = BotApi(token=other_token)
    async with serving(other.app()) as other_port:
        config = telegram_config(sqlite_url, api)
        config["channels"].append({"type": "telegram", "name": "telegram-cn", "token": other_token,
                                   "api_base": f"http://127.0.0.1:{other_port}", "mode": "polling",
                                   "poll_timeout": 1, "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5}})
        gateway = await start(tmp_path, config)
        try:
            # The same Telegram user writes to both bots: two channels, two conversations, one
            # customer (a Telegram user id is a verified identity: docs/customers.md).
            assert await post_update(gateway, {"update_id": 1, "message": message(CHAT, "How do I track my parcel?")}) \
                == (200, {"ok": True})
            other.push({"message": message(CHAT, "How do I track my parcel?", message_id=7)})
            answers = await api.wait_for("sendMessage", 2, chat_id=CHAT)        # greeting, FAQ answer
            other_answers = await other.wait_for("sendMessage", 2, chat_id=CHAT)
            assert [c.params["text"] for c in answers] == [c.params["text"] for c in other_answers]
            first = await admin_get(gateway, "/api/conversations?channel=telegram")
            second = await admin_get(gateway, "/api/conversations?channel=telegram-cn")
            assert len(first["conversations"]) == len(second["conversations"]) == 1
            assert first["conversations"][0]["customer_id"] == second["conversations"][0]["customer_id"]
            assert other.webhook is None and api.webhook is not None
        finally:
            await gateway.stop()
