"""Connections that never finish a request, against the real gateway process at a lowered file
limit (256): more idle TCP connections than the limit allows, some stopped in the middle of
their headers, neither lock out health checks and agents (the reserve) nor stay open past
``server.header_timeout``; customers get in again after that, and the log names what was
turned away."""

from __future__ import annotations

import asyncio
import resource
import urllib.request
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio
import websockets

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, gateway_config

FILE_LIMIT = 256
IDLE = 300  # more than the gateway has file descriptors
HEADER_TIMEOUT = 2.0


def low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(f"sqlite:///{tmp_path / 'gateway.db'}")
    config["server"]["header_timeout"] = HEADER_TIMEOUT
    process = await GatewayProcess.write_config(tmp_path, config).start(preexec_fn=low_file_limit)
    yield process
    await process.stop()


async def get(gateway: GatewayProcess, path: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(gateway.http + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    return await asyncio.to_thread(fetch)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_idle_connections_cannot_lock_out_health_checks_agents_or_customers(gateway: GatewayProcess) -> None:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for n in range(IDLE):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        if n % 2:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Half: ")  # headers never end
        idle.append((reader, writer))
    await asyncio.sleep(0.2)  # let the gateway take them all in

    # At its cap, with idle connections open: health checks, metrics and agents still get in.
    assert await get(gateway, "/healthz") == (200, '{"status": "alive"}')
    status, metrics = await get(gateway, "/metrics")
    assert status == 200
    assert metric(metrics, "contactgate_connections_refused_total{reason=\"shed\"}") > 0
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    # A customer arriving now lands on the reserve: told to come back, not left hanging.
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(gateway.url("/webchat/ws"))
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"]

    # Every idle connection is closed: shed at the cap, or timed out after header_timeout.
    for reader, writer in idle:
        try:
            assert await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 10) == b""
        except ConnectionResetError:
            pass  # shed: aborted
        writer.close()
    await asyncio.sleep(0.2)
    customer = await Customer.connect(gateway)
    await customer.event("message", author="bot")
    await customer.close()
    await alice.close()

    refusals = [r for r in gateway.logs if r.get("msg") == "connections refused"]
    assert refusals and refusals[0]["shed"] > 0 and refusals[0]["max_connections"] == FILE_LIMIT - 192
    assert len(refusals) < 5, "the refusal line is rate-limited"
    assert "Traceback" not in gateway.log_text()
