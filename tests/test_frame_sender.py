"""gateway.websocket.FrameSender against a real aiohttp server and a real websockets client:
frames go straight out while the client keeps up, queue (in order) when it does not, and a
client too far behind is closed with 1013 instead of making anyone wait."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import AsyncIterator
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from gateway.websocket import DIRECT_MAX_BYTES, FrameSender
from tests.support import serving

SMALL = "x" * 12000  # under DIRECT_MAX_BYTES: may go straight out; a thousand fill any buffer
BIG = "x" * 65536    # over it: always queued


class SlowReader:
    """A websockets client (its sans-I/O protocol) on a plain socket with a small receive
    buffer, which reads only when the test asks: until then the server's side fills up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.setblocking(False)
        self._frames: list[Frame] = []

    async def __aenter__(self) -> "SlowReader":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.sock.close()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", urlsplit(self.url).port))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while self.protocol.state is State.CONNECTING:
            await self._read()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    async def recv(self) -> Frame:
        """The next data or close frame (the close is answered, as the protocol requires)."""
        while not self._frames:
            await self._read()
        return self._frames.pop(0)

    async def _read(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 262144)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._frames += [e for e in self.protocol.events_received()
                         if isinstance(e, Frame) and e.opcode in (Opcode.TEXT, Opcode.CLOSE)]
        await self._flush()
        if not data and not self._frames:
            raise ConnectionError("closed without a close frame")

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await asyncio.get_running_loop().sock_sendall(self.sock, data)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, asyncio.Queue[FrameSender], dict[str, int]]]:
    senders: asyncio.Queue[FrameSender] = asyncio.Queue()
    settings = {"max_bytes": 64 * 1024 * 1024}

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sender = FrameSender(ws, request.transport, max_bytes=settings["max_bytes"])
        senders.put_nowait(sender)
        async for _ in ws:
            pass
        sender.stop()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    async with serving(app) as port:
        yield f"ws://127.0.0.1:{port}/ws", senders, settings


async def test_a_client_that_stops_reading_gets_every_frame_in_order_later(server) -> None:  # type: ignore[no-untyped-def]
    url, senders, _ = server
    async with SlowReader(url) as client:
        sender = await senders.get()
        assert len(SMALL) < DIRECT_MAX_BYTES < len(BIG)
        await asyncio.wait_for(sender.write({"type": "n", "i": 0, "pad": SMALL}), 1)
        assert sender.queued == 0  # nothing ahead and an empty send buffer: straight out
        for i in range(1, 1000):
            # Never waits on the client: straight out at first, queued once its buffers are full.
            await asyncio.wait_for(sender.write({"type": "n", "i": i, "pad": SMALL}), 1)
        assert sender.queued > 0, "the socket's buffers should be full and frames queued"
        sender.send({"type": "n", "i": 1000})  # the plain queueing path keeps the same order
        got = [json.loads((await asyncio.wait_for(client.recv(), 10)).data)["i"] for _ in range(1001)]
        assert got == list(range(1001))
        # Caught up: a small frame goes straight out again, a big one always queues.
        await asyncio.wait_for(sender.write({"type": "n", "i": 1001}), 1)
        assert sender.queued == 0
        await sender.write({"type": "n", "i": 1002, "pad": BIG})  # queued: returns without a turn of the loop
        assert sender.queued == 1
        assert [json.loads((await asyncio.wait_for(client.recv(), 10)).data)["i"] for _ in range(2)] == [1001, 1002]


async def test_a_client_too_far_behind_is_closed_with_1013(server) -> None:  # type: ignore[no-untyped-def]
    url, senders, settings = server
    settings["max_bytes"] = 10 * 65536
    async with SlowReader(url) as client:
        sender = await senders.get()
        for i in range(300):
            await asyncio.wait_for(sender.write({"type": "n", "i": i, "pad": BIG}), 1)
        received = []
        while (frame := await asyncio.wait_for(client.recv(), 20)).opcode is Opcode.TEXT:
            received.append(json.loads(frame.data)["i"])
        assert Close.parse(frame.data).code == 1013
        # What did arrive is a gapless prefix; the client resumes from its last seq.
        assert received == list(range(len(received))) and len(received) < 300
