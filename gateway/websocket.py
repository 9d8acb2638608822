"""What both websocket endpoints (web chat, agent desk) share: reading JSON frames with clear
errors, and an outbound side where a slow client only slows itself.

Every frame a server sends goes through :class:`FrameSender`. A small frame goes straight onto
the socket when nothing is waiting ahead of it and the socket's send buffer is empty (the common
case, and it costs no task switch); otherwise it queues, and one writer task sends the queue in
order. The pipeline never waits on a client's network; a client more than
``server.max_send_buffer_bytes`` behind is disconnected (1013, or reset when it does not take the
close) and resumes from its last seq on reconnect, so nothing is lost.

Frames are JSON text, encoded and decoded with orjson.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from .store.text import bad_identifier
from .tasks import TaskSet

log = logging.getLogger("contactgate.websocket")

OPEN_WEBSOCKETS = web.AppKey("open_websockets", weakref.WeakSet)

# Application close codes (4000-4999 are ours).
CLOSE_UNAUTHORIZED = 4401
CLOSE_REPLACED = 4409
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_RATE_LIMITED = 4429  # a limit of the ``limits:`` config; the reason says when to retry


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that could not be used; sent back as an error frame, the socket stays open."""

    code: str
    message: str

    def frame(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


class FrameRejected(Exception):
    """A frame that is well-formed JSON but not acceptable; answered with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        self.error = FrameError(code, message)
        super().__init__(message)


MAX_CLIENT_ID = 128  # characters of a client-chosen message id


MAX_ATTACHMENTS = 20  # attachment ids one message frame may carry


def attachment_ids(frame: dict[str, Any]) -> list[str]:
    """The ``attachments`` of an agent's ``message`` frame: ids from ``POST /api/attachments``."""
    ids = frame.get("attachments", [])
    if (not isinstance(ids, list) or len(ids) > MAX_ATTACHMENTS
            or not all(isinstance(i, str) and i and len(i) <= MAX_CLIENT_ID for i in ids)):
        raise FrameRejected("bad_message", f'"attachments" must be a list of at most {MAX_ATTACHMENTS} attachment ids')
    return ids


def message_fields(frame: dict[str, Any], *, text_optional: bool = False) -> tuple[str, str]:
    """(client id, text) of a ``message`` frame from a customer or an agent. ``text_optional``:
    the frame carries attachments, so its text may be empty."""
    client_id, text = frame.get("id"), frame.get("text", "" if text_optional else None)
    # An id is echoed back in its ack, so one the store could not hold as it is (text.py) is
    # refused rather than normalised.
    if (not isinstance(client_id, str) or not client_id or len(client_id) > MAX_CLIENT_ID
            or bad_identifier(client_id)):
        raise FrameRejected("bad_message", f'"id" must be a non-empty string of at most {MAX_CLIENT_ID} characters without control characters, unique per message')
    if not isinstance(text, str) or not (text.strip() or text_optional):
        raise FrameRejected("bad_message", '"text" must be a non-empty string')
    return client_id, text


def close_limit(max_frame_bytes: int) -> int:
    """Bytes above which a frame closes the socket (1009) instead of getting frame_too_large."""
    return max_frame_bytes * 4


def typing_active(frame: dict[str, Any]) -> bool:
    """Whether a ``typing`` frame from a customer or an agent says typing (the default) or stopped."""
    active = frame.get("active", True)
    if not isinstance(active, bool):
        raise FrameRejected("bad_typing", '"active" must be true or false (or left out: true)')
    return active


async def prepare(request: web.Request, max_frame_bytes: int) -> web.WebSocketResponse:
    # aiohttp itself closes with 1009 on a frame of max_msg_size bytes or more (its reader
    # compares with >=), so one byte more lets a frame of exactly 4x the limit through, to get
    # a frame_too_large error like any frame between the two; the socket stays usable.
    ws = web.WebSocketResponse(max_msg_size=close_limit(max_frame_bytes) + 1, heartbeat=30.0)
    try:
        await ws.prepare(request)
    except ConnectionError as exc:
        # The client vanished during the handshake ("Cannot write to closing transport"): there
        # is nobody to answer, and an HTTPException is what aiohttp drops without a traceback.
        raise web.HTTPBadRequest(text="connection closed during the websocket handshake") from exc
    request.app[OPEN_WEBSOCKETS].add(ws)
    return ws


async def frames(ws: web.WebSocketResponse, max_frame_bytes: int) -> AsyncIterator[dict[str, Any] | FrameError]:
    """Yield each client frame as a dict with a string ``type``, or a FrameError to report.

    Sizes are UTF-8 bytes, as on the wire. A frame over 4x the limit that aiohttp let through
    (it checks a compressed frame only after inflating it, with ``>``) closes with 1009 here."""
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            data: str = message.data
            # A character is 1 to 4 bytes: the encode is needed only when the count could be over.
            size = len(data) if len(data) * 4 <= max_frame_bytes else len(data.encode())
            if size > close_limit(max_frame_bytes):
                await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG)  # no reason, like aiohttp's own 1009
                return
            if size > max_frame_bytes:
                yield FrameError("frame_too_large", f"frame of {size} bytes exceeds the limit of {max_frame_bytes} bytes (UTF-8)")
                continue
            try:
                frame = orjson.loads(data)
            except ValueError as exc:
                yield FrameError("bad_json", f"frame is not valid JSON: {exc}")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                yield FrameError("bad_frame", 'a frame must be a JSON object with a string "type"')
                continue
            yield frame
        elif message.type is WSMsgType.BINARY:
            yield FrameError("bad_frame", "binary frames are not supported; send JSON text frames")
        elif message.type is WSMsgType.ERROR:
            error = ws.exception()
            # A client that vanished mid-write ("Cannot write to closing transport") is not news.
            if not isinstance(error, ConnectionError):
                log.info("websocket error", extra={"error": str(error)})
            return


# A frame goes straight out only up to this size: written into an empty send buffer it stays
# below the transport's high-water mark (64 KiB), so the write can never wait on the client.
DIRECT_MAX_BYTES = 16 * 1024

DEFAULT_SEND_BUFFER_BYTES = 1024 * 1024
# Seconds a close frame may take to reach a client; after that the socket is aborted (a client
# that stopped reading never takes it, and a close that waits for it would hold the socket).
CLOSE_TIMEOUT = 2.0

SEND_BUFFER_BYTES = web.AppKey("send_buffer_bytes", int)
SENDER_TASKS = web.AppKey("sender_tasks", TaskSet)


# Transient frames that only say the latest state: dropped for a busy client, never queued.
SUPERSEDED = frozenset({"typing"})


class FrameSender:
    """The outbound side of one socket. What it holds for a client that does not read is bounded
    in bytes (``max_bytes``: its queue plus the socket's send buffer, and at most one frame
    more); beyond that the client is closed with 1013, and aborted if even the close cannot be
    written within CLOSE_TIMEOUT, so its handler ends and everything it held is freed."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None,
                 max_bytes: int = DEFAULT_SEND_BUFFER_BYTES, tasks: TaskSet | None = None) -> None:
        self.ws = ws
        # The socket's transport (request.transport): its send buffer says whether a frame can
        # be written at once. None: every frame queues.
        self._transport = transport
        self._max_bytes = max_bytes
        self._tasks = tasks if tasks is not None else TaskSet()
        self._queue: collections.deque[bytes | None] = collections.deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()  # something is in the queue for the writer task
        self._room = asyncio.Event()
        self._room.set()
        self._overflowed = False
        self._closing = False
        self._writing = False  # the writer task holds a frame it is sending
        self._task: asyncio.Task[None] | None = None  # started when the first frame queues

    @classmethod
    def for_request(cls, ws: web.WebSocketResponse, request: web.Request) -> "FrameSender":
        """The sender for a socket prepared for ``request``, with the app's limit and tasks."""
        app = request.app
        return cls(ws, request.transport, app.get(SEND_BUFFER_BYTES, DEFAULT_SEND_BUFFER_BYTES),
                   app.get(SENDER_TASKS))

    @property
    def queued(self) -> int:
        """Frames waiting for the writer task (0 while the client keeps up)."""
        return sum(1 for data in self._queue if data is not None)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def write(self, frame: dict[str, Any]) -> None:
        """Send now when nothing is ahead of this frame and the socket takes it at once (it
        never waits then); else queue it like :meth:`send`."""
        data = orjson.dumps(frame)
        transport = self._transport
        if (transport is None or len(data) > DIRECT_MAX_BYTES or self._writing or self._queue
                or self._overflowed or self.ws.closed
                or transport.get_write_buffer_size()):  # type: ignore[attr-defined]
            self._enqueue(data)
            return
        with contextlib.suppress(ConnectionError, RuntimeError):  # gone: its handler cleans up
            await self.ws.send_frame(data, WSMsgType.TEXT)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame without waiting (the live fan-out must never wait on one client)."""
        self._enqueue(orjson.dumps(frame))

    def notify(self, frame: dict[str, Any]) -> None:
        """Transient news (not a conversation event): queued like :meth:`send`, except a hint the
        next of its kind supersedes (``typing``), which goes only to an idle client."""
        if frame["type"] in SUPERSEDED:
            self.send_if_idle(frame)
        else:
            self.send(frame)

    def send_if_idle(self, frame: dict[str, Any]) -> None:
        """Send a frame that the next of its kind supersedes (typing) only when nothing waits
        ahead of it and the socket's buffer is empty; else drop it. A flood of them then costs a
        busy client nothing, and never delays the frames that matter."""
        busy = (self._writing or bool(self._queue)
                or (self._transport is not None and self._transport.get_write_buffer_size()))  # type: ignore[attr-defined]
        if not busy:
            self._enqueue(orjson.dumps(frame))

    def _buffered(self) -> int:
        transport = self._transport
        in_socket = transport.get_write_buffer_size() if transport is not None else 0  # type: ignore[attr-defined]
        return self._queued_bytes + in_socket

    def _enqueue(self, data: bytes) -> None:
        if self.ws.closed or self._overflowed or self._closing:
            return
        # At least one frame is always taken, so a frame larger than the limit still goes out.
        if (self._queue or self._writing) and self._buffered() + len(data) > self._max_bytes:
            self._overflow()
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._ready.set()
        if self._task is None:
            self._task = asyncio.create_task(self._write())
        if self._queued_bytes >= self._max_bytes // 2:
            self._room.clear()

    def _overflow(self) -> None:
        self._overflowed = True
        log.warning("client too slow; disconnecting so it resumes later",
                    extra={"buffered_bytes": self._buffered(), "limit_bytes": self._max_bytes})
        self._drop_queue()
        self.close_soon(WSCloseCode.TRY_AGAIN_LATER, "too slow; reconnect and resume")

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        self._room.set()
        # A writer in the middle of a frame is left to finish or fail: cancelling it would also
        # cancel the transport's drain waiter, which the close frame then waits on.
        if self._task is not None and not self._writing:
            self._task.cancel()
        self._task = None

    async def room(self) -> None:
        """Wait until the queue is at most half full: a replay of a long backlog paces itself
        on this instead of overflowing."""
        while not self._room.is_set() and not self.ws.closed and not (self._task and self._task.done()):
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel (3.11)
                async with asyncio.timeout(1.0):
                    await self._room.wait()

    def close_soon(self, code: int, message: str) -> None:
        """Close in a task of its own (kept, so a failure is logged and shutdown waits for it)."""
        self._tasks.spawn(self.close(code, message), name=f"close:{code}")

    async def close(self, code: int = WSCloseCode.OK, message: str = "") -> None:
        """Flush queued frames (for up to 5 s), then close the socket; a client that does not
        take the close within CLOSE_TIMEOUT is aborted."""
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            self._queue.append(None)
            self._ready.set()
            await asyncio.wait([task], timeout=5)
        self._drop_queue()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), CLOSE_TIMEOUT)
        # A closed transport still holds the socket until its send buffer is written; a client
        # that does not read would keep it (and its file descriptor) open for good.
        transport = self._transport
        while transport is not None and transport.get_write_buffer_size():  # type: ignore[attr-defined]
            if loop.time() >= deadline:
                transport.abort()  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """The socket is gone: nothing more can be written."""
        self._closing = True
        self._drop_queue()

    async def _write(self) -> None:
        while self._task is asyncio.current_task():  # a dropped queue ends its writer
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            data = self._queue.popleft()
            if data is None:
                return
            self._queued_bytes -= len(data)
            if self._queued_bytes <= self._max_bytes // 4:
                self._room.set()
            self._writing = True
            try:
                await self.ws.send_frame(data, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                return
            finally:
                self._writing = False


async def close_all(app: web.Application) -> None:
    """on_shutdown: tell every client we are going away (1001) so it reconnects elsewhere."""
    for ws in list(app[OPEN_WEBSOCKETS]):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"), CLOSE_TIMEOUT)
    if SENDER_TASKS in app:
        await app[SENDER_TASKS].close(timeout=CLOSE_TIMEOUT + 1)
