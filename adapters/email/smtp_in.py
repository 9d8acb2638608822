"""Our own SMTP listener (aiosmtpd), so any MTA — Postfix, a provider's inbound route — can hand
mail to the gateway. It runs on the gateway's event loop (``loop.create_server``), not in
aiosmtpd's threaded ``Controller``.

The promise: a mail is answered 250 only after ``deliver`` returned, which means it is stored.
``deliver`` raising :class:`~gateway.store.StoreUnavailable` (or anything unexpected) answers
451, so the sending MTA keeps the mail and tries again; :class:`MailRefused` answers its own
permanent code. A mail over ``max_message_bytes`` is refused with 552 and never delivered, and
nothing is delivered from a client that hangs up before the final dot. A delivery under way
finishes even if the client hangs up, so a store is never cut off mid-write (the MTA retries;
the Message-ID makes the second copy a no-op).

We are the final delivery: like every MTA that delivers into a mailbox (RFC 5321 4.4) we put the
envelope sender on top as ``Return-Path:``, so a bounce (``MAIL FROM:<>``) reads as one to the
loop guard.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import socket
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, TLSSetupException
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.base import ChannelUnavailable
from gateway.store import StoreUnavailable

__all__ = ["Deliver", "Envelope", "ListenerAuth", "ListenerError", "ListenerSettings", "ListenerTls",
           "MailRefused", "SmtpListener"]

log = logging.getLogger("contactgate.email.smtp")

MiB = 1024 * 1024


class ListenerAuth(BaseModel):
    """One login the MTA uses (AUTH PLAIN or LOGIN); the password from ``${VAR}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)


class ListenerTls(BaseModel):
    """A certificate for STARTTLS (PEM files; relative paths are the caller's to resolve)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path
    key_file: Path


class ListenerSettings(BaseModel):
    """Where and how MTAs hand us mail (a ``type: email`` channel's ``listener:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)      # 0: any free port (tests)
    # The greeting's host name (null: this host's fully qualified name).
    hostname: str | None = None
    # Larger mail is refused with 552 (and the EHLO SIZE extension says so up front).
    max_message_bytes: int = Field(default=25 * MiB, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    # Addresses ("support@acme.example") and domains ("acme.example") we take mail for; any other
    # recipient gets 550, so the listener is no open sink. Empty: every recipient.
    accept_recipients: tuple[str, ...] = ()
    # When set, a client must AUTH (PLAIN or LOGIN) before MAIL.
    auth: ListenerAuth | None = None
    starttls: ListenerTls | None = None
    # Refuse everything but EHLO, NOOP, STARTTLS and QUIT until the client started TLS.
    require_starttls: bool = False
    # Seconds a client may stay silent before it is disconnected.
    idle_timeout: float = Field(default=300.0, gt=0)

    @field_validator("accept_recipients")
    @classmethod
    def _recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for entry in value:
            entry = entry.strip().lower()
            entry = entry[1:] if entry.startswith("@") else entry     # "@acme.example" is a domain
            local, at, domain = entry.rpartition("@")
            if not domain or "@" in local or (at and not local) or _NOT_IN_ADDRESSES.search(entry):
                raise ValueError(f"{entry!r} is neither an address nor a domain")
            cleaned.append(entry)
        return tuple(cleaned)

    @model_validator(mode="after")
    def _tls_to_require(self) -> "ListenerSettings":
        if self.require_starttls and self.starttls is None:
            raise ValueError("require_starttls needs a starttls certificate")
        return self


_NOT_IN_ADDRESSES = re.compile(r"[\s<>,;()\[\]\\\"]")


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str                 # the envelope sender; "" is the null sender (bounces)
    rcpt_tos: tuple[str, ...]
    peer: str                      # the client's address, for the log


Deliver = Callable[[bytes, Envelope], Awaitable[None]]


class MailRefused(Exception):
    """``deliver`` refuses this mail for good (e.g. ``MailRefused(550, "5.7.1 not accepted")``):
    the sending MTA returns it to its sender instead of retrying."""

    def __init__(self, code: int, text: str) -> None:
        if not 500 <= code <= 599:
            raise ValueError(f"a permanent refusal has a 5xx code, not {code}")
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = " ".join(text.split())

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class ListenerError(ChannelUnavailable, RuntimeError):
    """The listener cannot start (the port is taken, the certificate does not load)."""


TEMPORARY = "451 4.3.0 Temporary failure, please try again later"
INTERNAL = "451 4.3.0 Internal error, please try again later"
STORED = "250 OK: stored"
SHUTTING_DOWN_REPLY = "421 4.3.2 Service shutting down, try again later"
SHUTTING_DOWN = SHUTTING_DOWN_REPLY.encode("ascii") + b"\r\n"


class SmtpListener:
    """Start with :meth:`start`, stop with :meth:`stop` (both idempotent). ``deliver`` is awaited
    for each mail with its bytes (``Return-Path`` on top) and envelope; it returns once the mail
    is stored."""

    def __init__(self, settings: ListenerSettings, deliver: Deliver, *, name: str = "email") -> None:
        self.settings = settings
        self.name = name
        self._deliver = deliver
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._deliveries: set[asyncio.Task[str]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the real one when the settings said 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"email channel {self.name!r}: the SMTP listener is not running")
        return self._server.sockets[0].getsockname()[1]

    @property
    def open_sessions(self) -> int:
        """Clients connected now (for metrics, and for tests to see a hang-up arrive)."""
        return len(self._sessions)

    async def start(self) -> None:
        if self._server is not None:
            return
        settings = self.settings
        tls = _tls_context(settings.starttls, self.name) if settings.starttls else None
        hostname = settings.hostname or await asyncio.to_thread(socket.getfqdn)
        if settings.auth is not None and tls is None:
            log.warning("SMTP AUTH without STARTTLS: the password crosses the network in clear; "
                        "listen on a trusted network only", extra={"channel": self.name})
        _quiet_aiosmtpd()
        handler = _Handler(self)
        loop = asyncio.get_running_loop()

        def session() -> _Session:
            return _Session(self, handler, data_size_limit=settings.max_message_bytes,
                            enable_SMTPUTF8=True, decode_data=False, hostname=hostname,
                            ident="contactgate ESMTP", tls_context=tls,
                            require_starttls=settings.require_starttls, timeout=settings.idle_timeout,
                            auth_required=settings.auth is not None,
                            # Ask for TLS before AUTH whenever we can offer it.
                            auth_require_tls=tls is not None,
                            authenticator=handler.authenticate, loop=loop)

        try:
            self._server = await loop.create_server(session, settings.host, settings.port)
        except OSError as exc:
            raise ListenerError(f"email channel {self.name!r}: cannot listen for SMTP on "
                                f"{settings.host}:{settings.port}: {exc.strerror or exc}") from exc
        log.info("SMTP listener started", extra={"channel": self.name, "host": settings.host,
                                                 "port": self.port})

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking connections; give deliveries under way up to ``timeout`` seconds to finish
        (their clients get their 250), then say 421 to the remaining clients and hang up."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("SMTP deliveries still running at shutdown; cancelled (the MTAs retry)",
                        extra={"channel": self.name, "deliveries": len(self._deliveries)})
        # From here a mail that completes gets 421, not a delivery nobody would wait for.
        self._closing = True
        for task in list(self._deliveries):
            task.cancel()
        if self._deliveries:
            await asyncio.wait(list(self._deliveries))
        for session in list(self._sessions):
            session.hang_up()
        await server.wait_closed()
        self._closing = False
        log.info("SMTP listener stopped", extra={"channel": self.name})

    # -- called by the sessions -------------------------------------------------------------

    def _opened(self, session: _Session) -> None:
        self._sessions.add(session)

    def _closed(self, session: _Session) -> None:
        self._sessions.discard(session)

    async def _receive(self, raw: bytes, envelope: Envelope) -> str:
        """Deliver in a task of its own, which a hang-up does not cancel; answer its reply."""
        if self._closing:
            return SHUTTING_DOWN_REPLY
        task = asyncio.get_running_loop().create_task(self._deliver_once(raw, envelope),
                                                      name=f"smtp-deliver:{self.name}")
        self._deliveries.add(task)
        self._idle.clear()
        task.add_done_callback(self._delivered)
        return await asyncio.shield(task)

    def _delivered(self, task: asyncio.Task[str]) -> None:
        self._deliveries.discard(task)
        if not self._deliveries:
            self._idle.set()

    async def _deliver_once(self, raw: bytes, envelope: Envelope) -> str:
        context = {"channel": self.name, "peer": envelope.peer, "mail_from": envelope.mail_from}
        try:
            await self._deliver(_with_return_path(raw, envelope.mail_from), envelope)
        except StoreUnavailable as exc:
            log.warning("mail not stored, answered 451: the store is unavailable",
                        extra={**context, "error": str(exc)})
            return TEMPORARY
        except MailRefused as exc:
            log.info("mail refused", extra={**context, "reply": exc.reply})
            return exc.reply
        except Exception:
            log.exception("mail not stored, answered 451: delivery failed", extra=context)
            return INTERNAL
        return STORED


class _Handler:
    """aiosmtpd's hooks. Only RCPT and DATA are ours; the rest is aiosmtpd's."""

    def __init__(self, listener: SmtpListener) -> None:
        self._listener = listener
        settings = listener.settings
        self._accept = frozenset(settings.accept_recipients)
        self._max_recipients = settings.max_recipients
        auth = settings.auth
        self._login = (auth.username.encode("utf-8"), auth.password.get_secret_value().encode("utf-8")) \
            if auth else None

    def authenticate(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        if self._login is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        # Both compared, in constant time: the answer says nothing about which one was wrong.
        user_ok = hmac.compare_digest(auth_data.login, self._login[0])
        password_ok = hmac.compare_digest(auth_data.password, self._login[1])
        if user_ok and password_ok:
            return AuthResult(success=True)
        log.warning("SMTP AUTH failed", extra={"channel": self._listener.name, "peer": _peer(session)})
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname            # this hook's job once it exists
        if self._login is None:                 # AUTH offered only when there is a login to check
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                          address: str, mail_options: list[str]) -> str:
        # aiosmtpd's parser is lenient; a CR or a space here would end up in our Return-Path.
        if address != "<>" and _UNSAFE.search(address):     # "<>": aiosmtpd's null sender
            return "553 5.1.7 Malformed sender address"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        if _UNSAFE.search(address):
            return "553 5.1.3 Malformed recipient address"
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return "452 4.5.3 Too many recipients"
        if self._accept and not _accepted(address, self._accept):
            return f"550 5.7.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        content = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        # aiosmtpd keeps the null sender as the literal "<>".
        ours = Envelope(mail_from="" if mail_from == "<>" else mail_from,
                        rcpt_tos=tuple(envelope.rcpt_tos), peer=_peer(session))
        return await self._listener._receive(content, ours)

    async def handle_exception(self, error: Exception) -> str:
        # Not aiosmtpd's "500 Error: (Class) message": it leaks internals, and 5xx would make
        # the MTA bounce a mail that a retry may deliver.
        if isinstance(error, TLSSetupException):
            # The client's side of a handshake (it did not trust our certificate, or hung up).
            log.info("STARTTLS handshake failed", extra={"channel": self._listener.name,
                                                        "error": repr(error.__cause__ or error)})
        else:
            log.error("SMTP session failed", exc_info=error, extra={"channel": self._listener.name})
        return INTERNAL


class _Session(SMTP):
    """aiosmtpd's protocol, known to the listener from connect to hang-up so stop can end it."""

    def __init__(self, listener: SmtpListener, handler: _Handler, **kwargs: Any) -> None:
        self._listener = listener
        super().__init__(handler, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)     # called again after STARTTLS: the set keeps one
        self._listener._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._listener._closed(self)
        super().connection_lost(error)

    def hang_up(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(SHUTTING_DOWN)       # type: ignore[attr-defined]
            transport.close()


_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")


def _accepted(address: str, accept: frozenset[str]) -> bool:
    address = address.lower()
    return address in accept or address.rpartition("@")[2] in accept


def _with_return_path(raw: bytes, mail_from: str) -> bytes:
    return b"Return-Path: <" + mail_from.encode("utf-8", "surrogateescape") + b">\r\n" + raw


def _peer(session: SmtpSession) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _tls_context(tls: ListenerTls, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ListenerError(f"email channel {name!r}: cannot load the STARTTLS certificate "
                            f"{tls.cert_file} / {tls.key_file}: {exc}") from exc
    return context


class _AiosmtpdNoise(logging.Filter):
    """Two warnings aiosmtpd 1.4 logs on every connection that mean nothing to an operator:
    AUTH without TLS (we said it once, at start) and its own use of the deprecated
    ``Session.login_data`` after every successful AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "auth_require_tls == False" not in message and "login_data is deprecated" not in message


_AIOSMTPD_NOISE = _AiosmtpdNoise()


def _quiet_aiosmtpd() -> None:
    logging.getLogger("mail.log").addFilter(_AIOSMTPD_NOISE)    # idempotent: one filter object
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
