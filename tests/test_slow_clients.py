"""A customer that stops reading, against the real gateway process: once it is further behind
than ``server.max_send_buffer_bytes`` it is closed (1013, or aborted when even the close cannot
be written), its file descriptor is given back, and what it held is freed: five such customers
coming and going leave the gateway's memory near where it started."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator

import pytest_asyncio
from websockets.frames import Close, Opcode

from tests.support import ALICE_TOKEN, Agent, GatewayProcess, gateway_config
from tests.test_frame_sender import SlowReader

AGENT_TEXT = "x" * 60000  # near max_frame_bytes: the gateway pushes 60 KB frames to the customer
PUSHED = 120              # ~7 MB per customer: far beyond the send buffer and the kernel's buffers
CLIENTS = 5


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(f"sqlite:///{tmp_path / 'gateway.db'}")
    config["server"].update(max_frame_bytes=65536, max_send_buffer_bytes=256 * 1024)
    process = await GatewayProcess.write_config(tmp_path, config).start()
    yield process
    await process.stop()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class SlowCustomer(SlowReader):
    async def send(self, **frame: Any) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        await self._flush()

    async def until(self, type_: str) -> dict[str, Any]:
        while True:
            frame = json.loads((await asyncio.wait_for(self.recv(), 10)).data)
            if frame["type"] == type_:
                return frame


async def until(agent: Agent, type_: str) -> dict[str, Any]:
    while (frame := await agent.recv())["type"] != type_:
        pass
    return frame


async def wait_for(check: Any, what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_customers_that_stop_reading_are_closed_and_freed(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    pid = gateway.proc.pid
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    fds = open_fds(pid)
    baseline = rss_mb(pid)
    for n in range(CLIENTS):
        customer = SlowCustomer(gateway.url("/webchat/ws"))
        await customer.connect()
        await customer.send(type="hello", token=None, last_seq=0)
        await customer.until("welcome")
        await customer.send(type="message", id="handoff", text="agent please")
        offer = await until(alice, "offer")
        conversation_id = offer["conversation"]["id"]
        await alice.send(type="accept", conversation_id=conversation_id)
        await customer.until("assigned")
        # The customer stops reading; the agent keeps writing (each message is stored and acked:
        # nobody waits on the customer).
        for i in range(PUSHED):
            await alice.send(type="message", conversation_id=conversation_id, id=f"a{n}-{i}", text=AGENT_TEXT)
            await until(alice, "ack")
        await wait_for(lambda: open_fds(pid) <= fds, f"customer {n}: its socket is still open in the gateway")
        # What it gets now is a prefix of the conversation and then the close (1013), or a reset
        # when the close could not be written in time.
        try:
            while (frame := await asyncio.wait_for(customer.recv(), 10)).opcode is Opcode.TEXT:
                pass
            assert Close.parse(frame.data).code == 1013
        except ConnectionError:
            pass
        customer.sock.close()
        await alice.send(type="close", conversation_id=conversation_id)
        await until(alice, "closed")
    assert "Traceback" not in gateway.log_text()
    assert sum(r.get("msg") == "client too slow; disconnecting so it resumes later" for r in gateway.logs) == CLIENTS
    # A leak check, not a timing one: each such customer used to leave ~120 MB behind.
    assert rss_mb(pid) < baseline + 40, f"RSS {rss_mb(pid):.0f} MB after {CLIENTS} slow customers, baseline {baseline:.0f} MB"
    await alice.close()
