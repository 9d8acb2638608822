"""Bad input gets a clear error, and nobody else's conversation notices."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest_asyncio
import websockets

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, gateway_config


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    process = await GatewayProcess.write_config(tmp_path, gateway_config(f"sqlite:///{tmp_path / 'g.db'}")).start()
    yield process
    await process.stop()


async def test_customer_errors_are_frames_and_the_socket_stays_usable(gateway: GatewayProcess) -> None:
    bystander = await Customer.connect(gateway)
    await bystander.event("message")

    raw = Customer(await websockets.connect(gateway.url("/webchat/ws")))
    await raw.send(type="message", id="m", text="hi")
    assert (await raw.expect("error"))["code"] == "hello_required"
    await raw.send_raw("this is not json")
    assert (await raw.expect("error"))["code"] == "bad_json"
    await raw.send_raw("[1, 2]")
    assert (await raw.expect("error"))["code"] == "bad_frame"
    await raw.send_raw(b"\x00\x01")
    assert (await raw.expect("error"))["code"] == "bad_frame"
    await raw.send(type="hello", token=42)
    assert (await raw.expect("error"))["code"] == "bad_hello"
    await raw.send(type="hello", token="no-such-token", last_seq=0)
    assert (await raw.expect("error"))["code"] == "invalid_token"

    await raw.hello()
    await raw.event("message")
    await raw.send(type="dance")
    error = await raw.expect("error", code="unknown_type")
    assert "dance" in error["message"]
    await raw.send(type="message", text="no id")
    assert (await raw.expect("error"))["code"] == "bad_message"
    # Valid-looking JSON whose text is not Unicode (a lone surrogate) is refused at the door,
    # not stored and then unsendable to the agent.
    await raw.send_raw('{"type": "message", "id": "s", "text": "\\ud800"}')
    assert (await raw.expect("error"))["code"] == "bad_json"
    await raw.send(type="message", id="e", text="   ")
    assert (await raw.expect("error"))["code"] == "bad_message"
    await raw.send(type="hello")
    assert (await raw.expect("error"))["code"] == "already_hello"
    # Over the 4096-byte limit of the test config: refused, and the socket lives on.
    await raw.send(type="message", id="big", text="x" * 5000)
    error = await raw.expect("error", code="frame_too_large")
    assert "4096" in error["message"]
    await raw.say("How long does delivery take?", "after-errors")
    assert "business days" in (await raw.event("message", author="bot"))["text"]

    # Far over the limit: the transport closes with 1009 (message too big).
    await raw.send(type="message", id="huge", text="x" * 40000)
    code, _ = await raw.closed()
    assert code == 1009

    # The bystander never noticed.
    await bystander.say("How much does shipping cost?", "b1")
    assert "Price Calculator" in (await bystander.event("message", author="bot"))["text"]
    await bystander.expect_nothing(0.2)


async def test_agent_errors(gateway: GatewayProcess) -> None:
    customer = await Customer.connect(gateway)
    await customer.event("message")

    wrong = await Agent.connect(gateway, "not-the-token")
    code, reason = await wrong.closed()
    assert (code, reason) == (4401, "invalid token")

    no_auth = Agent(await websockets.connect(gateway.url("/agent/ws")))
    await no_auth.send(type="presence", status="available")
    assert (await no_auth.closed())[0] == 4401

    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    for frame, code in [
        ({"type": "accept", "conversation_id": "nope"}, "no_offer"),
        ({"type": "message", "conversation_id": "nope", "id": "1", "text": "hi"}, "unknown_conversation"),
        ({"type": "message", "conversation_id": customer.conversation_id, "id": "1", "text": "hi"}, "not_assigned"),
        ({"type": "close", "conversation_id": "nope"}, "unknown_conversation"),
        ({"type": "accept"}, "bad_frame"),
        ({"type": "presence", "status": "sleeping"}, "bad_presence"),
        ({"type": "teleport", "conversation_id": "x"}, "unknown_type"),
    ]:
        await alice.send(**frame)
        error = await alice.expect("error")
        assert error["code"] == code, (frame, error)
    await alice.send_raw("{")
    assert (await alice.expect("error"))["code"] == "bad_json"

    # The customer's conversation carries on and reaches Alice.
    await customer.say("agent please", "h")
    await customer.event("message", author="bot")
    await customer.event("queued")
    offer = await alice.expect("offer")
    assert offer["conversation"]["id"] == customer.conversation_id


async def test_second_connection_replaces_the_first(gateway: GatewayProcess) -> None:
    first = await Agent.connect(gateway, ALICE_TOKEN)
    await first.expect("ready")
    second = await Agent.connect(gateway, ALICE_TOKEN)
    await second.expect("ready")
    assert (await first.closed())[0] == 4409
    customer = await Customer.connect(gateway)
    await customer.event("message")
    await customer.say("human", "h")
    await second.expect("offer")


def message_of_bytes(size: int, char: str = "🙂") -> str:
    """A message frame of exactly ``size`` UTF-8 bytes, its text mostly ``char``."""
    frame = '{"type": "message", "id": "sized", "text": "%s"}'
    overhead = len((frame % "").encode())
    width = len(char.encode())
    count, rest = divmod(size - overhead, width)
    text = char * count + "x" * rest
    data = frame % text
    assert len(data.encode()) == size
    return data


async def test_max_frame_bytes_counts_utf8_bytes_and_only_over_4x_closes(gateway: GatewayProcess) -> None:
    # Uncompressed, as many clients send: aiohttp then checks the frame's length on the wire.
    customer = Customer(await websockets.connect(gateway.url("/webchat/ws"), compression=None))
    await customer.hello()
    await customer.event("message")
    # Emoji: 1 character, 4 bytes. Under 4096 characters, over 4096 bytes: refused.
    over = message_of_bytes(4097)
    assert len(over) < 4096
    await customer.send_raw(over)
    error = await customer.expect("error", code="frame_too_large")
    assert "4097 bytes" in error["message"]
    # Exactly the limit: taken.
    await customer.send_raw(message_of_bytes(4096))
    await customer.event("ack", id="sized")
    await customer.event("message", author="bot")
    # Exactly 4x the limit: still only an error frame (the docs close only larger ones).
    await customer.send_raw(message_of_bytes(4 * 4096))
    await customer.expect("error", code="frame_too_large")
    await customer.say("How long does delivery take?", "after-4x")
    assert "business days" in (await customer.event("message", author="bot"))["text"]
    # One byte more: closed with 1009.
    await customer.send_raw(message_of_bytes(4 * 4096 + 1))
    assert (await customer.closed())[0] == 1009


async def test_compressed_frames_are_measured_inflated(gateway: GatewayProcess) -> None:
    # With permessage-deflate (the websockets default) the same limits hold for the inflated text.
    customer = Customer(await websockets.connect(gateway.url("/webchat/ws")))
    await customer.hello()
    await customer.event("message")
    await customer.send_raw(message_of_bytes(4 * 4096))
    await customer.expect("error", code="frame_too_large")
    await customer.send_raw(message_of_bytes(4 * 4096 + 1))
    assert (await customer.closed())[0] == 1009


async def test_resume_keys_with_control_characters_are_refused(gateway: GatewayProcess) -> None:
    agent = await Agent.connect(gateway, ALICE_TOKEN, resume={"conv\u0000": 0})
    assert (await agent.expect("error"))["code"] == "bad_auth"
    assert (await agent.closed())[0] == 4401
    agent = await Agent.connect(gateway, ALICE_TOKEN, resume={"no-such-conversation": 3})
    await agent.expect("ready")
