"""The Telegram channel: one bot (``type: telegram``; several bots are several channels), driven
through python-telegram-bot's ``Bot`` on the gateway's own loop, never ``run_polling``.

Updates in, by webhook (our aiohttp route; the secret header compared in constant time) or by
polling (our own getUpdates loop): each becomes an ``Inbound`` (``updates``), its files fetched
with getFile, and is stored before Telegram hears it arrived: the webhook answers 200 only then
(500 when it could not be stored, so Telegram sends it again), the polling offset moves past an
update only then. A resend is stored once (the provider id is the update's and message's id).

Out, the agent's and the bot's messages go through the core's durable outbox (``deliver``):
text, photos and documents, choices as inline buttons (``send``), within Telegram's flood
limits (``flood``): a chat over its limit is deferred without spending a try, a 429 holds that
chat for its ``retry_after``, network errors are retried with backoff, a 403 (the customer
blocked the bot) or a 400 (no such chat) fails at once and the agent gets ``delivery_failed``.
"Typing…" and the place in line (sparingly) are sent directly: they are transient.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import warnings
from collections import OrderedDict
from datetime import timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, Update
from telegram.error import (BadRequest, ChatMigrated, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter,
                            TelegramError)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from adapters.base import (ChannelUnavailable, Deferred, GatewayPort, IncomingFile, Inbound, PermanentFailure, Receipt,
                           RetrySettings,
                           Sent, Skipped, TemporaryFailure)
from gateway.faq import detect_lang
from gateway.limits import Rate
from gateway.logs import about
from gateway.model import Conversation, Event, EventKind, OutboxItem
from gateway.pipeline import ConversationError
from gateway.store import NotFound, StoreUnavailable
from gateway.tasks import TaskSet

from .flood import FloodGate, WaitNews
from .send import Part, render
from .updates import ALLOWED_UPDATES, Arrival, FileRef, Ignored, UpdateRejected, read_update

log = logging.getLogger("contactgate.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves no larger file to a bot
TYPING_EVERY = 4.0     # seconds: Telegram shows "typing…" for 5 s after each chat action
BACKOFF_MAX = 60.0     # seconds between tries to reach the Bot API, at most


class Flood(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_bot: Rate = Rate(rate=30, burst=30)   # messages a second to all chats
    per_chat: Rate = Rate(rate=1, burst=3)    # messages a second to one chat


class Retry(RetrySettings):
    """Chats are live: sooner retries than mail's."""

    backoff: float = Field(default=5.0, gt=0)
    backoff_max: float = Field(default=600.0, gt=0)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(min_length=1)          # from @BotFather: token: ${TELEGRAM_BOT_TOKEN}
    mode: Literal["webhook", "polling"] = "webhook"
    # The Bot API server: Telegram's, a self-hosted telegram-bot-api, or a test stand-in.
    api_base: str = Field(default="https://api.telegram.org", pattern=r"^https?://[^\s/]+(/\S*)?$")
    # webhook: where Telegram posts updates (default /telegram/<channel name>) ...
    path: str | None = Field(default=None, pattern=r"^/[^\s{}]*$")
    # ... with this secret in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -).
    secret_token: SecretStr | None = None
    # The URL Telegram reaches that route at (https://support.acme.example/telegram/telegram):
    # set as the bot's webhook at every start. Without it, set the webhook yourself.
    public_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # polling: seconds one getUpdates call waits for updates.
    poll_timeout: int = Field(default=30, ge=0, le=50)
    flood: Flood = Flood()
    retry: Retry = Retry()
    typing: bool = True            # show "typing…" while the agent types
    wait_news: bool = True         # tell a waiting customer their place in line (sparingly)
    wait_news_interval: float = Field(default=120.0, ge=0)  # seconds between two such messages, at least

    @model_validator(mode="after")
    def _mode(self) -> "Settings":
        if self.mode == "webhook":
            secret = self.secret_token.get_secret_value() if self.secret_token else ""
            if not secret:
                raise ValueError("mode webhook needs secret_token (e.g. ${TELEGRAM_WEBHOOK_SECRET})")
            if len(secret) > 256 or not all(c.isascii() and (c.isalnum() or c in "_-") for c in secret):
                raise ValueError("secret_token may have 1-256 characters A-Z, a-z, 0-9, _ and - only")
        elif self.public_url or self.path:
            raise ValueError("public_url and path are for mode webhook; mode polling has no route")
        return self


def create(name: str, settings: Settings, gateway: GatewayPort) -> "TelegramChannel":
    # httpx logs every request at info, with the bot's token in the URL.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # PTB 22 warns, as it builds every RetryAfter, that retry_after becomes a timedelta; we read both.
    warnings.filterwarnings("ignore", message=r".*`retry_after` will be of type", category=PTBDeprecationWarning)
    return TelegramChannel(name, settings, gateway)


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramChannel:
    def __init__(self, name: str, settings: Settings, gateway: GatewayPort, *, clock=time.monotonic) -> None:
        self.name = name
        self.settings = settings
        self.gateway = gateway
        self._token = settings.token.get_secret_value()
        base = settings.api_base.rstrip("/")
        self.bot = Bot(self._token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                       request=HTTPXRequest(connection_pool_size=8, connect_timeout=10, read_timeout=20,
                                            write_timeout=30, pool_timeout=10),
                       get_updates_request=HTTPXRequest(connection_pool_size=1, connect_timeout=10, read_timeout=10))
        self.path = settings.path or f"/telegram/{name}"
        self.gate = FloodGate(settings.flood.per_bot, settings.flood.per_chat, clock)
        self.news = WaitNews(settings.wait_news_interval, clock)
        self._clock = clock
        self._tasks = TaskSet()
        self._runner: asyncio.Task[None] | None = None
        self._running = False
        self._stopping = asyncio.Event()
        self._offset: int | None = None
        self._progress: dict[str, int] = {}              # outbox item -> parts of it sent (this process)
        self._chats: OrderedDict[str, int] = OrderedDict()  # conversation -> chat
        self._typing_at: dict[str, float] = {}

    # lifecycle ----------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.path, self.webhook)] if self.settings.mode == "webhook" else []

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._stopping.clear()
        try:
            await self.bot.initialize()
        except InvalidToken:
            self._running = False
            raise ChannelUnavailable(f"telegram channel {self.name!r}: the Bot API rejected the token; "
                               "check the channel's token (from @BotFather)") from None
        except TelegramError as exc:
            log.warning("telegram: Bot API unreachable at start; trying in the background",
                        extra={"channel": self.name, "error": self._scrub(exc)})
        await self.gateway.use_outbox(self.name, self.deliver, self.settings.retry.policy(lease=120.0))
        self._runner = asyncio.create_task(self._run(), name=f"telegram:{self.name}")
        log.info("telegram: channel started", extra={"channel": self.name, "mode": self.settings.mode,
                                                     "path": self.path if self.settings.mode == "webhook" else None})

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()  # a long poll in flight ends now; its updates come again (offset not moved)
            await asyncio.gather(runner, return_exceptions=True)
        await self.gateway.stop_outbox(self.name)
        await self._tasks.close(timeout=5)
        await self.bot.shutdown()
        log.info("telegram: channel stopped", extra={"channel": self.name})

    async def _run(self) -> None:
        delay = 1.0
        while self._running:
            try:
                await self._connect()
                break
            except InvalidToken:
                log.error("telegram: the Bot API rejected the token; nothing is received until it is fixed",
                          extra={"channel": self.name})
                return
            except TelegramError as exc:
                log.warning("telegram: Bot API unreachable; trying again",
                            extra={"channel": self.name, "retry_in": delay, "error": self._scrub(exc)})
                await self._pause(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        if self._running and self.settings.mode == "polling":
            await self._poll()

    async def _connect(self) -> None:
        await self.bot.initialize()  # getMe; a no-op once it worked
        if self.settings.mode == "polling":
            # getUpdates is refused while a webhook is set; the updates waiting stay.
            await self.bot.delete_webhook(drop_pending_updates=False)
            log.info("telegram: polling", extra={"channel": self.name, "bot": self.bot.username})
        elif self.settings.public_url:
            assert self.settings.secret_token is not None  # Settings requires it for webhook mode
            await self.bot.set_webhook(url=self.settings.public_url, allowed_updates=list(ALLOWED_UPDATES),
                                       secret_token=self.settings.secret_token.get_secret_value())
            log.info("telegram: webhook set", extra={"channel": self.name, "bot": self.bot.username,
                                                     "url": self.settings.public_url})

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the channel stops."""
        with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel (3.11)
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    def _scrub(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}".replace(self._token, "<token>")

    # updates in ----------------------------------------------------------------------------------
    async def webhook(self, request: web.Request) -> web.Response:
        """Telegram's POST of one update. 200 once it is stored (or deliberately not), 401 without
        the right secret, 413 over max_body_bytes, 400 when it is not an update, 500 when it could
        not be stored (Telegram sends it again)."""
        assert self.settings.secret_token is not None
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.settings.secret_token.get_secret_value().encode()):
            log.warning("telegram: webhook call without the right secret", extra={"channel": self.name})
            return _error(401, "unauthorized", f"missing or wrong {SECRET_HEADER}")
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, "too_large", f"an update may have {limit} bytes at most")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            return _error(413, "too_large", f"an update may have {limit} bytes at most")
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not a JSON object with an integer update_id")
            update = Update.de_json(data, self.bot)
        except Exception as exc:  # json, PTB's parsing: either way not an update
            log.warning("telegram: webhook body is not an update", extra={"channel": self.name, "error": str(exc)[:200]})
            return _error(400, "bad_update", f"not a Telegram update: {str(exc)[:200]}")
        try:
            await self.handle(update)
        except UpdateRejected as exc:
            log.warning("telegram: update refused", extra={"channel": self.name, "update_id": update.update_id,
                                                           "error": str(exc)})
            return _error(400, "bad_update", str(exc))
        except StoreUnavailable as exc:
            log.error("telegram: update not stored (store unavailable); Telegram will send it again",
                      extra={"channel": self.name, "update_id": update.update_id, "error": str(exc)})
            return _error(500, "unavailable", "storage is unavailable; send it again later")
        except Exception as exc:
            log.exception("telegram: update not stored; Telegram will send it again",
                          extra={"channel": self.name, "update_id": update.update_id, "error": self._scrub(exc)})
            return _error(500, "internal", "the update could not be stored; send it again later")
        return web.json_response({"ok": True})

    async def _poll(self) -> None:
        delay = 1.0
        while self._running:
            try:
                updates = await self.bot.get_updates(offset=self._offset, timeout=self.settings.poll_timeout,
                                                     allowed_updates=list(ALLOWED_UPDATES))
            except InvalidToken:
                log.error("telegram: the Bot API rejected the token; polling stops", extra={"channel": self.name})
                return
            except TelegramError as exc:
                why = ("another process polls this bot, or a webhook is set" if isinstance(exc, Conflict)
                       else "Bot API unreachable")
                log.warning(f"telegram: getUpdates failed ({why}); trying again",
                            extra={"channel": self.name, "retry_in": delay, "error": self._scrub(exc)})
                await self._pause(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = 1.0
            for update in updates:
                if not await self._store_until_done(update):
                    return
                # Only now: the next getUpdates with this offset tells Telegram to forget it.
                self._offset = update.update_id + 1

    async def _store_until_done(self, update: Update) -> bool:
        """Store one polled update, trying again with backoff while it fails. False: stopping."""
        delay = 1.0
        while self._running:
            try:
                await self.handle(update)
                return True
            except UpdateRejected as exc:
                log.warning("telegram: update refused; skipped", extra={"channel": self.name,
                                                                        "update_id": update.update_id,
                                                                        "error": str(exc)})
                return True
            except Exception as exc:
                log.warning("telegram: update not stored; trying again", extra={
                    "channel": self.name, "update_id": update.update_id, "retry_in": delay,
                    "error": self._scrub(exc)})
                await self._pause(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        return False

    async def handle(self, update: Update) -> Receipt | None:
        """Store one update (fetching its files first). Returns the receipt, or None for an
        update that is not stored (``updates.Ignored``). Raises UpdateRejected for one that
        makes no sense, anything else when it could not be stored (try again)."""
        arrival = read_update(update)
        if isinstance(arrival, Ignored):
            log.info("telegram: update ignored", extra={"channel": self.name, "update_id": update.update_id,
                                                        "reason": arrival.reason})
            return None
        files = tuple([await self._fetch(ref) for ref in arrival.files])
        receipt = await self.gateway.receive(self._inbound(arrival, files))
        self._remember_chat(receipt.event.conversation_id, arrival.chat_id)
        # The place in line is told in the language the customer writes in; a command or a
        # sticker says nothing of it, their app's language does.
        lang = detect_lang(arrival.text) if arrival.bot == "answer" else arrival.profile.get("language")
        if lang:
            self.news.heard(receipt.event.conversation_id, "zh" if lang == "zh" else "en")
        with about(receipt.event.conversation_id):
            log.info("telegram: stored" if receipt.created else "telegram: delivered again; stored once", extra={
                "channel": self.name, "update_id": update.update_id, "seq": receipt.event.seq})
        if arrival.callback_query_id is not None:
            try:
                await self.bot.answer_callback_query(arrival.callback_query_id)
            except TelegramError as exc:  # stored already; the button's spinner just runs out
                log.warning("telegram: answerCallbackQuery failed", extra={"channel": self.name,
                                                                           "error": self._scrub(exc)})
        return receipt

    def _inbound(self, arrival: Arrival, files: tuple[IncomingFile, ...]) -> Inbound:
        return Inbound(channel=self.name, address=str(arrival.chat_id), text=arrival.text,
                       client_id=arrival.client_id, name=arrival.name, profile=arrival.profile, files=files,
                       details=arrival.details, bot=arrival.bot)

    async def _fetch(self, ref: FileRef) -> IncomingFile:
        """The file's bytes; or, for one over the limits, a file that is refused by its size
        (the customer is told). A network failure raises: the update is tried again."""
        limit = min(self.gateway.attachments.max_bytes, BOT_API_DOWNLOAD_LIMIT)
        if ref.size is not None and ref.size > limit:
            return IncomingFile(ref.name, ref.content_type, b"", size=ref.size)
        try:
            file = await self.bot.get_file(ref.file_id)
        except BadRequest as exc:
            if "too big" not in exc.message.lower():
                raise
            return IncomingFile(ref.name, ref.content_type, b"", size=ref.size or BOT_API_DOWNLOAD_LIMIT + 1)
        if file.file_size is not None and file.file_size > limit:
            return IncomingFile(ref.name, ref.content_type, b"", size=file.file_size)
        data = await file.download_as_bytearray()
        return IncomingFile(ref.name, ref.content_type, bytes(data))

    # messages out (the outbox calls this) ---------------------------------------------------------
    async def deliver(self, conversation: Conversation, event: Event, item: OutboxItem) -> Sent | Skipped | Deferred:
        chat = await self._chat_of(conversation)
        parts = render(event.text, event.data)
        if not parts:
            return Skipped("nothing Telegram can show")
        last: Message | None = None
        for index in range(self._progress.get(item.id, 0), len(parts)):
            wait = self.gate.reserve(chat)
            if wait > 0:
                return Deferred(wait)
            try:
                last = await self._send_part(chat, parts[index])
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                self.gate.hold(chat, seconds)
                raise TemporaryFailure(f"Telegram's flood limit (429): retry after {seconds:g} s",
                                       retry_after=seconds) from None
            except Forbidden as exc:
                self._progress.pop(item.id, None)
                raise PermanentFailure(f"the customer blocked the bot (403: {exc.message})") from None
            except (BadRequest, ChatMigrated) as exc:
                self._progress.pop(item.id, None)
                raise PermanentFailure(f"Telegram refused the message (400: {exc.message})") from None
            except InvalidToken:
                raise TemporaryFailure("the Bot API rejected the token") from None
            except (NetworkError, TelegramError) as exc:
                raise TemporaryFailure(f"Bot API unreachable: {self._scrub(exc)}") from None
            self._progress[item.id] = index + 1
        self._progress.pop(item.id, None)
        return Sent(ref=f"out:{chat}:{last.message_id}" if last is not None else None)

    async def _send_part(self, chat: int, part: Part) -> Message:
        markup = (InlineKeyboardMarkup([[InlineKeyboardButton(text, callback_data=value)] for text, value in part.buttons])
                  if part.buttons else None)
        if part.kind == "text":
            return await self.bot.send_message(chat, part.text or "", reply_markup=markup)
        assert part.attachment is not None
        try:
            attachment, data = await self.gateway.get_attachment(part.attachment["id"])
        except NotFound:
            raise PermanentFailure(f"attachment {part.attachment.get('name')!r} is gone from the store") from None
        file = InputFile(data, filename=attachment.name)
        if part.kind == "photo":
            return await self.bot.send_photo(chat, file, caption=part.text, reply_markup=markup)
        return await self.bot.send_document(chat, file, caption=part.text, reply_markup=markup)

    async def _chat_of(self, conversation: Conversation) -> int:
        chat = self._chats.get(conversation.id)
        if chat is not None:
            return chat
        customer = await self.gateway.get_customer(conversation.customer_id)
        chat = customer.attributes.get("telegram_id")
        if not isinstance(chat, int):
            raise PermanentFailure("the customer has no Telegram chat")
        self._remember_chat(conversation.id, chat)
        return chat

    def _remember_chat(self, conversation_id: str, chat: int) -> None:
        self._chats[conversation_id] = chat
        self._chats.move_to_end(conversation_id)
        if len(self._chats) > 10_000:
            self._chats.popitem(last=False)

    # transient news: typing, the place in line ------------------------------------------------------
    async def send(self, conversation: Conversation, event: Event) -> None:
        """Every event of the channel's conversations, live: the outbox delivers the messages;
        here a waiting customer hears their place in line when they enter a queue."""
        if event.kind in (EventKind.QUEUED, EventKind.TRANSFERRED):
            position, wait = event.data.get("position"), event.data.get("estimated_wait")
            if self.settings.wait_news and isinstance(position, int) and isinstance(wait, int):
                self._tell(conversation.id, self.news.queued(conversation.id, position, wait))
        elif event.kind in (EventKind.ASSIGNED, EventKind.CLOSED):
            self.news.forget(conversation.id)
            self._typing_at.pop(conversation.id, None)

    async def notify(self, conversation_id: str, status: dict[str, Any]) -> None:
        kind = status.get("type")
        if kind == "typing" and status.get("author") == "agent" and status.get("active") and self.settings.typing:
            now = self._clock()
            if now - self._typing_at.get(conversation_id, float("-inf")) < TYPING_EVERY:
                return
            self._typing_at[conversation_id] = now
            self._tasks.spawn(self._chat_action(conversation_id), name=f"telegram:typing:{conversation_id}")
        elif kind == "position" and self.settings.wait_news:
            position, wait = status.get("position"), status.get("estimated_wait")
            if isinstance(position, int) and isinstance(wait, int):
                text = self.news.moved(conversation_id, position, wait)
                if text is not None:
                    self._tell(conversation_id, text)

    def _tell(self, conversation_id: str, text: str) -> None:
        self._tasks.spawn(self._say(conversation_id, text), name=f"telegram:news:{conversation_id}")

    async def _say(self, conversation_id: str, text: str) -> None:
        """A transient message (not stored, not retried), within the flood limits."""
        try:
            chat = await self._chat_of(await self.gateway.get_conversation(conversation_id))
            while self._running:
                wait = self.gate.reserve(chat)
                if wait == 0:
                    await self.bot.send_message(chat, text)
                    return
                await self._pause(wait)
        except (TelegramError, PermanentFailure, StoreUnavailable, NotFound, ConversationError) as exc:
            with about(conversation_id):
                log.info("telegram: wait news not sent", extra={"channel": self.name, "error": self._scrub(exc)})

    async def _chat_action(self, conversation_id: str) -> None:
        try:
            chat = await self._chat_of(await self.gateway.get_conversation(conversation_id))
            if self.gate.held(chat) == 0:
                await self.bot.send_chat_action(chat, "typing")
        except (TelegramError, PermanentFailure, StoreUnavailable, NotFound, ConversationError) as exc:
            with about(conversation_id):
                log.info("telegram: typing not shown", extra={"channel": self.name, "error": self._scrub(exc)})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)
