"""The agent console (/console) in a real browser (headless chromium, tests/browser.py): a web chat
customer (a websocket client, tests/support.py) asks for an agent; Alice signs in to the console,
gets the offer, accepts, they chat both ways, the console's network drops and comes back (nothing
lost or doubled on either side), and she closes with a disposition. Screenshots of each state go
to test-artefacts/.

Every wait is for a condition (generous timeouts), never a sleep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.browser import REPO, artefact
from tests.support import ALICE_TOKEN, Customer, GatewayProcess, gateway_config

WAIT = 20_000  # ms, for every expectation in the browser
AXE = REPO / "tests" / "vendor" / "axe-core" / "axe.min.js"


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url)
    config["desk"] = {"dispositions": ["resolved", "follow_up"], "require_disposition": True,
                      "canned": [{"title": "Greeting", "text": "Hi, how can I help?"},
                                 {"title": "Tracking", "text": "Your parcel is on its way."}]}
    process = await GatewayProcess.write_config(tmp_path, config).start()
    yield process
    await process.stop()


async def accessibility_problems(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the console page."""
    if not await page.evaluate("() => 'axe' in window"):
        # Evaluated over the DevTools protocol: the page's CSP (no inline script) stays on.
        await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    return await page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target)}));
    }""")


async def frames_until(customer: Customer, type_: str) -> list[dict[str, Any]]:
    """Every frame the customer gets, up to and including the first of ``type_``."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] != type_:
        frames.append(await customer.recv(timeout=30))
        assert frames[-1]["type"] != "error", frames[-1]
    return frames


async def say(customer: Customer, text: str, client_id: str) -> None:
    await customer.send(type="message", id=client_id, text=text)
    await customer.next("ack", id=client_id, timeout=30)


def log_texts(page: Page) -> Any:
    """The customer's and the agent's lines in the selected conversation (not the bot's)."""
    return page.locator(".main .log .msg.customer .text, .main .log .msg.agent .text")


async def test_agent_signs_in_takes_the_offer_chats_drops_and_closes(browser: Browser, gateway: GatewayProcess) -> None:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text else None)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    # Sign in: the token goes into sessionStorage and the auth frame, never into a URL.
    await page.goto(gateway.http + "/console")
    await page.get_by_label("Agent token").fill(ALICE_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator(".top .whoami")).to_have_text("Alice", timeout=WAIT)
    assert await page.evaluate("() => sessionStorage.getItem('contactgate:console:token')") == ALICE_TOKEN
    assert ALICE_TOKEN not in page.url and all(ALICE_TOKEN not in url for url in sockets)
    await page.evaluate("""() => { window.offered = [];
        window.contactgateConsole.onOffer = (offer) => window.offered.push(offer.id);
        document.addEventListener("contactgate:offer", (e) => window.offered.push("event:" + e.detail.id)); }""")

    # The customer asks for a person: the offer shows who, where from, the transcript, a countdown.
    customer = await Customer.connect(gateway, name="Mei")
    await say(customer, "I'd like to talk to an agent", "c1")
    offer = page.locator(".offers .offer")
    await expect(offer).to_have_count(1, timeout=WAIT)
    await expect(offer.locator(".customer-card dd")).to_have_text(["Mei", "standard", "webchat", "general"])
    await expect(offer.locator(".countdown")).to_have_text(re.compile(r"^\d+ s to accept$"))
    await offer.locator("summary").click()
    await expect(offer.locator(".transcript")).to_contain_text("I'd like to talk to an agent")
    cid = customer.conversation_id
    assert await page.evaluate("() => window.offered") == [cid, f"event:{cid}"]
    await page.screenshot(path=artefact("console-1-offer.png"))

    await offer.get_by_role("button", name="Accept").click()
    await customer.next("assigned", timeout=30)
    await expect(page.locator(".offers .offer")).to_have_count(0, timeout=WAIT)
    await expect(page.locator(".card .customer-card .name")).to_have_text("Mei")
    await expect(log_texts(page).last).to_have_text("I'd like to talk to an agent")
    reply = page.get_by_label("Reply")
    await expect(reply).to_be_focused()

    # Typing both ways, then replies both ways (Enter sends, Shift+Enter is a new line).
    await customer.send(type="typing", active=True)
    await expect(page.locator(".main .typing")).to_be_visible(timeout=WAIT)
    await reply.press_sequentially("Hi Mei, this is Alice.")
    typing = await customer.next("typing", timeout=30)
    assert typing["active"] is True
    await reply.press("Enter")
    answer = await customer.next("message", author="agent", timeout=30)
    assert answer["text"] == "Hi Mei, this is Alice."
    await say(customer, "My parcel 123 is late", "c2")
    await expect(log_texts(page).last).to_have_text("My parcel 123 is late", timeout=WAIT)
    await expect(page.locator(".main .typing")).to_be_hidden()
    await reply.press_sequentially("Let me check.")
    await reply.press("Shift+Enter")
    await reply.press_sequentially("One moment.")
    await reply.press("Enter")
    answer = await customer.next("message", author="agent", timeout=30)
    assert answer["text"] == "Let me check.\nOne moment."

    # A canned reply from desk.canned goes into the box where the cursor is, to edit or send.
    await reply.fill("Good news: ")
    await page.get_by_label("Insert a canned answer").select_option(label="Tracking")
    await expect(reply).to_have_value("Good news: Your parcel is on its way.")
    await expect(reply).to_be_focused()
    await reply.fill("")
    await page.screenshot(path=artefact("console-2-chat.png"))
    assert await accessibility_problems(page) == []

    # The console's network drops: the customer writes, Alice writes; back, each shows once.
    await context.set_offline(True)
    await expect(page.locator(".top .connection")).to_contain_text("Offline", timeout=WAIT)
    await say(customer, "Are you still there?", "c3")
    await reply.fill("Found it: it arrives tomorrow.")
    await reply.press("Enter")
    await expect(page.locator(".main .pending .msg")).to_have_count(1)
    await page.screenshot(path=artefact("console-3-offline.png"))
    await context.set_offline(False)
    await expect(page.locator(".main .pending .msg")).to_have_count(0, timeout=WAIT)
    expected = ["I'd like to talk to an agent", "Hi Mei, this is Alice.", "My parcel 123 is late",
                "Let me check.\nOne moment.", "Are you still there?", "Found it: it arrives tomorrow."]
    await expect(log_texts(page)).to_have_text(expected[:4] + [re.compile("."), re.compile(".")], timeout=WAIT)
    shown = await log_texts(page).all_inner_texts()
    assert shown[:4] == expected[:4] and sorted(shown[4:]) == sorted(expected[4:]), shown
    assert await page.locator(".main .log .msg.customer, .main .log .msg.agent").count() == len(expected)

    # Close with a disposition from ready: the customer sees Alice's offline reply once, then the end.
    await page.get_by_label("Disposition").select_option("follow_up")
    await page.get_by_role("button", name="Close conversation").click()
    frames = await frames_until(customer, "closed")
    assert [f["text"] for f in frames if f["type"] == "message" and f.get("author") == "agent"] == [
        "Found it: it arrives tomorrow."]
    await expect(page.locator(".main .ended")).to_have_text("You closed this conversation.", timeout=WAIT)
    await expect(reply).to_be_hidden()
    assert await log_texts(page).all_inner_texts() == shown
    await page.screenshot(path=artefact("console-4-closed.png"))
    assert problems == []
    await customer.close()
    await context.close()
