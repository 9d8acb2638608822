"""What the console and the widget need of the sockets: the transfer directory, read state and
the satisfaction question (docs/protocol.md), through a real gateway process, real websocket
clients and the admin API. One gateway serves the module; each test has its own agents and
queue, so tests never see each other's conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from tests.support import Agent, Customer, GatewayProcess, gateway_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRAME = 8.0
ADMIN = "reads-admin-token"


def token(agent_id: str) -> str:
    return f"{agent_id}-reads-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("reads")
    queues = [{"name": "general", "description": "Everything else"}, {"name": "q_read"}, {"name": "q_dir"},
              {"name": "q_sat"}, {"name": "q_file"}]
    agents = [{"id": i, "name": name, "token": token(i), "capacity": 2, "queues": qs}
              for i, name, qs in (("ra", "Rita", ["q_read"]), ("da", "Dana", ["q_dir"]),
                                  ("db", "Ben", ["q_dir"]), ("dc", "Cleo", ["q_dir", "general"]),
                                  ("sa", "Sam", ["q_sat"]), ("fa", "Fay", ["q_file"]))]
    rules = [{"name": q, "when": {"keywords": [f"<{q}>"]}, "queue": q} for q in ("q_read", "q_dir", "q_sat", "q_file")]
    config = gateway_config(f"sqlite:///{directory / 'gateway.db'}", queues=queues, agents=agents,
                            routing={"rules": rules, "default_queue": "general"},
                            desk={"satisfaction": {"enabled": True}},
                            attachments={"max_bytes": 4096, "max_message_bytes": 8192})
    config["server"]["admin_token"] = ADMIN
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
                                   {"name": "q_read", "description": None}, {"name": "q_dir", "description": None},
                                   {"name": "q_sat", "description": None}, {"name": "q_file", "description": None}]
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


async def customer_with(gateway: GatewayProcess, desk: Agent, queue: str,
                        text: str = "I need an agent please") -> Customer:
    customer = await Customer.connect(gateway, name="Lin")
    await customer.send(type="message", id="h", text=f"{text} <{queue}>")
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


async def closed_by(desk: Agent, customer: Customer) -> dict[str, Any]:
    """The agent closes; the customer's next frames are the close and then the question."""
    await desk.send(type="close", conversation_id=customer.conversation_id)
    await desk.next("closed", timeout=FRAME)
    await customer.next("closed", timeout=FRAME)
    return await customer.next("message", author="bot", timeout=FRAME)


async def test_the_satisfaction_question_is_asked_on_an_agents_close_and_answered_once(
        gateway: GatewayProcess) -> None:
    sam = await agent(gateway, "sa")
    customer = await customer_with(gateway, sam, "q_sat")
    cid = customer.conversation_id
    try:
        question = await closed_by(sam, customer)
        assert question["text"] == "How would you rate this conversation? (1 = poor, 5 = excellent)"
        assert question["choices"] == [{"text": str(n), "value": f"satisfaction:{n}"} for n in range(1, 6)]
        assert question["satisfaction"] == {"scale": [1, 5], "lang": "en"}

        for bad in ({"score": 0}, {"score": 6}, {"score": "5"}, {"score": True}, {}, {"score": 3, "comment": 7}):
            await customer.send(type="satisfaction", **bad)
            frame = await customer.next("error", timeout=FRAME)
            assert frame["code"] == "bad_satisfaction", (bad, frame)
        await customer.send(type="satisfaction", score=4, comment="  Quick and kind  ")
        answer = await customer.next("satisfaction", timeout=FRAME)
        assert answer["score"] == 4 and answer["comment"] == "Quick and kind" and answer["seq"] > question["seq"]
        thanks = await customer.next("message", author="bot", timeout=FRAME)
        assert thanks["text"] == "Thank you for your feedback!"
        await customer.send(type="satisfaction", score=1)
        assert (await customer.next("error", timeout=FRAME))["code"] == "already_answered"

        # A reload replays the question and the answer (the widget shows the rating as given).
        again = await Customer.connect(gateway, token=customer.token, last_seq=question["seq"] - 1)
        replay = [await again.recv(FRAME) for _ in range(3)]
        assert [f["type"] for f in replay] == ["message", "satisfaction", "message"], replay
        await again.close()

        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(gateway.http + f"/api/conversations/{cid}") as response:
                events = (await response.json())["events"]
            async with http.get(gateway.http + "/api/queues") as response:
                queues = {q["queue"]: q for q in (await response.json())["queues"]}
            async with http.get(gateway.http + "/metrics") as response:
                metrics = await response.text()
        rated = [e for e in events if e["kind"] == "satisfaction"]
        assert len(rated) == 1 and rated[0]["data"]["score"] == 4 and rated[0]["data"]["agent_id"] == "sa"
        assert rated[0]["data"]["queue"] == "q_sat" and rated[0]["text"] == "Quick and kind"
        assert queues["q_sat"]["satisfaction"] == {"answers": 1, "average": 4.0}
        assert queues["q_read"]["satisfaction"] == {"answers": 0, "average": None}
        assert 'contactgate_queue_satisfaction_average{queue="q_sat"} 4.0' in metrics
        assert 'contactgate_queue_satisfaction_answers{queue="q_sat"} 1.0' in metrics
    finally:
        await customer.close()
        await sam.close()


async def test_a_chinese_chat_is_asked_in_chinese_and_a_customers_own_close_asks_nothing(
        gateway: GatewayProcess) -> None:
    sam = await agent(gateway, "sa")
    customer = await customer_with(gateway, sam, "q_sat", text="我要人工客服")
    try:
        question = await closed_by(sam, customer)
        assert question["text"].startswith("您对本次服务满意吗") and question["satisfaction"]["lang"] == "zh"
        await customer.send(type="satisfaction", score=5)
        await customer.next("satisfaction", timeout=FRAME, score=5)
        assert (await customer.next("message", author="bot", timeout=FRAME))["text"] == "感谢您的反馈!"
        await customer.close()

        customer = await customer_with(gateway, sam, "q_sat")
        await customer.send(type="close")
        await customer.next("closed", timeout=FRAME)
        await customer.send(type="satisfaction", score=2)
        assert (await customer.next("error", timeout=FRAME))["code"] == "not_asked"
    finally:
        await customer.close()
        await sam.close()


async def test_a_customer_sends_a_file_over_http_as_a_message_of_its_own(gateway: GatewayProcess) -> None:
    fay = await agent(gateway, "fa")
    customer = await customer_with(gateway, fay, "q_file")
    cid = customer.conversation_id
    url = gateway.http + "/webchat/attachments"
    bearer = {"Authorization": f"Bearer {customer.token}", "Content-Type": "image/png"}
    photo = b"\x89PNG\r\n" + bytes(range(256)) * 4
    try:
        async with aiohttp.ClientSession() as http:
            params = {"conversation_id": cid, "id": "f1", "name": "../parcel.png"}
            async with http.post(url, params=params, data=photo, headers=bearer) as response:
                assert response.status == 201, await response.text()
                sent = await response.json()
            assert sent["id"] == "f1" and [a["name"] for a in sent["attachments"]] == ["parcel.png"]
            shown = await customer.next("message", author="customer", timeout=FRAME)
            assert shown["id"] == "f1" and shown["seq"] == sent["seq"] and shown["attachments"] == sent["attachments"]
            got = await fay.next("message", author="customer", timeout=FRAME)
            assert got["attachments"] == sent["attachments"] and got["text"] == ""
            async with http.get(f"{url}/{sent['attachments'][0]['id']}",
                                headers={"Authorization": f"Bearer {customer.token}"}) as response:
                assert response.status == 200 and await response.read() == photo

            # The same id again (a retry after a lost answer): stored once, the first message answered.
            async with http.post(url, params=params, data=photo, headers=bearer) as response:
                assert response.status == 200 and (await response.json())["seq"] == sent["seq"]

            # Refusals name their reason and store nothing.
            async def refused(status: int, code: str, **request: Any) -> None:
                async with http.post(url, **{"params": {**params, "id": "f2"}, "data": b"x", "headers": bearer,
                                             **request}) as response:
                    assert response.status == status, await response.text()
                    assert (await response.json())["error"] == code

            await refused(413, "attachment_too_large", data=b"x" * 5000)
            await refused(401, "unauthorized", headers={})
            await refused(401, "unauthorized", headers={"Authorization": "Bearer nope"})
            await refused(400, "bad_attachment", params={"conversation_id": cid, "id": "f3"})
            await refused(404, "unknown_conversation", params={"conversation_id": "elsewhere", "id": "f4", "name": "a"})
            await refused(400, "bad_attachment", data=b"")
        await fay.expect_nothing(0.3)
    finally:
        await customer.close()
        await fay.close()
