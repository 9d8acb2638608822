"""Start-up, shutdown and restart: websockets are told we are going away, and nothing waiting
in a queue is forgotten across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.model import ConversationState
from gateway.store import open_store
from tests.support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config


async def test_sigterm_closes_websockets_with_1001_and_exits_cleanly(tmp_path: Path) -> None:
    gateway = await GatewayProcess.write_config(tmp_path, gateway_config(f"sqlite:///{tmp_path / 'g.db'}")).start()
    customer = await Customer.connect(gateway)
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    await gateway.stop()
    assert gateway.proc is not None and gateway.proc.returncode == 0
    assert (await customer.closed())[0] == 1001
    assert (await alice.closed())[0] == 1001
    messages = [r["msg"] for r in gateway.logs]
    assert messages.index("store closed") > messages.index("shutting down: closing websockets, finishing in-flight writes")


async def test_queued_conversation_survives_a_restart(tmp_path: Path, store_url: str) -> None:
    config = gateway_config(store_url)
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    customer = await Customer.connect(gateway, name="Patient")
    await customer.event("message")
    await customer.say("talk to a human please", "q1")
    await customer.event("message", author="bot")
    await customer.event("queued", position=1)
    await gateway.stop()
    assert (await customer.closed())[0] == 1001

    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    try:
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.expect("ready")
        offer = await alice.expect("offer")
        assert offer["conversation"]["id"] == customer.conversation_id
        assert offer["conversation"]["customer"]["name"] == "Patient"
        assert offer["conversation"]["customer_connected"] is False  # nobody has reconnected yet
        back = await Customer.connect(gateway, token=customer.token, last_seq=customer.last_seq)
        assert back.conversation_id == customer.conversation_id
        await alice.expect("customer_presence", conversation_id=customer.conversation_id, connected=True)
        await alice.send(type="accept", conversation_id=customer.conversation_id)
        await alice.expect("assigned")
        await back.expect("assigned", agent={"name": "Alice"})
        await back.expect_nothing(0.3)
    finally:
        await gateway.stop()


async def test_offered_conversation_is_queued_again_after_a_restart(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'g.db'}"
    config = gateway_config(store_url)
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await customer.event("message")
    await customer.say("agent", "a")
    await alice.expect("offer")
    await gateway.stop()

    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    await gateway.stop()
    store = await open_store(store_url)
    try:
        conversation = await store.get_conversation(customer.conversation_id)
        assert conversation.state is ConversationState.QUEUED and conversation.agent_id is None
    finally:
        await store.close()


async def test_unreachable_database_fails_start_with_a_clear_message(tmp_path: Path) -> None:
    gateway = GatewayProcess.write_config(tmp_path, gateway_config("postgresql://nobody@127.0.0.1:1/none"))
    with pytest.raises(AssertionError, match="did not start"):
        await gateway.start()
    assert gateway.proc is not None and gateway.proc.returncode not in (0, None)
    assert any("127.0.0.1:1" in r.get("msg", "") + str(r.get("error", "")) for r in gateway.logs), gateway.log_text()


async def test_after_a_restart_an_agent_who_never_returns_hands_back_its_conversations(tmp_path: Path) -> None:
    config = gateway_config(f"sqlite:///{tmp_path / 'g.db'}", desk={"disconnect_grace": 1})
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await customer.event("message")
    await customer.say("agent", "a")
    await alice.expect("offer")
    await alice.send(type="accept", conversation_id=customer.conversation_id)
    await alice.expect("assigned")
    await gateway.stop()

    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    try:
        bob = await Agent.connect(gateway, BOB_TOKEN)
        await bob.expect("ready")
        # Alice never comes back: after the grace her conversation goes to the queue, and to Bob.
        offer = await bob.expect("offer")
        assert offer["conversation"]["id"] == customer.conversation_id
    finally:
        await gateway.stop()
