"""Reads a mailbox the company already has, over IMAP, and hands each new message to the channel.

The promise: a message is marked ``\\Seen`` (or moved to ``move_to``) only after ``deliver``
returned, so a message the store could not take stays unseen and is read again, and mail that
arrived while the gateway was down is still unseen when it starts. A message delivered whose
``\\Seen`` flag then could not be set (the connection dropped in between) is delivered again
after the reconnect; the channel's Message-ID dedupe makes that a no-op.

What ``deliver`` raising means:

- a *transient* error (``StoreUnavailable`` or ``OSError`` by default): the message stays unseen,
  the scan stops there (the next message would fail the same way), and the mailbox rescans after
  a backoff, on the same connection;
- anything else (``MailRejected``, a bug): the message can never be taken. It is logged once,
  left unseen for a person to see, and flagged with the keyword ``$ContactgateRejected``, which
  later scans skip; removing the keyword makes it read again. A server that does not allow
  keywords gets it skipped until the next reconnect instead.

Connection trouble (refused, dropped, timed out, the server restarting) is one log line, then an
exponential backoff with jitter capped at ``backoff_max``; a refused login starts three steps
further up that ladder. Nothing here retries in a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from aioimaplib import aioimaplib
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.store import StoreUnavailable
from gateway.tasks import TaskSet

from .imap_session import (REJECTED_KEYWORD, ConnectionLost, ImapError, LoginRefused, MailboxSession,
                           describe)

__all__ = ["ImapMailbox", "ImapSettings", "MailboxState", "REJECTED_KEYWORD"]

log = logging.getLogger("contactgate.email.imap")

# A refused login waits as long as three failed connections in a row would: retrying a wrong
# password quickly only fills the server's log (and may lock the account).
LOGIN_REFUSED_WEIGHT = 3

Deliver = Callable[[bytes], Awaitable[None]]


class ImapSettings(BaseModel):
    """One mailbox to read. ``port`` defaults to 993 with ``tls`` (IMAPS), else 143."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool = False                 # IMAPS: TLS from the first byte
    starttls: bool = False            # plain connection upgraded with STARTTLS before login
    ca_file: Path | None = None       # trust this CA (a self-signed server); default: the system's
    username: str = Field(min_length=1)
    password: SecretStr
    folder: str = "INBOX"
    # Move stored mail here (created if missing) instead of only marking it \Seen. Without the
    # server's MOVE, COPY + \Deleted + EXPUNGE; without UIDPLUS too, that EXPUNGE also removes
    # what a person marked \Deleted in the folder.
    move_to: str | None = None
    poll_interval: float = Field(default=60.0, gt=0)
    idle: bool = True                 # use IDLE when the server offers it
    # RFC 2177: servers may drop a client idle for 30 minutes, so IDLE is re-issued before that.
    idle_timeout: float = Field(default=25 * 60.0, gt=0, le=29 * 60.0)
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)  # seconds for one IMAP command

    @model_validator(mode="after")
    def _consistent(self) -> ImapSettings:
        if self.tls and self.starttls:
            raise ValueError("tls and starttls exclude each other: tls is IMAPS (port 993), "
                             "starttls upgrades a plain connection (port 143)")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        if self.move_to is not None and self.move_to == self.folder:
            raise ValueError("move_to must name another folder than folder")
        for key, folder in (("folder", self.folder), ("move_to", self.move_to)):
            if folder is not None and not (folder.isascii() and folder.isprintable() and folder.strip()):
                raise ValueError(f"{key} {folder!r}: IMAP folder names are sent as given, so use printable "
                                 "ASCII (a non-ASCII folder by its modified UTF-7 name, e.g. &ZeVnLIqe-)")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (aioimaplib.IMAP4_SSL_PORT if self.tls else aioimaplib.IMAP4_PORT)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls or self.starttls):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


@dataclass(slots=True)
class MailboxState:
    """What the mailbox is doing, for metrics and tests."""

    connected: bool = False      # logged in, folder selected
    idling: bool = False         # waiting in IDLE (else polling, or not connected)
    last_error: str | None = None
    attempts: int = 0            # connections tried
    sessions: int = 0            # connections that got as far as the folder
    login_failures: int = 0
    delivered: int = 0           # messages deliver took (then marked \Seen or moved)
    failed: int = 0              # transient deliver failures (message left unseen)
    rejected: int = 0            # messages deliver can never take (flagged, skipped)


class Backoff:
    """Exponential delays with jitter: the n-th failure in a row waits between half and all of
    ``initial * 2**(n-1)``, at most ``maximum``."""

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self.failures = 0

    def next(self, weight: int = 1) -> float:
        self.failures += weight
        ceiling = min(self._maximum, self._initial * 2 ** min(self.failures - 1, 60))
        return ceiling * (0.5 + self._rng() / 2)

    def reset(self) -> None:
        self.failures = 0


class ImapMailbox:
    """Reads one IMAP folder and awaits ``deliver(raw_rfc822_bytes)`` for each unseen message.

    ``start()`` returns at once and reads in a background task; ``stop()`` ends it and logs out.
    ``transient`` names the errors of ``deliver`` that mean "try again later" (see the module
    docstring for the rest).
    """

    def __init__(self, settings: ImapSettings, deliver: Deliver, *, name: str,
                 transient: tuple[type[BaseException], ...] = (StoreUnavailable, OSError)) -> None:
        self.settings = settings
        self.name = name
        self.state = MailboxState()
        self._deliver = deliver
        self._transient = transient
        self._tasks = TaskSet()
        self._running = False
        self._stopping = asyncio.Event()
        self._where = f"{settings.username}@{settings.host}:{settings.effective_port}"

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        if self._running:
            raise RuntimeError(f"IMAP mailbox {self.name} is already running")
        self._running = True
        self._stopping.clear()
        # aioimaplib logs every untagged answer it does not route (FLAGS, EXISTS, ...) at INFO:
        # protocol chatter in our logs. Quieted unless someone configured that logger.
        chatter = logging.getLogger("aioimaplib.aioimaplib")
        if chatter.level == logging.NOTSET:
            chatter.setLevel(logging.WARNING)
        self._tasks.spawn(self._run(), name=f"imap:{self.name}")

    async def stop(self) -> None:
        """Finish the message in hand, end IDLE, log out. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        # A deliver that hangs is cancelled after one command timeout (and the message stays unseen).
        await self._tasks.close(timeout=self.settings.timeout + 5)

    # the connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while not self._stopping.is_set():
            self.state.attempts += 1
            session = MailboxSession(self.settings, self.state, name=self.name, deliver=self._deliver,
                                     transient=self._transient, stopping=self._stopping, backoff=backoff)
            try:
                await session.run()
                continue   # returns only when stopping
            except LoginRefused as exc:
                self.state.login_failures += 1
                delay = backoff.next(LOGIN_REFUSED_WEIGHT)
                self._failed(f"login refused for {self._where}: {exc}; retrying in {delay:.2f}s", logging.ERROR)
            except (OSError, asyncio.TimeoutError, ConnectionLost, ImapError,
                    aioimaplib.AioImapException) as exc:
                delay = backoff.next()
                self._failed(f"IMAP mailbox {self.name} ({self._where}): {describe(exc)}; "
                             f"reconnecting in {delay:.2f}s", logging.WARNING)
            except Exception as exc:  # a bug here must not end the mailbox: log it, back off
                delay = backoff.next()
                self.state.last_error = describe(exc)
                log.exception("IMAP mailbox %s (%s): unexpected error; reconnecting in %.2fs",
                              self.name, self._where, delay, extra={"mailbox": self.name})
            finally:
                self.state.connected = self.state.idling = False
                await session.close()
            await self._pause(delay)

    def _failed(self, message: str, level: int) -> None:
        self.state.last_error = message
        log.log(level, message, extra={"mailbox": self.name})

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the mailbox is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel (3.11)
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
