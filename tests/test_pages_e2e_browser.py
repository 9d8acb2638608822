"""End to end in a real browser (issue #11's test list): a customer on a host page of another
origin opens the widget, asks the FAQ, asks for an agent; Alice's console gets the offer (the
page hook, the tone and the notification called), she accepts with Alt+A; they chat both ways
and read each other; the customer's network drops (Playwright offline mode) and comes back:
nothing lost or doubled on either screen; Alice transfers to Bob with the picker, Bob's console
gets it with her note; files go both ways; Bob closes with a disposition and the customer answers
the satisfaction question. Once in English on a desktop, once in Chinese on a phone (the
customer's) with Chinese consoles. Screenshots of each state go to test-artefacts/; axe-core
finds no serious violation on the widget or the consoles.

Every wait is for a condition (generous timeouts), never a sleep."""

from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser import REPO, artefact
from tests.support import ALICE_TOKEN, BOB_TOKEN, GatewayProcess, gateway_config, serving

WAIT = 20_000  # ms, for every expectation in the browser
ADMIN = "e2e-admin-token"
AXE = (REPO / "tests" / "vendor" / "axe-core" / "axe.min.js").read_text(encoding="utf-8")

HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Parcels</title></head>
<body><h1>Acme Parcels</h1><p>Track, ship, relax.</p>
<script src="{gateway}/widget.js" data-channel="webchat" async></script></body></html>
"""

# Alice's console: count the tones made and the notifications shown, and let the test say whether
# the tab is hidden (the notification is for a hidden tab). Injected over the DevTools protocol,
# so the page's CSP stays on.
ALERT_SPY = """
window.__alerts = {tones: 0, notes: []};
const RealContext = window.AudioContext;
window.AudioContext = class extends RealContext {
  createOscillator() { window.__alerts.tones += 1; return super.createOscillator(); }
};
window.Notification = class {
  constructor(title, options) { window.__alerts.notes.push({title, body: options && options.body}); }
  addEventListener() {}
  close() {}
  static requestPermission() { return Promise.resolve("granted"); }
};
window.Notification.permission = "granted";
Object.defineProperty(document, "hidden", {configurable: true, get: () => window.__hidden === true});
"""


@dataclass(frozen=True)
class Run:
    lang: str
    locale: str
    viewport: dict[str, int]
    faq: str
    answer: str        # the start of the FAQ's answer
    handoff: str
    joined: str        # "{name} joined" in the widget
    rated: str


RUNS = [
    Run("en", "en-US", {"width": 1100, "height": 800}, "How do I track my parcel?", "Enter your tracking number",
        "I'd like to talk to an agent", "Bob joined the conversation.", "You rated this conversation 4 of 5."),
    Run("zh", "zh-CN", {"width": 390, "height": 844}, "如何查询包裹物流?", "在官网“运单追踪”页面输入运单号",
        "转人工", "Bob 已加入对话。", "您给本次对话打了 4 分(满分 5 分)。"),
]


@pytest_asyncio.fixture
async def site() -> AsyncIterator[dict[str, Any]]:
    info: dict[str, Any] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=HOST_PAGE.format(gateway=info["gateway"]), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    async with serving(app) as port:
        info["url"] = f"http://127.0.0.1:{port}"
        yield info


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str, site: dict[str, Any]) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url, channels=[{"type": "webchat", "allowed_origins": [site["url"]]}])
    config["desk"] = {"dispositions": ["resolved", "follow_up"], "satisfaction": {"enabled": True}}
    config["server"]["admin_token"] = ADMIN
    process = await GatewayProcess.write_config(tmp_path, config).start()
    site["gateway"] = process.http
    yield process
    await process.stop()


async def axe_problems(page: Page, include: str | None = None) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations (in ``include`` only, when given)."""
    if not await page.evaluate("() => 'axe' in window"):
        await page.evaluate(AXE + "\n;undefined")
    return await page.evaluate("""async (include) => {
        const result = await axe.run(include ? {include: [[include]]} : document, {resultTypes: ["violations"]});
        return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target)}));
    }""", include)


async def opened(browser: Browser, run: Run, viewport: dict[str, int] | None = None,
                 spy: bool = False) -> tuple[BrowserContext, Page, list[str]]:
    context = await browser.new_context(locale=run.locale, viewport=viewport or {"width": 1200, "height": 800})
    if spy:
        await context.add_init_script(ALERT_SPY)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text else None)
    return context, page, problems


async def sign_in(page: Page, gateway: GatewayProcess, token: str, name: str) -> None:
    await page.goto(gateway.http + "/console")
    await page.locator("#cg-token").fill(token)
    await page.locator(".signin button[type=submit]").click()
    await expect(page.locator(".top .whoami")).to_have_text(name, timeout=WAIT)


def console_lines(page: Page) -> Any:
    """The customer's and the agents' lines in the console's selected conversation."""
    return page.locator(".main .log .msg.customer .text, .main .log .msg.agent .text")


def widget_lines(page: Page) -> Any:
    """The customer's and the agents' lines in the widget."""
    return page.locator("contactgate-chat .log .msg.customer .text, contactgate-chat .log .msg.agent .text")


async def console_reply(page: Page, text: str) -> None:
    await page.locator("#cg-reply").fill(text)
    await page.locator("#cg-reply").press("Enter")


async def widget_say(page: Page, text: str) -> None:
    box = page.locator("contactgate-chat textarea#contactgate-input")
    await box.fill(text)
    await box.press("Enter")


@pytest.mark.parametrize("run", RUNS, ids=[r.lang for r in RUNS])
async def test_a_customer_and_two_agents_from_faq_to_rating(browser: Browser, gateway: GatewayProcess,
                                                            site: dict[str, Any], run: Run) -> None:
    shot = lambda name: artefact(f"e2e-{run.lang}-{name}.png")  # noqa: E731
    alice_context, alice, alice_problems = await opened(browser, run, spy=True)
    customer_context, customer, customer_problems = await opened(browser, run, viewport=run.viewport)
    bob_context, bob, bob_problems = await opened(browser, run)

    # Alice signs in, turns the alerts on and looks elsewhere (a hidden tab).
    await sign_in(alice, gateway, ALICE_TOKEN, "Alice")
    await alice.locator("#cg-alerts").check()
    await alice.evaluate("""() => { window.offered = [];
        document.addEventListener("contactgate:offer", (e) => window.offered.push(e.detail.id));
        window.__hidden = true; }""")

    # A supervisor watches the board: nobody waits yet.
    board_context, board, board_problems = await opened(browser, run)
    await board.goto(gateway.http + "/board")
    await board.locator("#cg-admin-token").fill(ADMIN)
    await board.locator(".signin button[type=submit]").click()
    general = board.locator('li.queue[data-queue="general"]')
    await expect(general.locator("dd.waiting")).to_have_text("0", timeout=WAIT)

    # The customer opens the widget on the host page and asks the FAQ, then for a person.
    await customer.goto(site["url"])
    await customer.locator("contactgate-chat .launcher").click()
    await widget_say(customer, run.faq)
    await expect(customer.locator("contactgate-chat .log .msg.bot .text").last).to_contain_text(run.answer, timeout=WAIT)
    await customer.screenshot(path=shot("1-faq"))
    await widget_say(customer, run.handoff)
    await expect(customer.locator("contactgate-chat .status")).to_contain_text("1", timeout=WAIT)

    # The board shows the customer waiting (pushed, not polled).
    await expect(general.locator("dd.waiting")).to_have_text("1", timeout=WAIT)
    await board.screenshot(path=shot("2-board-waiting"))

    # Alice gets the offer: the page's hook, a tone, a notification (her tab was hidden).
    offer = alice.locator(".offers .offer")
    await expect(offer).to_have_count(1, timeout=WAIT)
    alerts = await alice.evaluate("() => ({offered: window.offered, ...window.__alerts})")
    assert len(alerts["offered"]) == 1 and alerts["tones"] == 1, alerts
    assert len(alerts["notes"]) == 1 and "webchat" in alerts["notes"][0]["body"], alerts
    await alice.screenshot(path=shot("2-offer"))
    await alice.evaluate("() => { window.__hidden = false; document.dispatchEvent(new Event('visibilitychange')); }")
    await alice.keyboard.press("Alt+A")  # accepts the first offer
    await expect(offer).to_have_count(0, timeout=WAIT)
    await expect(console_lines(alice).last).to_have_text(run.handoff, timeout=WAIT)

    # They chat both ways, and each side sees the other has read it.
    await console_reply(alice, "Hi, Alice here.")
    await expect(widget_lines(customer).last).to_have_text("Hi, Alice here.", timeout=WAIT)
    await expect(alice.locator(".main .log .msg.agent .read")).to_have_count(1, timeout=WAIT)
    await widget_say(customer, "Parcel 123 is late")
    await expect(console_lines(alice).last).to_have_text("Parcel 123 is late", timeout=WAIT)
    await expect(customer.locator("contactgate-chat .log .msg.customer .read")).to_have_count(1, timeout=WAIT)
    await expect(customer.locator("contactgate-chat .log .msg.customer").last.locator(".read")).to_have_count(1)
    await customer.screenshot(path=shot("3-chat"))
    await alice.screenshot(path=shot("3-chat-console"))
    assert await axe_problems(customer, "contactgate-chat") == []
    assert await axe_problems(alice) == []

    # The customer's network drops; both write meanwhile; back, each line shows once on each side.
    await customer_context.set_offline(True)
    await expect(customer.locator("contactgate-chat .status")).to_be_visible(timeout=WAIT)
    await widget_say(customer, "Still there?")
    await expect(customer.locator("contactgate-chat .pending-log .msg")).to_have_count(1)
    await console_reply(alice, "Checking the depot now.")
    await expect(alice.locator(".main .pending .msg")).to_have_count(0, timeout=WAIT)
    await customer.screenshot(path=shot("4-offline"))
    await customer_context.set_offline(False)
    await expect(customer.locator("contactgate-chat .pending-log .msg")).to_have_count(0, timeout=WAIT)
    lines = [run.handoff, "Hi, Alice here.", "Parcel 123 is late"]
    later = sorted(["Still there?", "Checking the depot now."])
    lines = [run.faq, *lines]
    await expect(console_lines(alice)).to_have_count(6, timeout=WAIT)
    await expect(widget_lines(customer)).to_have_count(6, timeout=WAIT)
    for shown in (await console_lines(alice).all_inner_texts(), await widget_lines(customer).all_inner_texts()):
        assert shown[:4] == lines and sorted(shown[4:]) == later, shown

    # Bob comes in; Alice transfers to him with the picker and a note; his console gets it.
    await sign_in(bob, gateway, BOB_TOKEN, "Bob")
    target = alice.locator("#cg-transfer-target")
    await target.focus()  # the picker asks for a fresh directory
    await expect(alice.locator('#cg-transfer-target option[value="to_agent:bob"]')).to_be_enabled(timeout=WAIT)
    await target.select_option("to_agent:bob")
    await alice.locator("#cg-transfer-note").fill("Parcel 123, depot check pending")
    await alice.screenshot(path=shot("5-transfer"))
    await alice.locator(".transfer button[type=submit]").click()
    await expect(alice.locator(".main .ended")).to_be_visible(timeout=WAIT)
    bob_offer = bob.locator(".offers .offer")
    await expect(bob_offer).to_have_count(1, timeout=WAIT)
    await expect(bob_offer).to_contain_text("Alice")
    await expect(bob_offer).to_contain_text("Parcel 123, depot check pending")
    await bob.screenshot(path=shot("6-bob-offer"))
    await bob_offer.locator("button.primary").click()
    await expect(customer.locator("contactgate-chat .log .notice").last).to_have_text(run.joined, timeout=WAIT)

    # Files both ways: Bob attaches a label, the customer a photo.
    await bob.locator("#cg-file").set_input_files(
        files=[{"name": "label.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 label"}])
    await expect(customer.locator("contactgate-chat .log .files button")).to_contain_text("label.pdf", timeout=WAIT)
    await customer.locator("contactgate-chat input[type=file]").set_input_files(
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n photo"}])
    await expect(bob.locator(".main .log .msg.customer .file")).to_contain_text("photo.png", timeout=WAIT)
    await expect(bob.locator(".main .log .msg.agent .file")).to_contain_text("label.pdf")

    # Bob closes with a disposition; the customer rates the conversation.
    await bob.locator("#cg-disposition").select_option("resolved")
    await bob.locator(".close button[type=submit]").click()
    await expect(bob.locator(".main .ended")).to_be_visible(timeout=WAIT)
    rating = customer.locator("contactgate-chat .rating")
    await expect(rating).to_be_visible(timeout=WAIT)
    await customer.screenshot(path=shot("7-rating"))
    assert await axe_problems(customer, "contactgate-chat") == []
    await rating.locator('button[data-score="4"]').click()
    await rating.locator("textarea").fill("Fast and kind")
    await rating.locator("button[type=submit]").click()
    await expect(customer.locator("contactgate-chat .rated")).to_have_text(run.rated, timeout=WAIT)
    await customer.screenshot(path=shot("8-rated"))
    await bob.screenshot(path=shot("8-closed-console"))
    assert await axe_problems(bob) == []

    # The board: nobody waits, and the conversation counts as answered in the window.
    await expect(general.locator("dd.waiting")).to_have_text("0", timeout=WAIT)
    await expect(general.locator("dd.level")).to_contain_text(re.compile(r"[(（]1 "), timeout=WAIT)  # (1 of 1), （1 个中 1 个）
    await board.screenshot(path=shot("9-board"))
    assert await axe_problems(board) == []

    cid = await customer.evaluate("""() => Object.entries(localStorage)
        .filter(([k]) => k.startsWith("contactgate:")).map(([, v]) => JSON.parse(v).conversation_id)[0]""")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        async with http.get(gateway.http + f"/api/conversations/{cid}") as response:
            events = (await response.json())["events"]
    rated = [e for e in events if e["kind"] == "satisfaction"]
    assert [(e["data"]["score"], e["data"]["comment"], e["data"]["agent_id"]) for e in rated] == [(4, "Fast and kind", "bob")]
    texts = [e["text"] for e in events if e["kind"] == "message" and e["author"] in ("customer", "agent")]
    for line in lines + later:
        assert texts.count(line) == 1, (line, texts)  # stored once each, whatever the drop did
    assert alice_problems == bob_problems == customer_problems == board_problems == []
    for context in (alice_context, bob_context, customer_context, board_context):
        await context.close()
