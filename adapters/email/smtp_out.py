"""Sending a mail through the company's relay (aiosmtplib), and telling the outbox what a
failure means.

The promise: :meth:`Relay.send` returns only when the relay accepted the mail (250 after DATA)
for at least one recipient, and otherwise raises one of two errors, each carrying the relay's
reply: :class:`TemporaryFailure` (a 4xx reply, a refused or dropped connection, a timeout, a TLS
problem: try again later) or :class:`PermanentFailure` (a 5xx reply, an address that cannot be
sent to: trying again sends nothing). It never retries by itself: the durable outbox decides
when, so a mail is never sent twice because two layers both retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Mapping, Sequence

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["PermanentFailure", "Relay", "RelayFailure", "RelaySettings", "Sent", "TemporaryFailure"]

log = logging.getLogger("contactgate.email.smtp")

# An addr-spec as it goes into MAIL FROM and RCPT TO: no spaces, controls, brackets or lists.
_MAILBOX = re.compile(r'[^\x00-\x20\x7f<>()\[\],;:\\"@]+@[^\x00-\x20\x7f<>()\[\],;:\\"@]+')
_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}


class RelaySettings(BaseModel):
    """Where replies go out: the relay's host and port, how the connection is secured, and the
    login (the password from ``${VAR}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    # null: 465 for "tls", 587 for "starttls", 25 for "none".
    port: int | None = Field(default=None, ge=1, le=65535)
    # "starttls": plain connection upgraded with STARTTLS, which the relay must offer;
    # "tls": TLS from the first byte (SMTPS); "none": no encryption (a relay on this host only).
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    # Seconds for connecting and for each reply of the relay.
    timeout: float = Field(default=30.0, gt=0)
    validate_certs: bool = True
    # CA bundle to check the relay's certificate with instead of the system's (a private CA).
    ca_file: Path | None = None
    # The name we give in EHLO (null: this host's fully qualified name).
    local_hostname: str | None = None

    @model_validator(mode="after")
    def _login_whole(self) -> "RelaySettings":
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.security]


class RelayFailure(Exception):
    """The relay did not take the mail. ``code`` is its SMTP reply code when it gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryFailure(RelayFailure):
    """Try again later: nothing was delivered."""


class PermanentFailure(RelayFailure):
    """Sending this mail again will fail the same way: tell the agent."""


@dataclass(frozen=True, slots=True)
class Sent:
    reply: str                     # the relay's answer to DATA (often its queue id)
    refused: Mapping[str, str]     # recipients the relay refused while taking the others


class Relay:
    """One configured relay. ``send`` opens a connection per mail: replies are few and far
    between, and a fresh connection cannot be one the relay already dropped."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._tls: ssl.SSLContext | None = None

    async def send(self, message: EmailMessage | bytes, *, sender: str,
                   recipients: Sequence[str]) -> Sent:
        """Hand ``message`` to the relay for ``recipients``, with ``sender`` as the envelope
        sender (bounces go there; ``""`` is the null sender). A message object is sent as its
        bytes with CRLF line ends; bytes are sent as they are (what the outbox stored).

        Raises :class:`TemporaryFailure` or :class:`PermanentFailure`; with several recipients,
        the ones refused while others were accepted are in ``Sent.refused`` (sending again
        would deliver twice to the others)."""
        if not recipients:
            raise PermanentFailure("no recipients")
        # aiosmtplib would quietly send to the first address of "a@x, b@y" or of one with a CR.
        for address in (*([sender] if sender else []), *recipients):    # "" is the null sender
            if not _MAILBOX.fullmatch(address):
                raise PermanentFailure(f"{address!r} is not one mail address")
        data = message if isinstance(message, bytes) else message.as_bytes()
        settings = self.settings
        options = ["SMTPUTF8"] if not _ascii(sender, *recipients) else []
        where = f"{settings.host}:{settings.effective_port}"
        try:
            client = aiosmtplib.SMTP(
                hostname=settings.host, port=settings.effective_port,
                local_hostname=settings.local_hostname, timeout=settings.timeout,
                use_tls=settings.security == "tls", start_tls=settings.security == "starttls",
                tls_context=self._tls_context() if settings.security != "none" else None,
                username=settings.username,
                password=settings.password.get_secret_value() if settings.password else None)
            async with client:
                refused, reply = await client.sendmail(sender, list(recipients), data,
                                                       mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _recipients_refused(exc, where) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _refused(exc.code, f"relay {where} {_step(exc)}: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPException as exc:
            # Disconnects, timeouts, connect errors, a missing STARTTLS: the mail is fine, the
            # way to the relay is not.
            raise TemporaryFailure(f"relay {where}: {type(exc).__name__}: {exc}") from None
        except ssl.SSLError as exc:
            raise TemporaryFailure(f"relay {where}: TLS failed: {exc}") from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise TemporaryFailure(f"relay {where}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            # aiosmtplib refuses an address it cannot write on the wire (CR, LF, ...).
            raise PermanentFailure(f"cannot send to {list(recipients)!r} from {sender!r}: {exc}") from None
        if refused:
            log.warning("relay refused some recipients", extra={
                "relay": where, "refused": {r: f"{v.code} {v.message}" for r, v in refused.items()}})
        return Sent(reply=reply, refused={r: f"{v.code} {v.message}" for r, v in refused.items()})

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            settings = self.settings
            context = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None)
            if not settings.validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls


def _refused(code: int, message: str) -> RelayFailure:
    """RFC 5321 4.2.1: 4yz is a transient failure, 5yz a permanent one. Anything else from a
    relay that did not take the mail (a garbled reply) is treated as transient."""
    if 500 <= code <= 599:
        return PermanentFailure(message, code)
    return TemporaryFailure(message, code)


def _recipients_refused(exc: aiosmtplib.SMTPRecipientsRefused, where: str) -> RelayFailure:
    """Every recipient refused: permanent only if every refusal was (one 4xx may pass later)."""
    text = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
    codes = [e.code for e in exc.recipients]
    message = f"relay {where} refused the recipient{'s' if len(codes) > 1 else ''}: {text}"
    if codes and all(500 <= c <= 599 for c in codes):
        return PermanentFailure(message, codes[0])
    return TemporaryFailure(message, next((c for c in codes if not 500 <= c <= 599), None))


def _step(exc: aiosmtplib.SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "refused our login"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return f"refused the sender {exc.sender}"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "refused the message"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return "refused the connection"
    return "answered"


def _ascii(*values: str) -> bool:
    return all(value.isascii() for value in values)
