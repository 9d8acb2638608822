"""What the outbox's ``deliver`` sends, through the real python-telegram-bot client to the Bot API
stand-in: choices as an inline keyboard (the way self-service's offers will reach a Telegram
customer), photos and documents, long text in pieces, and the flood limits on an injected clock
(a chat over its limit is deferred, no try spent, and the next piece goes on from there)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from adapters.base import Deferred, PermanentFailure, Sent, TemporaryFailure
from adapters.telegram.channel import Settings, TelegramChannel, create
from gateway.model import (Attachment, Author, Conversation, ConversationState, Customer, Event, EventKind, OutboxItem,
                           OutboxStatus)
from support_telegram import serve_api
from telegram_api import TOKEN, BotApi

CHAT = 5554001
NOW = datetime(2026, 1, 5, tzinfo=timezone.utc)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Port:
    """The little of the gateway ``deliver`` asks for."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[Attachment, bytes]] = {}

    def add(self, name: str, content_type: str, data: bytes) -> dict[str, Any]:
        attachment = Attachment(f"att{len(self.files)}", "c1", name, content_type, len(data),
                                hashlib.sha256(data).hexdigest(), NOW)
        self.files[attachment.id] = (attachment, data)
        return attachment.summary()

    async def get_customer(self, customer_id: str) -> Customer:
        return Customer(customer_id, "Mei", None, {"telegram_id": CHAT})

    async def get_attachment(self, attachment_id: str) -> tuple[Attachment, bytes]:
        return self.files[attachment_id]


@pytest_asyncio.fixture
async def api() -> AsyncIterator[BotApi]:
    async with serve_api() as bot_api:
        yield bot_api


@pytest_asyncio.fixture
async def channel(api: BotApi) -> AsyncIterator[TelegramChannel]:
    settings = Settings.model_validate({"token": TOKEN, "mode": "polling", "api_base": f"http://127.0.0.1:{api.port}",
                                        "flood": {"per_chat": {"rate": 1, "burst": 2}}})
    create("telegram", settings, Port())  # type: ignore[arg-type]  # (its process-wide log and warning settings)
    found = TelegramChannel("telegram", settings, Port(), clock=Clock())  # type: ignore[arg-type]
    await found.bot.initialize()
    yield found
    await found.bot.shutdown()


CONVERSATION = Conversation("c1", "cust1", "telegram", ConversationState.BOT, None, None, 3, NOW, NOW)


def event(seq: int, text: str | None, **data: Any) -> Event:
    return Event("c1", seq, Author.BOT, EventKind.MESSAGE, text, None, data, NOW)


def item(seq: int) -> OutboxItem:
    return OutboxItem(f"item{seq}", "c1", seq, "telegram", OutboxStatus.PENDING, 1, NOW, None, None, NOW)


async def test_choices_become_an_inline_keyboard(channel: TelegramChannel, api: BotApi) -> None:
    outcome = await channel.deliver(CONVERSATION, event(2, "Did you mean one of these?", choices=[
        "Track a parcel", {"text": "Change the address", "value": "faq:address"}]), item(2))
    assert isinstance(outcome, Sent) and outcome.ref and outcome.ref.startswith(f"out:{CHAT}:")
    [sent] = api.sent("sendMessage", CHAT)
    assert sent.params["text"] == "Did you mean one of these?"
    assert sent.json("reply_markup") == {"inline_keyboard": [
        [{"text": "Track a parcel", "callback_data": "Track a parcel"}],
        [{"text": "Change the address", "callback_data": "faq:address"}]]}


async def test_files_go_as_photo_and_document_and_long_text_in_pieces(channel: TelegramChannel, api: BotApi) -> None:
    port: Port = channel.gateway  # type: ignore[assignment]
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    files = [port.add("label.png", "image/png", png), port.add("invoice.pdf", "application/pdf", b"%PDF-1.4 ...")]
    text = ("All the details are in the attached files. " * 120).strip()
    first = await channel.deliver(CONVERSATION, event(2, text, attachments=files), item(2))
    # Four parts; the chat's burst is two: two went, then the flood limit defers the rest.
    assert isinstance(first, Deferred) and first.seconds == pytest.approx(1.0)
    assert len(api.sent("sendMessage", CHAT)) == 2 and not api.sent("sendPhoto")
    clock: Clock = channel._clock  # type: ignore[assignment]
    clock.now += 1
    assert isinstance(await channel.deliver(CONVERSATION, event(2, text, attachments=files), item(2)), Deferred)
    clock.now += 1
    assert isinstance(await channel.deliver(CONVERSATION, event(2, text, attachments=files), item(2)), Sent)
    pieces = [c.params["text"] for c in api.sent("sendMessage", CHAT)]
    assert " ".join(pieces) == text and len(pieces) == 2, "no piece sent twice"
    [photo], [document] = api.sent("sendPhoto", CHAT), api.sent("sendDocument", CHAT)
    assert photo.file("photo")[1] == png  # type: ignore[index]
    assert document.file("document")[:2] == ("invoice.pdf", b"%PDF-1.4 ...")  # type: ignore[index]


async def test_errors_are_temporary_or_permanent(channel: TelegramChannel, api: BotApi) -> None:
    api.fail("sendMessage", status=429, retry_after=7)
    with pytest.raises(TemporaryFailure) as held:
        await channel.deliver(CONVERSATION, event(2, "one"), item(2))
    assert held.value.retry_after == 7
    assert channel.gate.held(CHAT) == pytest.approx(7), "that chat waits; the outbox defers what else it has"
    assert isinstance(await channel.deliver(CONVERSATION, event(3, "two"), item(3)), Deferred)
    channel._clock.now += 7  # type: ignore[attr-defined]
    api.fail("sendMessage", status=500)
    with pytest.raises(TemporaryFailure, match="unreachable"):
        await channel.deliver(CONVERSATION, event(2, "one"), item(2))
    api.fail("sendMessage", status=400)
    with pytest.raises(PermanentFailure, match="Chat not found"):
        await channel.deliver(CONVERSATION, event(2, "one"), item(2))
    channel._clock.now += 1  # type: ignore[attr-defined]  # a refused try counts against the chat's rate too
    api.fail("sendMessage", status=403)
    with pytest.raises(PermanentFailure, match="blocked the bot"):
        await channel.deliver(CONVERSATION, event(2, "one"), item(2))
