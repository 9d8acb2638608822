"""Auto-accept and sticky routing, end to end: what an agent and a returning customer see."""

from __future__ import annotations

from pathlib import Path

from tests.support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config


async def handoff(customer: Customer) -> None:
    await customer.say("agent please", f"h{customer.last_seq}")
    await customer.event("message", author="bot")
    await customer.event("queued")


async def test_auto_accept_assigns_at_once_and_sticky_brings_the_customer_back_to_its_agent(tmp_path: Path) -> None:
    config = gateway_config(f"sqlite:///{tmp_path / 'g.db'}")
    config["queues"] = [{"name": "vip_desk"}, {"name": "general", "auto_accept": True, "strategy": "sticky"}]
    config["agents"][0]["queues"] = ["general"]
    config["agents"][1]["capacity"] = 2
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    try:
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.expect("ready")
        bob = await Agent.connect(gateway, BOB_TOKEN)
        await bob.expect("ready")

        customer = await Customer.connect(gateway)
        await customer.event("message")
        await handoff(customer)
        # Alice has been idle longest: she gets it, already assigned (no accept needed).
        offer = await alice.expect("offer")
        assert offer["conversation"]["id"] == customer.conversation_id
        await alice.expect("assigned", conversation_id=customer.conversation_id)
        assigned = await customer.event("assigned")
        assert assigned["agent"] == {"name": "Alice"}
        await alice.send(type="close", conversation_id=customer.conversation_id)
        await alice.expect("closed")
        await customer.event("closed")

        # Bob is now the longest idle, but the same customer comes back: sticky picks Alice.
        back = await Customer.connect(gateway, token=customer.token, last_seq=customer.last_seq)
        assert back.conversation_id != customer.conversation_id
        await back.event("message")
        await handoff(back)
        offer = await alice.expect("offer")
        assert offer["conversation"]["id"] == back.conversation_id
        await alice.expect("assigned")
        await bob.expect_nothing(0.3)

        # A different customer goes by the usual rule: Bob, idle longest.
        other = await Customer.connect(gateway)
        await other.event("message")
        await handoff(other)
        offer = await bob.expect("offer")
        assert offer["conversation"]["id"] == other.conversation_id
    finally:
        await gateway.stop()
