"""A Telegram update, read: what the customer sent, who they are and what it is called. Pure:
no network, no store (the files it names are fetched by the channel).

The provider id of a message is ``<update_id>:<chat>:<message_id>`` and of a button press
``<update_id>:cb:<callback query id>``: Telegram resends an update with its update_id (a webhook
it thinks failed, getUpdates before the offset moved), so a resend is stored once, while an edit
of a message (a new update, the same message id) is a message of its own. The message id in it
keeps two messages apart even after Telegram starts counting update ids afresh (it may, after a
week without updates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telegram import CallbackQuery, Message, Update, User

from adapters.base import BotTurn

# What setWebhook / getUpdates ask Telegram for: what we read, nothing else.
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")

COMMANDS: dict[str, BotTurn] = {"start": "quiet", "help": "greet", "agent": "handoff"}


class UpdateRejected(ValueError):
    """The update is not one Telegram sends (a required field missing, a field of the wrong
    type): answered 400, logged."""


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file of the message, to be fetched with getFile."""

    file_id: str
    name: str
    content_type: str
    size: int | None   # what Telegram says; None when it does not


@dataclass(frozen=True, slots=True)
class Arrival:
    """A customer's message (or button press), ready to become an ``Inbound``."""

    chat_id: int
    client_id: str
    text: str
    name: str | None
    profile: dict[str, Any]
    files: tuple[FileRef, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    bot: BotTurn = "answer"
    callback_query_id: str | None = None   # answerCallbackQuery once stored


@dataclass(frozen=True, slots=True)
class Ignored:
    """An update we take (200) and do not store: a group chat, another bot, a kind we do not read."""

    reason: str


def read_update(update: Update) -> Arrival | Ignored:
    _check_types(update)
    if update.callback_query is not None:
        return _callback(update.update_id, update.callback_query)
    message, edited = update.message, False
    if message is None and update.edited_message is not None:
        message, edited = update.edited_message, True
    if message is None:
        return Ignored("an update of a kind this channel does not read")
    return _message(update.update_id, message, edited)


# The fields read here and the types Telegram sends them as. python-telegram-bot builds its
# objects without checking types, so a number where a string belongs would fail later, and the
# same way on every resend: refused (400) instead.
_TYPES: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {
    "message": (("message_id", (int,)), ("text", (str,)), ("caption", (str,))),
    "chat": (("id", (int,)), ("type", (str,))),
    "user": (("id", (int,)), ("first_name", (str,)), ("last_name", (str,)), ("username", (str,)),
             ("language_code", (str,))),
    "query": (("id", (str,)), ("data", (str,))),
}


def _check_types(update: Update) -> None:
    query = update.callback_query
    message = update.message or update.edited_message or (query.message if query is not None else None)
    parts = [("message", message), ("chat", getattr(message, "chat", None)),
             ("user", getattr(message, "from_user", None)), ("query", query),
             ("user", getattr(query, "from_user", None))]
    for kind, part in parts:
        if part is None:
            continue
        for name, types in _TYPES[kind]:
            value = getattr(part, name, None)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise UpdateRejected(f"a field of the wrong type: {kind}.{name} is {type(value).__name__}")


def _message(update_id: int, message: Message, edited: bool) -> Arrival | Ignored:
    chat, user = message.chat, message.from_user
    if chat is None or message.message_id is None:
        raise UpdateRejected("a message without chat or message_id")
    if chat.type != "private":
        return Ignored(f"a message in a {chat.type} chat (only private chats are read)")
    if user is None or user.is_bot:
        return Ignored("a message from a bot or without a sender")
    client_id = f"{update_id}:{chat.id}:{message.message_id}"
    profile = user_profile(user)
    details: dict[str, Any] = {}
    turn: BotTurn = "answer"
    text = (message.text or message.caption or "").strip()
    files = _files(message)
    if message.text and message.text.startswith("/"):
        command, _, payload = message.text[1:].partition(" ")
        command = command.split("@", 1)[0].lower()
        if command in COMMANDS:
            turn = COMMANDS[command]
            details["command"] = command
            payload = payload.strip()
            if command == "start" and payload:
                profile["telegram_start"] = payload[:256]  # a deep link's payload: t.me/<bot>?start=<payload>
    if message.location is not None:
        loc = message.location
        details["location"] = {"latitude": loc.latitude, "longitude": loc.longitude}
        venue = message.venue
        where = f"{venue.title}, {venue.address}: " if venue is not None else ""
        text = f"Location: {where}{loc.latitude:.6f}, {loc.longitude:.6f}"
    if message.contact is not None:
        contact = message.contact
        phone = contact.phone_number or ""
        details["contact"] = {"phone": phone, "first_name": contact.first_name, "last_name": contact.last_name,
                              "user_id": contact.user_id}
        who = " ".join(p for p in (contact.first_name, contact.last_name) if p)
        text = f"Contact: {who}, {phone}" if who else f"Contact: {phone}"
        if contact.user_id == user.id and phone:  # the customer shared their own number
            profile["phone"] = phone if phone.startswith("+") else "+" + phone
    if not text and files:
        text = _placeholder(message)
    if not text and message.sticker is not None:
        text = f"(sticker {message.sticker.emoji or ''})".replace(" )", ")")
        turn = "quiet"  # for the agent to see; not a question for the bot
    if not text:
        return Ignored("a message with nothing this channel reads (no text, file, location or contact)")
    if edited:
        details["edited"] = message.message_id
        turn = "quiet"  # the bot answered the first version already
    return Arrival(chat_id=chat.id, client_id=client_id, text=text, name=user.full_name or None, profile=profile,
                   files=files, details=details, bot=turn)


def _callback(update_id: int, query: CallbackQuery) -> Arrival | Ignored:
    user, message = query.from_user, query.message
    if user is None or not query.id:
        raise UpdateRejected("a callback_query without id or from")
    if message is None or message.chat is None:
        return Ignored("a button press on a message we cannot see (an inline message)")
    if message.chat.type != "private":
        return Ignored(f"a button press in a {message.chat.type} chat (only private chats are read)")
    value = query.data or ""
    label = button_label(message, value) or value
    if not label:
        return Ignored("a button press without data (a game button)")
    return Arrival(chat_id=message.chat.id, client_id=f"{update_id}:cb:{query.id}", text=label,
                   name=user.full_name or None, profile=user_profile(user),
                   details={"choice": {"value": value, "message": message.message_id}},
                   callback_query_id=query.id)


def button_label(message: Any, value: str) -> str | None:
    """The text of the button whose callback data is ``value``, on the message it was pressed on
    (Telegram sends the message back with its keyboard; an old one may come without)."""
    markup = getattr(message, "reply_markup", None)
    for row in getattr(markup, "inline_keyboard", None) or ():
        for button in row:
            if button.callback_data == value:
                return button.text
    return None


def user_profile(user: User) -> dict[str, Any]:
    """What the customer's profile keeps of the Telegram user. ``language`` is the primary tag
    of the app's language ("zh" of "zh-hans"), which routing's ``language`` condition reads."""
    language = (user.language_code or "").split("-", 1)[0].lower() or None
    return {"telegram_id": user.id, "telegram_username": user.username, "language": language}


_KINDS = (("document", "document", "application/octet-stream"), ("audio", "audio", "audio/mpeg"),
          ("video", "video", "video/mp4"), ("voice", "voice message", "audio/ogg"),
          ("video_note", "video message", "video/mp4"), ("animation", "animation", "video/mp4"))
_EXTENSIONS = {"audio/ogg": "ogg", "audio/mpeg": "mp3", "video/mp4": "mp4", "image/jpeg": "jpg"}


def _files(message: Message) -> tuple[FileRef, ...]:
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return (FileRef(largest.file_id, f"photo_{message.message_id}.jpg", "image/jpeg", largest.file_size),)
    for attr, _, default_type in _KINDS:
        item = getattr(message, attr, None)
        if item is None:
            continue
        content_type = getattr(item, "mime_type", None) or default_type
        name = getattr(item, "file_name", None) or f"{attr}_{message.message_id}.{_EXTENSIONS.get(content_type, 'bin')}"
        return (FileRef(item.file_id, name, content_type, item.file_size),)
    return ()


def _placeholder(message: Message) -> str:
    if message.photo:
        return "(photo)"
    for attr, words, _ in _KINDS:
        item = getattr(message, attr, None)
        if item is not None:
            name = getattr(item, "file_name", None)
            return f"({words} {name})" if name else f"({words})"
    return "(file)"
