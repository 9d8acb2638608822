"""Connections before they are requests: the gateway's share of file descriptors.

Promise: a flood of TCP connections that never send a request (idle, or stopped in the middle
of the headers) cannot lock customers, agents or health checks out, and is never silent.

- At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit (both logged).
- Open connections are capped at ``server.max_connections`` (default: the file limit minus
  ``FD_HEADROOM`` descriptors for the store, logs and config), so accept() never runs out of
  descriptors. The last ``server.connection_reserve`` of them only serve ``RESERVED_PATHS``
  (health checks, metrics, the admin API, agents); other requests there get 503 with
  ``Retry-After``.
- At the cap, a newcomer takes the place of the oldest connection that has not sent a complete
  request yet; when every connection is busy (requests, websockets) the newcomer gets a 503.
- ``server.header_timeout`` closes connections that do not send complete request headers in
  time (aiohttp's keep-alive timer, which also runs from the moment a connection is made).
- Refused and shed connections, and accept() failures, are logged at most once per
  ``LOG_EVERY`` seconds with their counts, and reported in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .config import ServerConfig

log = logging.getLogger("contactgate.connections")

# Descriptors kept free for the store, log files and config reloads (64), and for one burst of
# accepts (the listen backlog): the loop accepts a burst before any of it is counted.
ACCEPT_BURST = 128
FD_HEADROOM = 64 + ACCEPT_BURST
MIN_RESERVE = 16
LOG_EVERY = 5.0  # seconds between two "connections refused" lines
RETRY_AFTER = "5"
RESERVED_PATHS = ("/healthz", "/readyz", "/metrics", "/api/", "/agent/ws")
# What a connection refused at the cap reads before it is closed.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + RETRY_AFTER.encode()
           + b"\r\nContent-Type: text/plain\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
           + b"too many connections; retry in a moment\n")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one where the OS allows; the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1024 * 1024)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit", extra={"soft": soft, "hard": hard, "error": str(exc)})
    log.info("open file limit", extra={"soft": soft, "hard": hard})
    return soft


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    reserve: int

    @property
    def ordinary(self) -> int:
        """Connections anyone may hold; beyond them only RESERVED_PATHS are served."""
        return self.max_connections - self.reserve

    @classmethod
    def for_server(cls, server: ServerConfig, file_limit: int) -> "ConnectionLimits":
        fitting = max(1, file_limit - FD_HEADROOM)
        cap = server.max_connections if server.max_connections is not None else fitting
        if cap > fitting:
            log.warning("server.max_connections is above what the open file limit allows",
                        extra={"max_connections": cap, "file_limit": file_limit, "headroom": FD_HEADROOM})
        reserve = server.connection_reserve if server.connection_reserve is not None else max(MIN_RESERVE, cap // 10)
        return cls(cap, min(reserve, cap // 2))


class ConnectionGate(Collector):
    """The protocol factory for the listening socket (wraps aiohttp's), and the middleware that
    turns ordinary requests away from reserve connections."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.factory: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, set at start
        self._live: set[asyncio.BaseProtocol] = set()
        self.totals = {"refused": 0, "shed": 0, "reserve_only": 0, "accept_failed": 0}
        self._reserve: set[asyncio.BaseProtocol] = set()
        # Connections that have not sent a complete request yet, oldest first: shed at the cap.
        self._unproven: OrderedDict[asyncio.BaseProtocol, asyncio.BaseTransport] = OrderedDict()
        self._unlogged = dict.fromkeys(self.totals, 0)
        self._last_log = float("-inf")
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self) -> asyncio.Protocol:
        assert self.factory is not None, "ConnectionGate.factory is set before serving"
        return _Counted(self, self.factory())

    # called by _Counted ------------------------------------------------------------------------
    def admit(self, inner: asyncio.BaseProtocol, transport: asyncio.BaseTransport) -> bool:
        if self.open >= self.limits.max_connections:
            if not self._unproven:
                self.note("refused")
                return False
            oldest, its_transport = self._unproven.popitem(last=False)
            self.lost(oldest)
            its_transport.abort()
            self.note("shed")
        self._live.add(inner)
        self._unproven[inner] = transport
        if self.open > self.limits.ordinary:
            self._reserve.add(inner)
        return True

    @property
    def open(self) -> int:
        return len(self._live)

    def lost(self, inner: asyncio.BaseProtocol) -> None:
        self._live.discard(inner)
        self._reserve.discard(inner)
        self._unproven.pop(inner, None)

    # requests ----------------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        self._unproven.pop(protocol, None)
        if protocol in self._reserve and not request.path.startswith(RESERVED_PATHS):
            self.note("reserve_only")
            response = web.json_response(
                {"error": "busy", "message": "too many connections; retry in a moment"},
                status=503, headers={"Retry-After": RETRY_AFTER})
            response.force_close()  # give the reserve connection back at once
            return response
        return await handler(request)

    def exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's: accept() out of descriptors becomes a counted, rate-limited line."""
        if context.get("message", "").startswith("socket.accept() out of system resource"):
            self.note("accept_failed")
            return
        loop.default_exception_handler(context)

    # log and metrics ---------------------------------------------------------------------------
    def note(self, kind: str) -> None:
        self.totals[kind] += 1
        self._unlogged[kind] += 1
        if self._flush is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_log + LOG_EVERY - loop.time()
        if wait <= 0:
            self._log()
        else:
            self._flush = loop.call_later(wait, self._log)

    def _log(self) -> None:
        self._flush = None
        self._last_log = asyncio.get_running_loop().time()
        counts = {k: v for k, v in self._unlogged.items() if v}
        self._unlogged = dict.fromkeys(self.totals, 0)
        if counts:
            log.warning("connections refused", extra={
                **counts, "open": self.open, "max_connections": self.limits.max_connections,
                "reserve": self.limits.reserve, "since_seconds": LOG_EVERY})

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily("contactgate_connections_open", "Open TCP connections", value=self.open)
        yield GaugeMetricFamily("contactgate_connections_max", "server.max_connections in force",
                                value=self.limits.max_connections)
        refused = CounterMetricFamily("contactgate_connections_refused", "Connections turned away, by reason",
                                      labels=["reason"])
        for reason, count in self.totals.items():
            refused.add_metric([reason], count)
        yield refused

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._log()


class GatedSite(web.SockSite):
    """aiohttp's SockSite serving through a ConnectionGate (same socket, same cleanup)."""

    __slots__ = ("_gate",)

    def __init__(self, runner: web.BaseRunner, sock: Any, gate: ConnectionGate) -> None:
        super().__init__(runner, sock, backlog=ACCEPT_BURST)
        self._gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers with the runner, which stops it on cleanup
        self._gate.factory = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            self._gate, sock=self._sock, backlog=self._backlog)


class QuietBadRequests(logging.Filter):
    """For aiohttp's server logger: a client that sends what is not HTTP (junk after a declined
    websocket upgrade, a bad method) is the client's error, logged as one info line without a
    traceback, so junk cannot fill the log with what looks like server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = "bad request from a client", (), None, None
            record.error = f"{type(exc).__name__}: {exc.message}"
        return True


def current_file_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1024 * 1024


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted by the gate. The hot callbacks are the
    inner protocol's own bound methods, so a request costs no extra call."""

    def __init__(self, gate: ConnectionGate, inner: Any) -> None:
        self._gate = gate
        self._inner = inner
        self._admitted = False
        self.data_received = inner.data_received  # type: ignore[method-assign]
        self.eof_received = inner.eof_received  # type: ignore[method-assign]
        self.pause_writing = inner.pause_writing  # type: ignore[method-assign]
        self.resume_writing = inner.resume_writing  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._gate.admit(self._inner, transport):
            self._admitted = True
            self._inner.connection_made(transport)
            return
        self.data_received = _ignore  # type: ignore[method-assign]
        self.eof_received = _ignore  # type: ignore[method-assign]
        self.pause_writing = self.resume_writing = _nothing  # type: ignore[method-assign]
        transport.write(REFUSAL)  # type: ignore[attr-defined]
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._gate.lost(self._inner)
            self._inner.connection_lost(exc)


def _ignore(*args: object) -> None:
    return None


def _nothing() -> None:
    return None
