"""One IMAP connection of an :class:`~adapters.email.imap.ImapMailbox`: connect, log in, select
the folder, then scan for unseen mail and wait (IDLE or polling) until the connection fails or the
mailbox stops. The mailbox decides what a failure costs (its backoff); a session only raises.

aioimaplib notices a dropped connection only when a command times out, so every command here
races the connection-lost callback.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar, cast

from aioimaplib import aioimaplib

if TYPE_CHECKING:
    from .imap import Backoff, ImapSettings, MailboxState

log = logging.getLogger("contactgate.email.imap")

REJECTED_KEYWORD = "$ContactgateRejected"

T = TypeVar("T")
Deliver = Callable[[bytes], Awaitable[None]]


class ConnectionLost(Exception):
    """The server closed the connection, or said BYE."""


class ImapError(Exception):
    """The server answered a command with NO or BAD."""


class LoginRefused(ImapError):
    """The server refused the user name or password."""


class MailboxSession:
    """One connection: connect, log in, select, then scan and wait (IDLE or polling) until the
    connection fails or the mailbox stops."""

    def __init__(self, settings: ImapSettings, state: MailboxState, *, name: str, deliver: Deliver,
                 transient: tuple[type[BaseException], ...], stopping: asyncio.Event,
                 backoff: Backoff) -> None:
        self.settings = settings
        self.state = state
        self.name = name
        self.where = f"{settings.username}@{settings.host}:{settings.effective_port}"
        self.deliver = deliver
        self.transient = transient
        self.stopping = stopping
        self.backoff = backoff
        self.client: aioimaplib.IMAP4 | None = None
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.keywords_allowed = False
        self.skipped: set[str] = set()   # this session: rejected mail we could not flag
        self.done: set[str] = set()      # this session: delivered, flag set (a lagging SEARCH)

    def _connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(f"connection lost ({describe(exc)})" if exc else "connection closed by the server")

    async def call(self, aw: Awaitable[T]) -> T:
        """Await one IMAP command, or raise ConnectionLost as soon as the connection drops
        (aioimaplib notices only at its timeout)."""
        return cast(T, await self._race(aw, stop=False))   # None only comes with stop=True

    async def _until_stop(self, aw: Awaitable[T]) -> T | None:
        """``aw``'s result, or None once the mailbox stops; ConnectionLost if the connection drops."""
        return await self._race(aw, stop=True)

    async def _race(self, aw: Awaitable[T], *, stop: bool) -> T | None:
        task = asyncio.ensure_future(aw)
        stopping = asyncio.ensure_future(self.stopping.wait()) if stop else None
        try:
            waiters: set[asyncio.Future[object]] = {task, self.lost}
            if stopping is not None:
                waiters.add(stopping)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            if self.lost.done():
                raise ConnectionLost(self.lost.result())
            return None
        finally:
            if stopping is not None:
                stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def command(self, aw: Awaitable[aioimaplib.Response], what: str, *,
                      bounded: bool = True) -> aioimaplib.Response:
        """Run a command that must answer OK; ``bounded``: within ``timeout`` (aioimaplib bounds
        only some of its commands; FETCH it bounds by inactivity, which suits a large message)."""
        response = await self.call(asyncio.wait_for(aw, self.settings.timeout) if bounded else aw)
        if response.result != "OK":
            raise ImapError(f"{what} failed: {response.result} {_text(response)}")
        return response

    # --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read mail until the mailbox stops (then return) or the connection fails (then raise)."""
        if await self._until_stop(self._connect()) is None:
            return   # stopped while connecting (a server that does not answer takes a timeout)
        self.state.connected = True
        self.state.sessions += 1
        log.info("IMAP mailbox %s: reading %s at %s (%s)", self.name, self.settings.folder,
                 self.where, "IDLE" if self._use_idle() else f"polling every {self.settings.poll_interval:g}s",
                 extra={"mailbox": self.name})
        while not self.stopping.is_set():
            if await self._scan():
                self.backoff.reset()
                self.state.last_error = None
                if self._use_idle():
                    await self._idle()
                else:
                    await self._wait(self.settings.poll_interval)
            else:
                await self._wait(self.backoff.next())

    def _use_idle(self) -> bool:
        return self.settings.idle and self.client is not None and self.client.has_capability("IDLE")

    async def _connect(self) -> bool:
        settings = self.settings
        context = settings.ssl_context()
        self.client = aioimaplib.IMAP4(
            host=settings.host, port=settings.effective_port, timeout=settings.timeout,
            conn_lost_cb=self._connection_lost, ssl_context=context if settings.tls else None)
        await self.call(self.client.wait_hello_from_server())
        if settings.starttls:
            assert context is not None
            await self._starttls(context)
        response = await self.call(self.client.login(settings.username, settings.password.get_secret_value()))
        if response.result != "OK":
            raise LoginRefused(_text(response) or response.result)
        response = await self.command(self.client.select(aioimaplib.quoted(settings.folder)),
                                      f"selecting folder {settings.folder!r}")
        self.keywords_allowed = any(b"PERMANENTFLAGS" in line and b"\\*" in line
                                    for line in response.lines if isinstance(line, bytes))
        if settings.move_to is not None:
            await self._ensure_folder(settings.move_to)
        return True

    async def _starttls(self, context: ssl.SSLContext) -> None:
        # aioimaplib 2.0 lists STARTTLS but cannot switch the transport: we send the command and
        # upgrade the transport under its protocol ourselves (RFC 3501 6.2.1), then ask for the
        # capabilities again, as they may change once the connection is secure.
        assert self.client is not None
        protocol = self.client.protocol
        if not self.client.has_capability("STARTTLS"):
            raise ImapError("the server does not offer STARTTLS (starttls: true): refusing to log in in clear")
        await self.command(protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)),
                           "STARTTLS")
        loop = asyncio.get_running_loop()
        transport = await self.call(asyncio.wait_for(
            loop.start_tls(protocol.transport, protocol, context, server_hostname=self.settings.host),
            self.settings.timeout))
        protocol.transport = transport
        await self.call(asyncio.wait_for(protocol.capability(), self.settings.timeout))

    async def _ensure_folder(self, folder: str) -> None:
        assert self.client is not None
        name = aioimaplib.quoted(folder)
        listed = await self.command(self.client.list('""', name), f"listing folder {folder!r}")
        # aioimaplib strips "* LIST "; any line before the tagged OK's text is the folder.
        if any(isinstance(line, bytes) and line.strip() for line in listed.lines[:-1]):
            return
        await self.command(self.client.create(name), f"creating folder {folder!r} (move_to)")
        log.info("IMAP mailbox %s: created folder %r for stored mail", self.name, folder,
                 extra={"mailbox": self.name})

    # reading mail -------------------------------------------------------------------------

    async def _scan(self) -> bool:
        """Deliver every unseen message; False if a transient failure stopped the scan."""
        assert self.client is not None
        while True:
            # NOOP first: the server reports mail that arrived since the last command, and a
            # SEARCH then sees it.
            await self.command(self.client.noop(), "NOOP")
            found = await self.command(
                self.client.uid_search("UNSEEN", "UNKEYWORD", REJECTED_KEYWORD, charset=None), "UID SEARCH")
            todo = [uid for uid in _search_uids(found) if uid not in self.skipped and uid not in self.done]
            if not todo:
                return True
            for uid in todo:
                if self.stopping.is_set():
                    return True
                raw = await self._fetch(uid)
                if raw is None:   # expunged meanwhile
                    self.done.add(uid)
                    continue
                try:
                    await self.deliver(raw)
                except self.transient as exc:
                    self.state.failed += 1
                    self.state.last_error = (f"IMAP mailbox {self.name}: message UID {uid} could not be "
                                             f"stored, left unseen for a retry ({describe(exc)})")
                    log.warning(self.state.last_error, extra={"mailbox": self.name})
                    return False
                except Exception as exc:
                    await self._reject(uid, exc)
                    continue
                self.state.delivered += 1
                self.state.last_error = None  # stored again: an earlier failure is over
                await self._mark_stored(uid)
                self.done.add(uid)

    async def _fetch(self, uid: str) -> bytes | None:
        assert self.client is not None
        # BODY.PEEK: reading the message must not mark it \Seen before it is stored.
        response = await self.command(self.client.uid("fetch", uid, "(BODY.PEEK[])"), f"UID FETCH {uid}",
                                      bounded=False)
        return _fetched_body(response)

    async def _mark_stored(self, uid: str) -> None:
        assert self.client is not None
        await self.command(self.client.uid("store", uid, "+FLAGS.SILENT", "(\\Seen)"), f"marking UID {uid} \\Seen")
        folder = self.settings.move_to
        if folder is None:
            return
        target = aioimaplib.quoted(folder)
        if self.client.has_capability("MOVE"):
            await self.command(self.client.uid("move", uid, target), f"moving UID {uid} to {folder!r}")
            return
        await self.command(self.client.uid("copy", uid, target), f"copying UID {uid} to {folder!r}")
        await self.command(self.client.uid("store", uid, "+FLAGS.SILENT", "(\\Deleted)"), f"deleting UID {uid}")
        if self.client.has_capability("UIDPLUS"):
            await self.command(self.client.uid("expunge", uid), f"expunging UID {uid}")
        else:
            await self.command(self.client.expunge(), "EXPUNGE")

    async def _reject(self, uid: str, exc: Exception) -> None:
        assert self.client is not None
        self.state.rejected += 1
        flagged = False
        if self.keywords_allowed:
            response = await self.call(asyncio.wait_for(
                self.client.uid("store", uid, "+FLAGS.SILENT", f"({REJECTED_KEYWORD})"), self.settings.timeout))
            flagged = response.result == "OK"
        if not flagged:
            self.skipped.add(uid)
        where = (f"flagged {REJECTED_KEYWORD}, left unseen; remove the keyword to retry it" if flagged
                 else "left unseen, skipped until the next reconnect (the server allows no keywords)")
        log.error("IMAP mailbox %s: message UID %s cannot be taken (%s); %s", self.name, uid,
                  describe(exc), where, extra={"mailbox": self.name},
                  exc_info=None if isinstance(exc, ValueError) else exc)

    # waiting for mail ---------------------------------------------------------------------

    async def _idle(self) -> None:
        """One IDLE: return when the server reports a change, at ``idle_timeout``, or on stop."""
        assert self.client is not None
        client = self.client
        # What the server pushed before the scan is already read.
        while not client.protocol.idle_queue.empty():
            client.protocol.idle_queue.get_nowait()
        idle = await self.call(client.idle_start(timeout=self.settings.idle_timeout))
        self.state.idling = True
        try:
            while True:
                push = await self._until_stop(client.wait_server_push(
                    timeout=self.settings.idle_timeout + self.settings.timeout))
                if push is None or push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return   # stopping, or time to re-issue IDLE
                lines = [line for line in push if isinstance(line, bytes)]
                bye = next((line for line in lines if line.startswith(b"BYE")), None)
                if bye is not None:
                    raise ConnectionLost(f"the server said {bye.decode(errors='replace')}")
                if any(b"EXISTS" in line or b"RECENT" in line for line in lines):
                    return
        except asyncio.TimeoutError:
            return
        finally:
            self.state.idling = False
            if not self.lost.done() and client.has_pending_idle():
                client.idle_done()
                await self.call(asyncio.wait_for(idle, self.settings.timeout))

    async def _wait(self, seconds: float) -> None:
        """Sleep between polls (or after a failed deliver); wake early on stop or a lost connection."""
        await self._until_stop(asyncio.sleep(seconds))

    async def close(self) -> None:
        """Log out if the connection still works, then drop it; never raises."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if not self.lost.done() and client.protocol.transport is not None \
                    and client.get_state() in (aioimaplib.AUTH, aioimaplib.SELECTED, aioimaplib.NONAUTH):
                await self.call(asyncio.wait_for(client.logout(), min(self.settings.timeout, 5.0)))
        except Exception as exc:
            log.debug("IMAP mailbox %s: logout failed: %s", self.name, describe(exc))
        finally:
            transport = client.protocol.transport
            if transport is not None:
                transport.close()
            for task in (*client.tasks, *client.protocol.tasks):
                task.cancel()
            if not client._client_task.done():   # still connecting
                client._client_task.cancel()
            if not self.lost.done():
                self.lost.set_result("closed")


# aioimaplib's answers ---------------------------------------------------------------------

def _text(response: aioimaplib.Response) -> str:
    """The human text of a tagged answer (its last line)."""
    for line in reversed(response.lines):
        if isinstance(line, (bytes, bytearray)):
            return bytes(line).decode("utf-8", errors="replace").strip()
    return ""


def _search_uids(response: aioimaplib.Response) -> list[str]:
    """The UIDs of ``* SEARCH 3 7 9`` (aioimaplib strips ``* SEARCH``; the last line is the tagged
    OK's text)."""
    uids: list[str] = []
    for line in response.lines[:-1]:
        if isinstance(line, bytes):
            uids.extend(word.decode() for word in line.split() if word.isdigit())
    return uids


def _fetched_body(response: aioimaplib.Response) -> bytes | None:
    """The literal following ``BODY[] {n}`` in a one-message FETCH answer, or None."""
    lines = response.lines
    for index, line in enumerate(lines[:-1]):
        if isinstance(line, bytes) and b"BODY[]" in line and line.endswith(b"}"):
            body = lines[index + 1]
            if isinstance(body, (bytes, bytearray)):
                return bytes(body)
    return None


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc)
    if isinstance(exc, asyncio.TimeoutError) and not text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
