"""The baseline: a bare aiohttp websocket relay, the ceiling of our stack on this machine.

It speaks just enough of the gateway's protocol (docs/protocol.md) that the benchmark drives it
with the very same client code and frame shapes: customers at ``/webchat/ws`` (hello -> welcome,
message -> ack), agents at ``/agent/ws`` (auth -> ready, offer -> accept -> assigned, message ->
ack), and a customer's message reaches its agent (and back) through an in-process dict. There is
no storage, no routing beyond "the next free agent socket", no per-connection writer task and no
logging: whatever the gateway costs on top of this is the price of what it does.

Run: ``python -m bench.relay --port 0 --loop uvloop``; it writes one JSON line with
``"msg": "listening"`` and the ``port`` to stderr, serves ``/healthz``, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import signal
import sys
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

# The gateway's defaults (server.max_frame_bytes, heartbeat) so both sides do the same work per socket.
MAX_FRAME_BYTES = 64 * 1024
HEARTBEAT = 30.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False)


class Conversation:
    __slots__ = ("id", "customer", "agent", "seq")

    def __init__(self, customer: web.WebSocketResponse) -> None:
        self.id = uuid.uuid4().hex
        self.customer: web.WebSocketResponse | None = customer
        self.agent: web.WebSocketResponse | None = None
        self.seq = 0


class Relay:
    def __init__(self) -> None:
        self.conversations: dict[str, Conversation] = {}
        self.free_agents: deque[web.WebSocketResponse] = deque()   # one seat per agent socket
        self.waiting: deque[Conversation] = deque()                # customers who asked for an agent
        self.offered: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/webchat/ws", self.customer), web.get("/agent/ws", self.agent),
                web.get("/healthz", self.healthz)]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "server": "relay"})

    async def _match(self) -> None:
        while self.waiting and self.free_agents:
            conversation, agent = self.waiting.popleft(), self.free_agents.popleft()
            if conversation.customer is None or agent.closed:
                continue
            conversation.seq += 1
            self.offered.add(conversation.id)
            await agent.send_str(_dumps({"type": "offer", "conversation": {
                "id": conversation.id, "channel": "webchat", "queue": "general",
                "customer": {"id": conversation.id, "name": None, "tier": "standard"},
                "seq": conversation.seq, "transcript": []}}))

    async def customer(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES * 4, heartbeat=HEARTBEAT)
        await ws.prepare(request)
        conversation: Conversation | None = None
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                kind = frame.get("type")
                if kind == "hello" and conversation is None:
                    conversation = Conversation(ws)
                    self.conversations[conversation.id] = conversation
                    await ws.send_str(_dumps({"type": "welcome", "token": secrets.token_urlsafe(24),
                                              "conversation_id": conversation.id}))
                elif kind == "message" and conversation is not None:
                    conversation.seq += 1
                    seq = conversation.seq
                    await ws.send_str(_dumps({"type": "ack", "id": frame.get("id"), "seq": seq}))
                    if conversation.agent is not None:
                        await conversation.agent.send_str(_dumps({
                            "type": "message", "conversation_id": conversation.id, "seq": seq,
                            "author": "customer", "text": frame.get("text"), "at": _now()}))
                    elif conversation.id not in self.offered:
                        self.waiting.append(conversation)
                        await self._match()
                else:
                    await ws.send_str(_dumps({"type": "error", "code": "bad_frame", "message": "unexpected frame"}))
        finally:
            if conversation is not None:
                conversation.customer = None
                self.conversations.pop(conversation.id, None)
        return ws

    async def agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES * 4, heartbeat=HEARTBEAT)
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                kind = frame.get("type")
                conversation = self.conversations.get(frame.get("conversation_id") or "")
                if kind == "message" and conversation is not None and conversation.agent is ws:
                    conversation.seq += 1
                    seq = conversation.seq
                    await ws.send_str(_dumps({"type": "ack", "conversation_id": conversation.id,
                                              "id": frame.get("id"), "seq": seq}))
                    if conversation.customer is not None:
                        await conversation.customer.send_str(_dumps({
                            "type": "message", "seq": seq, "author": "agent", "text": frame.get("text"),
                            "at": _now()}))
                elif kind == "auth":
                    token = str(frame.get("token"))
                    await ws.send_str(_dumps({"type": "ready", "agent": {"id": token, "name": token},
                                              "conversations": []}))
                    self.free_agents.append(ws)
                    await self._match()
                elif kind == "accept" and conversation is not None:
                    conversation.agent = ws
                    self.offered.discard(conversation.id)
                    conversation.seq += 1
                    await ws.send_str(_dumps({"type": "assigned", "conversation_id": conversation.id,
                                              "seq": conversation.seq}))
                    if conversation.customer is not None:
                        await conversation.customer.send_str(_dumps({
                            "type": "assigned", "seq": conversation.seq, "agent": {"name": "agent"}}))
                else:
                    await ws.send_str(_dumps({"type": "error", "code": "bad_frame", "message": "unexpected frame"}))
        finally:
            if ws in self.free_agents:
                self.free_agents.remove(ws)
        return ws


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_routes(Relay().routes())
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"msg": "listening", "port": bound,
                      "loop": type(asyncio.get_running_loop()).__module__}), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def serve_main(prog: str, description: str, serve: Callable[[str, int], Awaitable[None]],
               argv: list[str] | None = None, *, port_required: bool = False) -> int:
    """The command line of a bare server (this relay, bench.smtp_baseline): ``--host``,
    ``--port`` and ``--loop asyncio|uvloop``; runs ``serve(host, port)`` until it returns."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=port_required, default=None if port_required else 0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port))
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve_main("python -m bench.relay", __doc__.split("\n\n")[0], serve, argv)


if __name__ == "__main__":
    sys.exit(main())
