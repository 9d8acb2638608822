"""The transfer directory and read state on the sockets (docs/protocol.md, "Transfer" and "Read
state"), through a real gateway process and real websocket clients. One gateway serves the
module; each test has its own agents, so tests never see each other's conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from tests.support import Agent, Customer, GatewayProcess, gateway_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRAME = 8.0


def token(agent_id: str) -> str:
    return f"{agent_id}-reads-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("reads")
    queues = [{"name": "general", "description": "Everything else"}, {"name": "q_read"}, {"name": "q_dir"}]
    agents = [{"id": i, "name": name, "token": token(i), "capacity": 2, "queues": qs}
              for i, name, qs in (("ra", "Rita", ["q_read"]), ("da", "Dana", ["q_dir"]),
                                  ("db", "Ben", ["q_dir"]), ("dc", "Cleo", ["q_dir", "general"]))]
    rules = [{"name": q, "when": {"keywords": [f"<{q}>"]}, "queue": q} for q in ("q_read", "q_dir")]
    config = gateway_config(f"sqlite:///{directory / 'gateway.db'}", queues=queues, agents=agents,
                            routing={"rules": rules, "default_queue": "general"})
    process = await GatewayProcess.write_config(directory, config).start()
    yield process
    await process.stop()


async def agent(gateway: GatewayProcess, agent_id: str, **auth: Any) -> Agent:
    desk = await Agent.connect(gateway, token(agent_id), **auth)
    await desk.expect("ready", timeout=FRAME)
    return desk


async def directory(desk: Agent) -> dict[str, Any]:
    await desk.send(type="directory")
    return await desk.next("directory", timeout=FRAME)


async def test_the_directory_lists_queues_and_the_other_agents_with_presence(gateway: GatewayProcess) -> None:
    dana, ben = await agent(gateway, "da"), await agent(gateway, "db", status="away")
    try:
        frame = await directory(dana)
        assert frame["queues"] == [{"name": "general", "description": "Everything else"},
                                   {"name": "q_read", "description": None}, {"name": "q_dir", "description": None}]
        by_id = {a["id"]: a for a in frame["agents"]}
        assert "da" not in by_id  # not herself
        assert [a["name"] for a in frame["agents"]] == sorted(a["name"] for a in frame["agents"])
        assert by_id["db"] == {"id": "db", "name": "Ben", "status": "away", "queues": ["q_dir"]}
        assert by_id["dc"]["status"] == "offline" and by_id["ra"]["status"] == "offline"

        # Ben comes back: the next directory says so (it is asked for, never pushed).
        await ben.send(type="presence", status="available")
        await ben.next("presence", timeout=FRAME)
        by_id = {a["id"]: a for a in (await directory(dana))["agents"]}
        assert by_id["db"]["status"] == "available"
        await ben.close()
    finally:
        await dana.close()


async def customer_with(gateway: GatewayProcess, desk: Agent, queue: str) -> Customer:
    customer = await Customer.connect(gateway, name="Lin")
    await customer.send(type="message", id="h", text=f"I need an agent please <{queue}>")
    await customer.next("ack", id="h", timeout=FRAME)
    offer = await desk.next("offer", timeout=FRAME)
    await desk.send(type="accept", conversation_id=offer["conversation"]["id"])
    await desk.next("assigned", timeout=FRAME)
    await customer.next("assigned", timeout=FRAME)
    return customer


async def test_read_marks_reach_the_other_side_once_and_survive_a_resume(gateway: GatewayProcess) -> None:
    rita = await agent(gateway, "ra")
    customer = await customer_with(gateway, rita, "q_read")
    cid = customer.conversation_id
    try:
        await rita.send(type="message", conversation_id=cid, id="r1", text="Hello Lin")
        ack = await rita.next("ack", id="r1", timeout=FRAME)
        shown = await customer.next("message", author="agent", timeout=FRAME)
        assert shown["seq"] == ack["seq"]

        # The customer has shown Rita's message: Rita hears it, once; an older mark says nothing.
        await customer.send(type="read", seq=shown["seq"])
        assert await rita.next("read", timeout=FRAME) == {"type": "read", "seq": shown["seq"], "by": "customer",
                                                          "conversation_id": cid}
        await customer.send(type="read", seq=shown["seq"] - 1)
        await rita.expect_nothing(0.4)

        # Rita reads the customer's answer: the customer hears it.
        said = await customer.say("Thanks!", "c1")
        await rita.next("message", author="customer", timeout=FRAME)
        await rita.send(type="read", conversation_id=cid, seq=said["seq"])
        assert await customer.next("read", timeout=FRAME) == {"type": "read", "seq": said["seq"], "by": "agent"}

        # Bad marks are refused with a reason, and nothing moves.
        for bad in ({"seq": said["seq"] + 50}, {"seq": 0}, {"seq": "3"}, {}):
            await customer.send(type="read", **bad)
            frame = await customer.recv(FRAME)
            assert frame["type"] == "error" and frame["code"] == "bad_read", frame
        await rita.send(type="read", conversation_id="no-such-conversation", seq=1)
        frame = await rita.expect("error", timeout=FRAME)
        assert frame["code"] == "not_assigned", frame

        # A customer that comes back (a reload) gets Rita's mark after its replay ...
        await customer.close()
        again = await Customer.connect(gateway, token=customer.token, last_seq=said["seq"])
        assert again.conversation_id == cid
        assert await again.next("read", timeout=FRAME) == {"type": "read", "seq": said["seq"], "by": "agent"}
        # ... and so does Rita on a new socket that resumes.
        await rita.close()
        rita = await agent(gateway, "ra", resume={cid: said["seq"]})
        assert await rita.next("read", timeout=FRAME) == {"type": "read", "seq": shown["seq"], "by": "customer",
                                                          "conversation_id": cid}
        customer = again
    finally:
        await customer.close()
        await rita.close()
