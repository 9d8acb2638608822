"""Clients that vanish at random moments (RST in the middle of a handshake, a frame or a write),
mixed with junk and valid frames, against the real gateway process: nothing is left behind in
the log as a traceback or a "Task exception was never retrieved", and the gateway keeps
answering."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import urllib.request
from pathlib import Path
from typing import AsyncIterator

import pytest_asyncio

from tests.support import ALICE_TOKEN, Customer, GatewayProcess, gateway_config

CLIENTS = 120
HANDSHAKE = ("GET {path} HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def masked(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame (masked, as RFC 6455 requires)."""
    mask = random.randbytes(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frames_for(path: str, rng: random.Random) -> list[bytes]:
    hello = {"type": "hello", "token": None} if path == "/webchat/ws" else {"type": "auth", "token": ALICE_TOKEN}
    choices = [
        json.dumps(hello).encode(),
        json.dumps({"type": "message", "id": f"m{rng.random()}", "text": "where is my parcel?"}).encode(),
        b"{not json", b"\xff\xfe", json.dumps({"type": "nope"}).encode(), b"[]",
        json.dumps({"type": "message", "id": "", "text": 3}).encode(),
    ]
    out = [masked(json.dumps(hello).encode())]
    for _ in range(rng.randint(0, 12)):
        out.append(masked(rng.choice(choices), opcode=rng.choice((1, 1, 1, 2))))
    return out


async def vanish(port: int, rng: random.Random) -> None:
    """Connect, say some things, and drop the connection with a reset at a random moment."""
    path = rng.choice(("/webchat/ws", "/webchat/ws", "/agent/ws", "/healthz"))
    data = HANDSHAKE.format(path=path).encode() + b"".join(frames_for(path, rng))
    cut = rng.randint(0, len(data))
    sock = socket.socket()
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, data[:cut])
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.2)  # let the gateway start writing to it
    except OSError:
        pass
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        sock.close()


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    process = await GatewayProcess.write_config(tmp_path, gateway_config(f"sqlite:///{tmp_path / 'g.db'}")).start()
    yield process
    await process.stop()


async def test_clients_that_vanish_mid_write_leave_no_traceback(gateway: GatewayProcess) -> None:
    rng = random.Random(8)
    for batch in range(CLIENTS // 20):
        await asyncio.gather(*(vanish(gateway.port, rng) for _ in range(20)))
    await asyncio.sleep(1.0)  # what the gateway does after they are gone
    with urllib.request.urlopen(gateway.http + "/healthz", timeout=10) as response:
        assert response.status == 200
    customer = await Customer.connect(gateway)
    await customer.event("message", author="bot")
    await customer.close()
    await gateway.stop()
    log = gateway.log_text()
    assert "Traceback" not in log and "never retrieved" not in log and "Cannot write to closing transport" not in log, log[-4000:]
