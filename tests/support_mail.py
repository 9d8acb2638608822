"""Mail servers for tests: :class:`MailSink`, a real SMTP server (aiosmtpd on the test's loop)
that records every mail it accepts and can be told to refuse or hang up first; and
:func:`self_signed_cert` for TLS on 127.0.0.1 (openssl, no Python dependency).

    sink = MailSink()
    await sink.start()                        # 127.0.0.1, a free port: sink.port
    sink.refuse_next(2, "451 4.3.0 try later") # the next two DATA get 451, then it accepts
    ...
    envelope, raw = (await sink.wait_for(1))[0]
    await sink.stop()
"""

from __future__ import annotations

import asyncio
import hmac
import ssl
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

__all__ = ["MailSink", "SinkEnvelope", "self_signed_cert", "server_tls_context"]

Step = Literal["mail", "rcpt", "data"]


@dataclass(frozen=True, slots=True)
class SinkEnvelope:
    mail_from: str                  # "<>" for the null sender, as aiosmtpd keeps it
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]


class MailSink:
    """An SMTP server that accepts everything (unless scripted otherwise) and keeps it.

    ``tls_context`` offers STARTTLS (or, with ``implicit_tls``, speaks TLS from the first byte);
    ``login`` = (user, password) makes AUTH required. ``attempts`` counts the DATA commands that
    reached the script, accepted or not."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 login: tuple[str, str] | None = None, smtputf8: bool = True) -> None:
        self.messages: list[tuple[SinkEnvelope, bytes]] = []
        self.attempts = 0
        self._tls = tls_context
        self._implicit = implicit_tls
        self._login = login
        self._smtputf8 = smtputf8
        self._script: dict[Step, deque[str | None]] = {"mail": deque(), "rcpt": deque(), "data": deque()}
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._arrived = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None, "the sink is not running"
        return self._server.sockets[0].getsockname()[1]

    def refuse_next(self, count: int, reply: str, *, at: Step = "data") -> None:
        """Answer the next ``count`` MAIL, RCPT or DATA commands with ``reply`` instead."""
        self._script[at].extend([reply] * count)

    def hang_up_next(self, count: int = 1, *, at: Step = "data") -> None:
        """Close the connection, without a reply, on the next ``count`` such commands."""
        self._script[at].extend([None] * count)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[SinkEnvelope, bytes]]:
        """The first ``count`` mails, once that many arrived; AssertionError after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"the sink got {len(self.messages)} mail(s) in {timeout}s, "
                                 f"expected {count}") from None
        return self.messages[:count]

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:``port`` (0: a free one); a sink stopped before may start again."""
        loop = asyncio.get_running_loop()
        sink = self

        class Session(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                sink._transports.add(transport)

            def connection_lost(self, error: Exception | None) -> None:
                sink._transports.discard(self.transport)  # type: ignore[arg-type]
                super().connection_lost(error)

        def factory() -> SMTP:
            return Session(_SinkHandler(self), hostname="sink.test", ident="sink",
                           enable_SMTPUTF8=self._smtputf8,
                           tls_context=None if self._implicit else self._tls,
                           auth_required=self._login is not None,
                           auth_require_tls=self._tls is not None and not self._implicit,
                           authenticator=self._authenticate, loop=loop)

        self._server = await loop.create_server(factory, "127.0.0.1", port,
                                                ssl=self._tls if self._implicit else None)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for transport in list(self._transports):
            transport.close()
        await server.wait_closed()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (self._login is not None and isinstance(auth_data, LoginPassword)
              and hmac.compare_digest(auth_data.login, self._login[0].encode())
              and hmac.compare_digest(auth_data.password, self._login[1].encode()))
        return AuthResult(success=ok, handled=False)

    def _next(self, step: Step) -> tuple[bool, str | None]:
        script = self._script[step]
        return (True, script.popleft()) if script else (False, None)


class _SinkHandler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def _scripted(self, server: SMTP, step: Step) -> str | None:
        scripted, reply = self._sink._next(step)
        if not scripted:
            return None
        if reply is None:
            assert server.transport is not None
            server.transport.close()
            await asyncio.Event().wait()   # connection_lost cancels this session: no reply at all
        return reply

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if (reply := await self._scripted(server, "mail")) is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if (reply := await self._scripted(server, "rcpt")) is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self._sink.attempts += 1
        if (reply := await self._scripted(server, "data")) is not None:
            return reply
        self._sink.messages.append((SinkEnvelope(envelope.mail_from, tuple(envelope.rcpt_tos),
                                                 tuple(envelope.mail_options)),
                                    envelope.original_content))
        self._sink._arrived.set()
        return "250 OK: queued as sink-%d" % len(self._sink.messages)


def self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throwaway certificate for ``name`` and 127.0.0.1: (cert.pem, key.pem) in ``directory``.
    It is its own CA: pass the cert as the CA file of a client that should trust it."""
    cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
