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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateway.customers import signed
from gateway.customers.codes import CODE_TTL
from gateway.delivery import OrderedDelivery
from gateway.errors import frame_failure
from gateway.limits import RateLimited, TokenBucket
from gateway.logs import about
from gateway.model import Author, Conversation, Event, EventKind
from gateway.attachments import attachment_response
from gateway.origins import OriginPolicy, normalize_origins
from gateway.pipeline import ConversationError
from gateway.store import NotFound, StoreError, StoreUnavailable
from gateway.websocket import (CLOSE_RATE_LIMITED, FrameError, FrameRejected, FrameSender, frames, message_fields,
                               prepare, typing_active)

from .base import GatewayPort, SessionPolicy
from .webchat_uploads import customer_upload

log = logging.getLogger("contactgate.webchat")

MAX_NAME = 200
MAX_CHOICE = 200  # characters of a message's "choice" (a button's value: an FAQ id, "yes", "no")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(default="/webchat/ws", pattern=r"^/")
    # Where the customer downloads a conversation's files (GET <path>/{id}, Authorization:
    # Bearer <the token from welcome>).
    attachments_path: str = Field(default="/webchat/attachments", pattern=r"^/[^{}]*[^/{}]$")
    # Seconds a new socket may take to say hello before it is closed.
    hello_timeout: float = Field(default=30.0, gt=0)
    # Seconds a conversation waiting for an agent may have no customer socket before it is
    # abandoned (closed, or a left message: the queue's `when_abandoned`); 0 = never.
    abandon_after: float = Field(default=120.0, ge=0)
    # Seconds a conversation still with the bot may have no customer socket before it is closed.
    idle_close_after: float = Field(default=600.0, ge=0)
    # Sites whose pages may open this channel's socket (the sites that embed widget.js), such
    # as "https://www.acme.example"; "*" for any site. The gateway's own pages (its origin and
    # server.allowed_origins) always may, and so may clients that send no Origin (not a
    # browser). Any other browser page is refused with 403 (gateway/origins.py).
    allowed_origins: list[str] = []
    # What the widget asks before the chat starts: "name", "email", both or none. The page's
    # data-prechat attribute, when it has one, takes precedence.
    prechat: list[str] = []
    # Customers may send files (POST <attachments_path>, within `attachments:`); false: 403.
    uploads: bool = True
    # The key the embedding site signs its logged-in user with (docs/customers.md#signed-identity),
    # from the environment: identity_secret: ${WEBCHAT_IDENTITY_SECRET}. Unset: hellos carrying
    # user_hash are refused.
    identity_secret: SecretStr | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return normalize_origins(value)

    @field_validator("prechat")
    @classmethod
    def _prechat(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in ("name", "email")]
        if unknown:
            raise ValueError(f"unknown pre-chat field(s) {unknown}; use name and/or email")
        return value


def create(name: str, settings: Settings, gateway: GatewayPort) -> "WebChatAdapter":
    return WebChatAdapter(name, settings, gateway)


class CustomerSession:
    """One customer socket, bound to one conversation after hello."""

    def __init__(self, sender: FrameSender, address: str, bucket: TokenBucket) -> None:
        self.sender = sender
        self.address = address  # the client's (see limits.trusted_proxies)
        self.bucket = bucket    # this socket's message rate
        self.customer_id: str | None = None
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
        for key in ("attachments", "choices", "satisfaction"):  # files; the bot's buttons; the rating question
            if event.data.get(key):
                frame[key] = event.data[key]
        if event.author is Author.CUSTOMER and isinstance(event.data.get("choice"), dict):
            frame["choice"] = event.data["choice"].get("value")
        return frame
    if event.kind is EventKind.SATISFACTION:
        return {"type": "satisfaction", "seq": event.seq, "score": event.data.get("score"),
                "comment": event.data.get("comment")}
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
        self.origins = OriginPolicy([*settings.allowed_origins, *gateway.allowed_origins])

    def routes(self) -> list[web.RouteDef]:
        files = self.settings.attachments_path + "/{attachment_id}"
        return [web.get(self.settings.path, self.handle),
                web.get(files, self.download), web.options(files, self.preflight),
                web.post(self.settings.attachments_path, self.upload),
                web.options(self.settings.attachments_path, self.preflight),
                web.get(f"/widget/{self.name}.json", self.widget_settings)]

    # The widget runs in the embedding site's pages, so what it fetches from us is cross-origin:
    # allowed (CORS) for exactly the origins that may open the socket.
    def _cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin is None or not self.origins.allows(request):
            return {"Vary": "Origin"}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    async def widget_settings(self, request: web.Request) -> web.Response:
        """What widget.js needs to know of this channel (GET /widget/<channel>.json)."""
        return web.json_response(
            {"channel": self.name, "path": self.settings.path, "attachments_path": self.settings.attachments_path,
             "prechat": self.settings.prechat, "uploads": self.settings.uploads,
             "max_bytes": self.gateway.attachments.max_bytes, "verify_email": self.gateway.verifies_email()},
            headers={**self._cors(request), "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def preflight(self, request: web.Request) -> web.Response:
        """The browser's question before a download or an upload with an Authorization header."""
        headers = self._cors(request)
        if "Access-Control-Allow-Origin" in headers:
            headers.update({"Access-Control-Allow-Methods": "GET, POST",
                            "Access-Control-Allow-Headers": "Authorization, Content-Type",
                            "Access-Control-Max-Age": "600"})
        return web.Response(status=204, headers=headers)

    async def upload(self, request: web.Request) -> web.Response:
        """A file from the customer, as a message of its own (adapters/webchat_uploads.py)."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        response = await customer_upload(request, self.name, self.settings, self.gateway,
                                         web_identity(token) if token else None)
        response.headers.update(self._cors(request))
        return response

    async def download(self, request: web.Request) -> web.StreamResponse:
        response = await self._download(request)
        response.headers.update(self._cors(request))
        return response

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """A file of the customer's own conversation; anything else is 404, whoever asks."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        missing = web.json_response({"error": "not_found", "message": "no such attachment"}, status=404)
        if not token:
            return web.json_response({"error": "unauthorized", "message": "send Authorization: Bearer <token from welcome>"},
                                     status=401)
        try:
            customer = await self.gateway.identify_known(self.name, web_identity(token))
            if customer is None:
                return missing
            attachment, data = await self.gateway.get_attachment(request.match_info["attachment_id"])
            conversation = await self.gateway.get_conversation(attachment.conversation_id)
        except (NotFound, ConversationError):
            return missing
        except StoreUnavailable:
            return web.json_response({"error": "unavailable", "message": "storage is unavailable; retry later"},
                                     status=503)
        if conversation.customer_id != customer.id or conversation.channel != self.name:
            return missing
        return attachment_response(attachment, data)

    async def start(self) -> None:
        await self.gateway.track_sessions(self.name, SessionPolicy(self.settings.abandon_after,
                                                                   self.settings.idle_close_after))
        log.info("web chat listening", extra={"path": self.settings.path})

    async def stop(self) -> None:
        for sessions in list(self._sessions.values()):
            for session in list(sessions):
                await session.sender.close(WSCloseCode.GOING_AWAY, "server shutdown")

    async def notify(self, conversation_id: str, status: dict[str, Any]) -> None:
        for session in list(self._sessions.get(conversation_id, ())):
            session.sender.notify(status)

    async def send(self, conversation: Conversation, event: Event) -> None:
        for session in list(self._sessions.get(conversation.id, ())):
            if session.delivery is not None:
                await session.delivery.deliver(event)

    # one customer socket -------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.origins.check(request)  # 403 before the upgrade for a site that does not embed us
        ws = await prepare(request, self.gateway.max_frame_bytes)
        limits = self.gateway.limits
        session = CustomerSession(FrameSender.for_request(ws, request), limits.client_address(request),
                                  limits.connection_bucket())
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
                    except Exception as exc:  # answered with an error frame; the socket stays open
                        session.sender.send(frame_failure(exc).frame())
        finally:
            hello_timer.cancel()
            session.sender.stop()
            await self._leave(session)
        return ws

    # the gateway hears when a conversation's first socket joins and its last one leaves -------
    async def _join(self, session: CustomerSession, conversation_id: str) -> None:
        sessions = self._sessions.setdefault(conversation_id, set())
        sessions.add(session)
        if len(sessions) == 1:
            await self._presence(conversation_id, True)

    async def _leave(self, session: CustomerSession) -> None:
        cid = session.conversation_id
        sessions = self._sessions.get(cid) if cid is not None else None
        if cid is None or sessions is None or session not in sessions:
            return
        sessions.discard(session)
        if not sessions:
            del self._sessions[cid]
            with about(cid):
                log.info("customer disconnected")
            await self._presence(cid, False)

    async def _presence(self, conversation_id: str, connected: bool) -> None:
        try:
            await self.gateway.customer_presence(conversation_id, connected)
        except StoreError as exc:
            # The wait goes on as before; its next state change sets the absence right again.
            with about(conversation_id):
                log.error("customer presence not recorded", extra={"connected": connected, "error": str(exc)})

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
            choice = frame.get("choice")
            if choice is not None and (not isinstance(choice, str) or not choice or len(choice) > MAX_CHOICE):
                raise FrameRejected("bad_message", f'"choice" must be the value of one of the bot\'s choices '
                                    f'(a non-empty string of at most {MAX_CHOICE} characters) or left out')
            self.gateway.limits.customer_message(session.bucket, session.customer_id or "", client_id)
            session.pending.add(client_id)
            try:
                receipt = await self.gateway.customer_message(
                    session.conversation_id, text, client_id,
                    details={"choice": {"value": choice}} if choice is not None else None)
            except BaseException:
                session.pending.discard(client_id)
                raise
            if not receipt.created:
                # A resend of something already stored: acknowledge it again, store nothing.
                # (A new message was acknowledged by the fan-out, in seq order.)
                session.pending.discard(client_id)
                session.sender.send({"type": "ack", "id": client_id, "seq": receipt.event.seq})
        elif kind == "typing":
            await self.gateway.customer_typing(session.conversation_id, typing_active(frame))
        elif kind == "read":
            await self.gateway.reads.customer_read(session.conversation_id, frame)
        elif kind == "satisfaction":
            await self.gateway.satisfaction.answer(session.conversation_id, frame)
        elif kind == "close":
            await self.gateway.customer_leaves(session.conversation_id)
        elif kind == "verify_email":
            await self.gateway.send_verification(session.conversation_id)
            session.sender.send({"type": "verification_sent", "kind": "email", "expires_in": CODE_TTL})
        elif kind == "verify":
            code = frame.get("code")
            if not isinstance(code, str) or not code.strip().isdigit() or len(code.strip()) > 12:
                raise FrameRejected("bad_verify", '"code" must be the digits from the mail, as a string')
            session.sender.send(await self.gateway.verify_code(session.conversation_id, code))
        else:
            raise FrameRejected("unknown_type", f"unknown frame type {kind!r}; expected hello, message, typing, "
                                "read, satisfaction, close, verify_email or verify")

    async def _hello(self, session: CustomerSession, frame: dict[str, Any]) -> None:
        token, last_seq = frame.get("token"), frame.get("last_seq", 0)
        name, email = frame.get("name"), frame.get("email")
        if token is not None and (not isinstance(token, str) or not token):
            raise FrameRejected("bad_hello", '"token" must be null or the token from an earlier welcome')
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            raise FrameRejected("bad_hello", '"last_seq" must be a non-negative integer')
        user_id, user_hash = frame.get("user_id"), frame.get("user_hash")
        for key, value in (("name", name), ("email", email), ("user_id", user_id), ("user_hash", user_hash)):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
                raise FrameRejected("bad_hello", f'"{key}" must be a string of at most {MAX_NAME} characters')
        also, claims = self._signed(user_id, email, user_hash)
        if token is None:
            try:
                self.gateway.limits.new_conversation(session.address)
            except RateLimited as exc:
                session.sender.send(exc.error.frame())
                await session.sender.close(CLOSE_RATE_LIMITED, "too many new conversations; retry later")
                return
            token = secrets.token_urlsafe(24)
            last_seq = 0
            customer = await self.gateway.identify(self.name, web_identity(token), name=name,
                                                   profile={"email": email.lower() if email else None},
                                                   also=also, claims=claims)
        else:
            customer = await self.gateway.identify_known(self.name, web_identity(token))
            if customer is None:
                raise FrameRejected("invalid_token", "unknown token; say hello with a null token to start over")
        conversation, is_new = await self.gateway.current_conversation(customer, self.name, seen_seq=last_seq)
        cursor = 0 if is_new else min(last_seq, conversation.last_seq)
        session.customer_id, session.conversation_id = customer.id, conversation.id
        session.delivery = OrderedDelivery(conversation.id, cursor, self.gateway.events_after, session.show,
                                           room=session.sender.room)
        with about(conversation.id):
            log.info("customer connected", extra={"resumed": not is_new, "last_seq": cursor})
        session.sender.send({"type": "welcome", "token": token, "conversation_id": conversation.id})
        # Join the live fan-out first, then replay: the cursor drops whatever arrives twice.
        await self._join(session, conversation.id)
        await session.delivery.catch_up()
        if (read := self.gateway.reads.for_customer(conversation.id)) is not None:
            session.sender.send(read)


    def _signed(self, user_id: str | None, email: str | None,
                user_hash: str | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(verified identities, claims) of a hello. An email without a valid signature is
        only a claim; a signature that does not check is refused, nothing is linked."""
        if user_hash is None:
            if user_id is not None:
                raise FrameRejected("bad_identity", '"user_id" needs its "user_hash" (docs/customers.md)')
            return [], [("email", email)] if email else []
        secret = self.settings.identity_secret.get_secret_value() if self.settings.identity_secret else None
        if not secret:
            raise FrameRejected("identity_not_configured",
                                "this channel has no identity_secret: say hello without user_hash")
        if not signed.check(secret, user_id, email, user_hash):
            log.info("web chat: a signed identity did not check", extra={"channel": self.name})
            raise FrameRejected("bad_identity", '"user_hash" does not sign "user_id" and "email"; '
                                "say hello without them, or with a fresh signature from the site")
        also = [("email", email)] if email else []
        if user_id:
            also.append(("site_user", user_id))
        return also, []


def web_identity(token: str) -> str:
    """The identity address a web chat token maps to: its hash, so the database never holds
    a token a thief could resume a conversation with."""
    return hashlib.sha256(token.encode()).hexdigest()
