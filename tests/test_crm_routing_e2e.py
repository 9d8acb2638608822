"""The CRM decides the tier when no profile tier and no tier rule does; a failing CRM falls
back. A real HTTP server stands in for the CRM, speaking JSON."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, gateway_config, serving


async def test_crm_tier_routes_to_vip_desk_and_fallback_when_crm_fails(tmp_path: Path) -> None:
    asked: list[str] = []

    async def lookup(request: web.Request) -> web.Response:
        email = request.match_info["email"]
        asked.append(email)
        if email.startswith("broken"):
            return web.Response(status=500, text="boom")
        return web.json_response({"customer": {"segment": "vip" if email.startswith("big") else "standard"}})

    app = web.Application()
    app.router.add_get("/customers/{email}", lookup)
    async with serving(app) as port:
        await _route_through_crm(tmp_path, port)
    assert asked == ["big@corp.example", "broken@corp.example"]


async def _route_through_crm(tmp_path: Path, port: int) -> None:
    config = gateway_config(f"sqlite:///{tmp_path / 'g.db'}")
    config["tiers"]["crm"] = {"url": f"http://127.0.0.1:{port}/customers/{{email}}", "timeout": 2,
                              "tier_field": "customer.segment", "fallback_tier": "standard"}
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    try:
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.expect("ready")
        for email, tier, queue in [("big@corp.example", "vip", "vip_desk"),
                                   ("broken@corp.example", "standard", "general")]:
            customer = await Customer.connect(gateway, email=email)
            await customer.event("message")
            await customer.say("agent please", "h")
            await customer.event("message", author="bot")
            await customer.event("queued")
            offer = await alice.expect("offer")
            assert offer["conversation"]["customer"]["tier"] == tier
            assert offer["conversation"]["queue"] == queue
            await alice.send(type="accept", conversation_id=customer.conversation_id)
            await alice.expect("assigned")
            await alice.send(type="close", conversation_id=customer.conversation_id)
            await alice.expect("closed")
    finally:
        await gateway.stop()
