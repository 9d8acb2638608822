"""``GET /board/ws``: the supervisor board's server push (JSON text frames, docs/pages.md).

The client's first frame is ``{"type": "auth", "token": <server.admin_token>}`` (never in the
URL). Then the gateway sends ``history`` (the charts' last hours) and ``figures`` (the whole
snapshot of gateway/board/figures.py), and from then on a new ``figures`` whenever something
changed (checked once a second and on every conversation event: at most one a second) and
every ``board.tick`` seconds anyway (waits grow without events), plus a ``sample`` at the start
of every minute. The socket checks ``Origin`` like ``/agent/ws``.

The figures are this process's, like ``/api/queues`` (one gateway process per store is what the
gateway supports today, docs/architecture.md); the samples are shared through the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSCloseCode, web

from ..agent_auth import is_admin_token
from ..model import Conversation, Event
from ..origins import OriginPolicy
from ..pipeline import Pipeline
from ..store import StoreError
from ..tasks import TaskSet
from ..websocket import (CLOSE_AUTH_TIMEOUT, CLOSE_UNAUTHORIZED, FrameError, FrameSender,
                         frames, prepare)
from .figures import StatusClock, board_snapshot, shape
from .history import QueueHistory, point

log = logging.getLogger("contactgate.board")

CLOSE_ADMIN_DISABLED = 4403  # no server.admin_token: the admin API, and so the board, is off
CHECK_EVERY = 1.0            # seconds: the board looks for changes this often, and pushes at most this often


class BoardFeed:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.statuses = StatusClock(pipeline.clock())
        self.history = QueueHistory(pipeline)
        self.origins = OriginPolicy(pipeline.config.server.allowed_origins)  # read at start, like /agent/ws
        self.boards: set[FrameSender] = set()
        self._changed = asyncio.Event()
        self._tasks = TaskSet()
        self._last_shape: Any = None
        self._last_push = 0.0
        pipeline.subscribe(self._on_event)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/board/ws", self.handle)]

    # figures -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return board_snapshot(self.pipeline, self.pipeline.clock(), self.statuses)

    async def recent(self) -> dict[str, list[list[Any]]]:
        return await self.history.recent(self.pipeline.clock())

    async def _on_event(self, conversation: Conversation, event: Event) -> None:
        self._changed.set()

    # the loop: samples every minute, pushes when something changed or the tick is due ---------
    async def start(self) -> None:
        self._tasks.spawn(self._run(), name="board")

    async def stop(self) -> None:
        await self._tasks.close(timeout=0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.check(loop.time())
            except Exception:
                log.exception("board check failed")
            try:
                async with asyncio.timeout(CHECK_EVERY):
                    await self._changed.wait()
            except TimeoutError:
                pass
            # At most one push a second: a burst of events is one update.
            await asyncio.sleep(max(0.0, self._last_push + CHECK_EVERY - loop.time()))

    async def check(self, clock: float) -> None:
        """One round: the minute's sample when due, then figures to the boards when they changed
        or ``board.tick`` seconds passed since the last push."""
        self._changed.clear()
        now = self.pipeline.clock()
        if self.history.due(now):
            samples = await self.history.sample(now)
            if samples and self.boards:
                self._send_all({"type": "sample", "queues": {s.queue: point(s) for s in samples}})
        if not self.boards:
            # Nobody watches: only keep the time in state true for the next board (cheap).
            self.statuses.observe(self.pipeline.dispatcher.agents.values(), now)
            return
        snapshot = board_snapshot(self.pipeline, now, self.statuses)
        current = shape(snapshot)
        if current != self._last_shape or clock - self._last_push >= self.pipeline.config.board.tick:
            self._last_shape, self._last_push = current, clock
            self._send_all({"type": "figures", **snapshot})

    def _send_all(self, frame: dict[str, Any]) -> None:
        for board in list(self.boards):
            board.send(frame)

    # one board socket ----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.origins.check(request)  # 403 before the upgrade: no cross-site socket with the admin's browser
        server = self.pipeline.config.server
        ws = await prepare(request, server.max_frame_bytes)
        sender = FrameSender.for_request(ws, request)
        address = self.pipeline.limits.client_address(request)
        token = server.admin_token
        if token is None or not token.get_secret_value():
            sender.send(FrameError("admin_disabled", "set server.admin_token (e.g. from ${CONTACTGATE_ADMIN_TOKEN}) "
                                   "to use the admin API and the board").frame())
            await sender.close(CLOSE_ADMIN_DISABLED, "admin API is off")
            sender.stop()
            return ws
        signed_in = False
        timer = asyncio.get_running_loop().call_later(
            server.auth_timeout, lambda: signed_in or sender.close_soon(CLOSE_AUTH_TIMEOUT, "auth timeout"))
        try:
            async for frame in frames(ws, server.max_frame_bytes):
                if isinstance(frame, FrameError):
                    sender.send(frame.frame())
                    continue
                if signed_in:
                    sender.send(FrameError("unknown_type", "the board sends nothing after auth; "
                                           f"got {frame['type']!r}").frame())
                    continue
                timer.cancel()
                if not await self._auth(sender, frame, address):
                    break
                signed_in = True
        finally:
            timer.cancel()
            self.boards.discard(sender)
            sender.stop()
        return ws

    async def _auth(self, sender: FrameSender, frame: dict[str, Any], address: str) -> bool:
        if frame["type"] != "auth":
            await sender.close(CLOSE_UNAUTHORIZED, "auth required")
            return False
        limits = self.pipeline.limits
        if await limits.close_if_locked_out("admin", address, sender):
            return False
        if not is_admin_token(self.pipeline.config.server.admin_token, frame.get("token")):
            await limits.auth_failed("admin", address)  # logs the address, answers late
            await sender.close(CLOSE_UNAUTHORIZED, "invalid token")
            return False
        limits.auth_succeeded("admin", address)
        try:
            history = await self.recent()
        except StoreError as exc:
            log.error("board history unavailable", extra={"error": str(exc)})
            sender.send(FrameError("unavailable", "storage is unavailable; reconnect in a moment").frame())
            await sender.close(WSCloseCode.TRY_AGAIN_LATER, "storage unavailable; reconnect")
            return False
        sender.send({"type": "history", "hours": self.pipeline.config.board.history_hours, "queues": history})
        sender.send({"type": "figures", **self.snapshot()})
        self.boards.add(sender)
        return True
