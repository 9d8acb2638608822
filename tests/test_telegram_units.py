"""The Telegram channel's pure parts: flood limits and wait news on an injected clock (never wall
time), updates read as Telegram writes them, outgoing events cut into Telegram messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from telegram import Update

from adapters.telegram.channel import Settings
from adapters.telegram.flood import FloodGate, WaitNews
from adapters.telegram.send import MAX_TEXT, render, split_text
from adapters.telegram.updates import Arrival, Ignored, UpdateRejected, read_update
from gateway.config import load_config
from gateway.limits import Rate
from support import REPO
from telegram_api import callback, message, user


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# flood limits ----------------------------------------------------------------------------------
def test_one_chat_gets_its_burst_then_one_message_a_second() -> None:
    clock = Clock()
    gate = FloodGate(Rate(rate=30, burst=30), Rate(rate=1, burst=2), clock)
    assert gate.reserve(1) == 0 and gate.reserve(1) == 0
    assert gate.reserve(1) == pytest.approx(1.0)
    assert gate.reserve(2) == 0, "another chat is not held back by the first one"
    clock.now += 0.5
    assert gate.reserve(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert gate.reserve(1) == 0
    assert gate.reserve(1) == pytest.approx(1.0)


def test_the_bot_limit_holds_back_every_chat() -> None:
    clock = Clock()
    gate = FloodGate(Rate(rate=30, burst=30), Rate(rate=1, burst=1), clock)
    for chat in range(30):
        assert gate.reserve(chat) == 0
    assert gate.reserve(99) == pytest.approx(1 / 30)
    clock.now += 0.04
    assert gate.reserve(99) == 0


def test_a_429_holds_that_chat_only_for_its_retry_after() -> None:
    clock = Clock()
    gate = FloodGate(Rate(rate=30, burst=30), Rate(rate=1, burst=5), clock)
    gate.hold(7, 12)
    assert gate.reserve(7) == pytest.approx(12)
    assert gate.held(7) == pytest.approx(12)
    assert gate.reserve(8) == 0
    clock.now += 11.5
    assert gate.reserve(7) == pytest.approx(0.5)
    clock.now += 0.5
    assert gate.held(7) == 0 and gate.reserve(7) == 0


def test_a_refused_reservation_counts_nothing() -> None:
    clock = Clock()
    gate = FloodGate(Rate(rate=1, burst=1), Rate(rate=10, burst=10), clock)
    assert gate.reserve(1) == 0
    for _ in range(5):
        assert gate.reserve(2) > 0
    clock.now += 1
    assert gate.reserve(2) == 0


def test_the_gate_forgets_the_oldest_chats_past_its_bound() -> None:
    gate = FloodGate(Rate(rate=1000, burst=1000), Rate(rate=1, burst=1), Clock(), max_chats=100)
    for chat in range(150):
        gate.reserve(chat)
    assert len(gate._chats) == 100


# wait news -----------------------------------------------------------------------------------------
def test_wait_news_on_entering_then_only_when_it_changed_a_lot() -> None:
    clock = Clock()
    news = WaitNews(interval=60, clock=clock)
    assert news.moved("c1", 3, 300) is None, "nothing before the queued news"
    assert news.queued("c1", 3, 300) == "You are number 3 in line. Estimated wait: about 5 minutes."
    clock.now += 30
    assert news.moved("c1", 1, 0) is None, "never twice within the interval"
    clock.now += 30
    assert news.moved("c1", 2, 280) is None, "a small change is not news"
    assert news.moved("c1", 1, 0) == "You are next in line; an agent will be with you shortly."
    clock.now += 60
    assert news.moved("c1", 1, 0) is None
    news.forget("c1")
    assert news.moved("c1", 1, 0) is None


def test_a_big_change_of_the_estimate_is_news() -> None:
    clock = Clock()
    news = WaitNews(interval=60, clock=clock)
    news.queued("c1", 5, 120)
    clock.now += 61
    assert news.moved("c1", 5, 150) is None
    assert news.moved("c1", 6, 600) == "You are number 6 in line. Estimated wait: about 10 minutes."


def test_wait_news_in_the_language_the_customer_writes_in() -> None:
    clock = Clock()
    news = WaitNews(interval=60, clock=clock)
    news.heard("c1", "zh")
    assert news.queued("c1", 3, 300) == "您目前排在第 3 位,预计等待约 5 分钟。"
    clock.now += 61
    assert news.moved("c1", 1, 0) == "下一位就是您,客服马上为您服务。"
    assert news.queued("c2", 2, 0) == "You are number 2 in line; an agent will be with you shortly."  # not heard: en


# updates in --------------------------------------------------------------------------------------
def read(data: dict[str, Any]) -> Arrival | Ignored:
    return read_update(Update.de_json({"update_id": 42, **data}, None))


def test_a_text_message_and_the_user_as_profile() -> None:
    found = read({"message": message(555, "Where is my parcel?", message_id=9,
                                     sender=user(555, language_code="zh-hans"))})
    assert isinstance(found, Arrival)
    assert found.client_id == "42:555:9" and found.chat_id == 555 and found.bot == "answer"
    assert found.text == "Where is my parcel?" and found.name == "Mei Chen"
    assert found.profile == {"telegram_id": 555, "telegram_username": "meichen", "language": "zh"}


def test_commands_start_with_a_deep_link_help_and_agent() -> None:
    start = read({"message": message(555, "/start order_123")})
    assert isinstance(start, Arrival) and start.bot == "quiet"
    assert start.profile["telegram_start"] == "order_123" and start.details == {"command": "start"}
    assert read({"message": message(555, "/help")}).bot == "greet"  # type: ignore[union-attr]
    assert read({"message": message(555, "/agent@acme_support_bot")}).bot == "handoff"  # type: ignore[union-attr]
    assert read({"message": message(555, "/track 1Z999")}).bot == "answer"  # type: ignore[union-attr]


def test_the_largest_photo_a_document_and_a_voice_message() -> None:
    sizes = [{"file_id": f"P{w}", "file_unique_id": f"u{w}", "width": w, "height": w, "file_size": w * 10}
             for w in (90, 800, 320)]
    photo = read({"message": message(555, caption="the box", photo=sizes, message_id=3)})
    assert isinstance(photo, Arrival) and photo.text == "the box"
    assert [(f.file_id, f.name, f.content_type, f.size) for f in photo.files] == [("P800", "photo_3.jpg", "image/jpeg", 8000)]
    document = read({"message": message(555, document={"file_id": "D1", "file_unique_id": "d", "file_name": "invoice.pdf",
                                                       "mime_type": "application/pdf", "file_size": 12})})
    assert isinstance(document, Arrival) and document.text == "(document invoice.pdf)"
    assert document.files[0].content_type == "application/pdf"
    voice = read({"message": message(555, voice={"file_id": "V1", "file_unique_id": "v", "duration": 3}, message_id=4)})
    assert isinstance(voice, Arrival) and voice.text == "(voice message)"
    assert voice.files[0].name == "voice_4.ogg" and voice.files[0].content_type == "audio/ogg"


def test_locations_and_contacts_are_structured_text() -> None:
    place = read({"message": message(555, location={"latitude": 52.52, "longitude": 13.405})})
    assert isinstance(place, Arrival) and place.text == "Location: 52.520000, 13.405000"
    assert place.details["location"] == {"latitude": 52.52, "longitude": 13.405}
    own = read({"message": message(555, contact={"phone_number": "4930123", "first_name": "Mei", "user_id": 555})})
    assert isinstance(own, Arrival) and own.text == "Contact: Mei, 4930123" and own.profile["phone"] == "+4930123"
    other = read({"message": message(555, contact={"phone_number": "+1555", "first_name": "Bo", "user_id": 9})})
    assert isinstance(other, Arrival) and "phone" not in other.profile


def test_an_edit_is_a_message_of_its_own_the_bot_does_not_answer() -> None:
    edit = read({"edited_message": message(555, "Where is parcel 1Z999?", message_id=9, edit_date=1700000000)})
    assert isinstance(edit, Arrival)
    assert edit.details == {"edited": 9} and edit.bot == "quiet" and edit.client_id == "42:555:9"


def test_a_button_press_is_the_customer_choosing_its_label() -> None:
    sent = {"message_id": 77, "date": 1700000000, "chat": {"id": 555, "type": "private"}, "text": "Did this help?",
            "reply_markup": {"inline_keyboard": [[{"text": "Yes, thanks", "callback_data": "yes"}],
                                                 [{"text": "No", "callback_data": "no"}]]}}
    press = read({"callback_query": callback(555, "yes", sent, query_id="q1")})
    assert isinstance(press, Arrival)
    assert press.text == "Yes, thanks" and press.callback_query_id == "q1" and press.client_id == "42:cb:q1"
    assert press.details == {"choice": {"value": "yes", "message": 77}}


def test_a_sticker_is_kept_for_the_agent_and_not_a_question_for_the_bot() -> None:
    found = read({"message": message(555, sticker={"file_id": "s1", "file_unique_id": "u1", "width": 512,
                                                   "height": 512, "is_animated": False, "is_video": False,
                                                   "type": "regular", "emoji": "👍"})})
    assert isinstance(found, Arrival)
    assert found.text == "(sticker 👍)" and found.bot == "quiet"


def test_what_is_not_read() -> None:
    group = message(555, "hi")
    group["chat"] = {"id": -100, "type": "group", "title": "G"}
    assert isinstance(read({"message": group}), Ignored)
    assert isinstance(read({"message": message(555, "hi", sender={**user(555), "is_bot": True})}), Ignored)
    assert isinstance(read({"message": message(555)}), Ignored)
    assert isinstance(read({"inline_query": {"id": "1", "from": user(1), "query": "x", "offset": ""}}), Ignored)
    with pytest.raises(UpdateRejected):
        read({"callback_query": {"id": "", "from": user(1), "chat_instance": "c"}})


@pytest.mark.parametrize("change", [
    lambda m: m.update(text=42),
    lambda m: m.update(text=["a"]),
    lambda m: m.update(caption={"x": 1}, text=None),
    lambda m: m["from"].update(first_name=7),
])
def test_a_field_of_the_wrong_type_is_refused(change) -> None:
    """Not an update Telegram sends, and one that would fail the same way each time: 400, not a
    500 that Telegram answers by sending it again and again."""
    sent = message(555, "hi")
    change(sent)
    with pytest.raises(UpdateRejected, match="wrong type"):
        read({"message": sent})
    press = {"message_id": 77, "date": 1700000000, "chat": {"id": 555, "type": "private"}, "text": "Did this help?"}
    with pytest.raises(UpdateRejected, match="wrong type"):
        read({"callback_query": {**callback(555, "yes", press, query_id="q1"), "data": 5}})


# messages out -----------------------------------------------------------------------------------
def test_long_text_is_cut_at_spaces_within_telegrams_limit() -> None:
    text = ("word " * 2000).strip()
    pieces = split_text(text)
    assert len(pieces) == 3 and all(len(p) <= MAX_TEXT for p in pieces)
    assert " ".join(pieces) == text
    emoji = "😀" * 3000  # two UTF-16 units each
    assert [len(p) for p in split_text(emoji)] == [2048, 952]
    assert split_text("  ") == []


def test_attachments_and_choices_become_parts() -> None:
    parts = render("Here you go", {"attachments": [
        {"id": "a1", "name": "label.png", "content_type": "image/png", "size": 100},
        {"id": "a2", "name": "invoice.pdf", "content_type": "application/pdf", "size": 100}],
        "choices": ["Yes", {"text": "No, something else", "value": "no"}, "x" * 80]})
    assert [p.kind for p in parts] == ["text", "photo", "document"]
    assert parts[0].buttons == () and parts[2].buttons == (("Yes", "Yes"), ("No, something else", "no"), ("x" * 80, "#3"))
    only = render(None, {"choices": ["A"]})
    assert [(p.kind, p.text, p.buttons) for p in only] == [("text", "Please choose:", (("A", "A"),))]
    assert render("", {}) == []


def test_settings_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="secret_token"):
        Settings.model_validate({"token": "t"})
    with pytest.raises(ValueError, match="1-256 characters"):
        Settings.model_validate({"token": "t", "secret_token": "has space"})
    with pytest.raises(ValueError, match="mode webhook"):
        Settings.model_validate({"token": "t", "mode": "polling", "public_url": "https://x.example/tg"})
    with pytest.raises(ValueError, match="extra"):
        Settings.model_validate({"token": "t", "mode": "polling", "webhook_url": "x"})
    assert Settings.model_validate({"token": "t", "mode": "polling"}).flood.per_chat.rate == 1


def test_the_shipped_telegram_example_is_valid_once_uncommented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines, out, inside = (REPO / "config.yaml").read_text(encoding="utf-8").splitlines(), [], False
    for line in lines:
        if line.startswith("  # - type: telegram"):
            inside = True
        elif inside and not line.startswith("  #"):
            inside = False
        if inside and not line.startswith("  #   #"):
            line = "  " + line[4:]
        out.append(line)
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    (tmp_path / "faq").symlink_to(REPO / "faq")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    telegram = next(c for c in load_config(path).channels if c.type == "telegram")
    assert Settings.model_validate(telegram.settings).mode == "polling"
