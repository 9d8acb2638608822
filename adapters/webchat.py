"""Web chat: customers over a websocket at ``GET /webchat/ws`` (JSON text frames).

The contract is in docs/protocol.md. In short: ``hello`` (with the token from an earlier
``welcome`` to resume) -> ``welcome``; then every conversation event with its seq, from the
first one the customer has not seen; ``message`` frames are acknowledged with their seq once
stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any

from aiohttp import WSCloseCode, web
from pydantic import BaseModel, ConfigDict, Field

from gateway.delivery import OrderedDelivery
from gateway.logs import about
from gateway.model import Author, Conversation, Event, EventKind
from gateway.pipeline import ConversationError
from gateway.store import StoreError
from gateway.websocket import FrameError, FrameRejected, FrameSender, frames, message_fields, prepare

from .base import GatewayPort

log = logging.getLogger("contactgate.webchat")

MAX_NAME = 200


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(default="/webchat/ws", pattern=r"^/")
    # Seconds a new socket may take to say hello before it is closed.
    hello_timeout: float = Field(default=30.0, gt=0)


def create(name: str, settings: Settings, gateway: GatewayPort) -> "WebChatAdapter":
    return WebChatAdapter(name, settings, gateway)


class CustomerSession:
    """One customer socket, bound to one conversation after hello."""

    def __init__(self, sender: FrameSender) -> None:
        self.sender = sender
        self.conversation_id: str | None = None
        self.delivery: OrderedDelivery | None = None
        self.pending: set[str] = set()  # client ids sent on this socket, not acked yet

    async def show(self, event: Event) -> None:
        """Render one event for the customer (called in seq order, once per seq)."""
        frame = customer_frame(event, own=event.client_id in self.pending)
        if event.author is Author.CUSTOMER and event.client_id:
            self.pending.discard(event.client_id)
        if frame is not None:
            await self.sender.write(frame)


def customer_frame(event: Event, own: bool) -> dict[str, Any] | None:
    """The frame a customer sees for an event; None for events internal to routing."""
    if event.kind is EventKind.MESSAGE:
        if own and event.author is Author.CUSTOMER:
            return {"type": "ack", "id": event.client_id, "seq": event.seq}
        frame = {"type": "message", "seq": event.seq, "author": event.author.value, "text": event.text,
                 "at": event.at.isoformat()}
        if event.author is Author.CUSTOMER:
            frame["id"] = event.client_id
        return frame
    if event.kind in (EventKind.QUEUED, EventKind.TRANSFERRED):
        return {"type": "queued", "seq": event.seq, "position": event.data.get("position"),
                "estimated_wait": event.data.get("estimated_wait"), "reason": event.data.get("reason")}
    if event.kind is EventKind.ASSIGNED:
        return {"type": "assigned", "seq": event.seq, "agent": {"name": event.data.get("agent", {}).get("name")}}
    if event.kind is EventKind.CLOSED:
        return {"type": "closed", "seq": event.seq}
    return None


class WebChatAdapter:
    def __init__(self, name: str, settings: Settings, gateway: GatewayPort) -> None:
        self.name = name
        self.settings = settings
        self.gateway = gateway
        self._sessions: dict[str, set[CustomerSession]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.settings.path, self.handle)]

    async def start(self) -> None:
        log.info("web chat listening", extra={"path": self.settings.path})

    async def stop(self) -> None:
        for sessions in list(self._sessions.values()):
            for session in list(sessions):
                await session.sender.close(WSCloseCode.GOING_AWAY, "server shutdown")

    async def notify(self, conversation_id: str, status: dict[str, Any]) -> None:
        for session in list(self._sessions.get(conversation_id, ())):
            session.sender.send(status)

    async def send(self, conversation: Conversation, event: Event) -> None:
        for session in list(self._sessions.get(conversation.id, ())):
            if session.delivery is not None:
                await session.delivery.deliver(event)

    # one customer socket -------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = await prepare(request, self.gateway.max_frame_bytes)
        session = CustomerSession(FrameSender.for_request(ws, request))
        hello_timer = asyncio.get_running_loop().call_later(
            self.settings.hello_timeout, lambda: session.conversation_id is None and
            session.sender.close_soon(WSCloseCode.POLICY_VIOLATION, "no hello"))
        try:
            async for frame in frames(ws, self.gateway.max_frame_bytes):
                if isinstance(frame, FrameError):
                    session.sender.send(frame.frame())
                    continue
                with about(session.conversation_id):
                    try:
                        await self._on_frame(session, frame)
                    except ConversationError as exc:
                        session.sender.send(FrameError(exc.code, str(exc)).frame())
                    except FrameRejected as exc:
                        session.sender.send(exc.error.frame())
                    except StoreError as exc:
                        # Nothing was stored, so nothing is acked: the client resends the same id.
                        log.error("store unavailable", extra={"error": str(exc)})
                        session.sender.send(FrameError("unavailable", "storage is unavailable; nothing was stored, retry with the same id").frame())
        finally:
            hello_timer.cancel()
            if session.conversation_id is not None:
                self._sessions.get(session.conversation_id, set()).discard(session)
                if not self._sessions.get(session.conversation_id):
                    self._sessions.pop(session.conversation_id, None)
            session.sender.stop()
        return ws

    async def _on_frame(self, session: CustomerSession, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "hello":
            if session.conversation_id is not None:
                raise FrameRejected("already_hello", "this socket already said hello")
            await self._hello(session, frame)
            return
        if session.conversation_id is None:
            raise FrameRejected("hello_required", 'send {"type":"hello"} first')
        if kind == "message":
            client_id, text = message_fields(frame)
            session.pending.add(client_id)
            try:
                receipt = await self.gateway.customer_message(session.conversation_id, text, client_id)
            except BaseException:
                session.pending.discard(client_id)
                raise
            if not receipt.created:
                # A resend of something already stored: acknowledge it again, store nothing.
                # (A new message was acknowledged by the fan-out, in seq order.)
                session.pending.discard(client_id)
                session.sender.send({"type": "ack", "id": client_id, "seq": receipt.event.seq})
        elif kind == "close":
            await self.gateway.customer_leaves(session.conversation_id)
        else:
            raise FrameRejected("unknown_type", f"unknown frame type {kind!r}; expected hello, message or close")

    async def _hello(self, session: CustomerSession, frame: dict[str, Any]) -> None:
        token, last_seq = frame.get("token"), frame.get("last_seq", 0)
        name, email = frame.get("name"), frame.get("email")
        if token is not None and (not isinstance(token, str) or not token):
            raise FrameRejected("bad_hello", '"token" must be null or the token from an earlier welcome')
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            raise FrameRejected("bad_hello", '"last_seq" must be a non-negative integer')
        for key, value in (("name", name), ("email", email)):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
                raise FrameRejected("bad_hello", f'"{key}" must be a string of at most {MAX_NAME} characters')
        if token is None:
            token = secrets.token_urlsafe(24)
            last_seq = 0
            customer = await self.gateway.identify(self.name, web_identity(token), name=name,
                                                   profile={"email": email.lower() if email else None})
        else:
            customer = await self.gateway.identify_known(self.name, web_identity(token))
            if customer is None:
                raise FrameRejected("invalid_token", "unknown token; say hello with a null token to start over")
        conversation, is_new = await self.gateway.current_conversation(customer, self.name, seen_seq=last_seq)
        cursor = 0 if is_new else min(last_seq, conversation.last_seq)
        session.conversation_id = conversation.id
        session.delivery = OrderedDelivery(conversation.id, cursor, self.gateway.events_after, session.show,
                                           room=session.sender.room)
        with about(conversation.id):
            log.info("customer connected", extra={"resumed": not is_new, "last_seq": cursor})
        session.sender.send({"type": "welcome", "token": token, "conversation_id": conversation.id})
        # Join the live fan-out first, then replay: the cursor drops whatever arrives twice.
        self._sessions.setdefault(conversation.id, set()).add(session)
        await session.delivery.catch_up()


def web_identity(token: str) -> str:
    """The identity address a web chat token maps to: its hash, so the database never holds
    a token a thief could resume a conversation with."""
    return hashlib.sha256(token.encode()).hexdigest()
