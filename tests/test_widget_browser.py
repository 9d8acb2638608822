"""The chat widget in a real browser (headless chromium, tests/browser.py): a customer on a test
host page of another origin embeds it with one script tag and talks to the real gateway; an agent
answers on the agent websocket (tests/support.py). Screenshots of each state go to
test-artefacts/.

Every wait is for a condition (generous timeouts), never a sleep."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser import REPO, artefact
from tests.support import ALICE_TOKEN, Agent, GatewayProcess, gateway_config, serving

WAIT = 20_000  # ms, for every expectation in the browser
PHONE = {"width": 390, "height": 844}

HOST_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme Parcels</title>
<style>
  /* A host page with rude global styles: none of it may reach the widget. */
  * {{ color: rgb(255, 0, 0) !important; font-family: serif !important; }}
  button {{ background: rgb(0, 128, 0) !important; }}
</style>
</head>
<body>
<h1>Acme Parcels</h1>
<button id="own" type="button">Host button</button>
<script src="/host.js"></script>
<script src="{gateway}/widget.js" data-channel="webchat" {attributes} async></script>
</body>
</html>
"""

# The host page's own script: globals the widget must neither add to nor change.
HOST_JS = """
window.state = "host";
window.send = function () { return "host"; };
window.hostGlobals = Object.keys(window);
"""


@pytest_asyncio.fixture
async def site() -> AsyncIterator[dict[str, Any]]:
    """The embedding site, on its own port (another origin than the gateway's)."""
    info: dict[str, Any] = {"gateway": None}

    async def page(request: web.Request) -> web.Response:
        attributes = " ".join(f'data-{key}="{value}"' for key, value in request.query.items())
        return web.Response(text=HOST_PAGE.format(gateway=info["gateway"], attributes=attributes),
                            content_type="text/html")

    async def script(request: web.Request) -> web.Response:
        return web.Response(text=HOST_JS, content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/host.js", script)
    async with serving(app) as port:
        info["url"] = f"http://127.0.0.1:{port}"
        yield info


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str, site: dict[str, Any]) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url, channels=[{"type": "webchat", "allowed_origins": [site["url"]]}])
    config["desk"] = {"dispositions": ["resolved"]}
    process = await GatewayProcess.write_config(tmp_path, config).start()
    site["gateway"] = process.http
    yield process
    await process.stop()


async def new_page(browser: Browser, locale: str = "en-US", viewport: dict[str, int] | None = None,
                   **context_options: Any) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(locale=locale, viewport=viewport or {"width": 1100, "height": 800},
                                        **context_options)
    page = await context.new_page()
    failed: list[str] = []
    # The widget asks nobody but the gateway and the page's own origin.
    page.on("request", lambda request: failed.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "blob:", "data:")) else None)
    page.on("pageerror", lambda error: failed.append(f"page error: {error}"))
    setattr(page, "foreign", failed)
    return context, page


AXE = REPO / "tests" / "vendor" / "axe-core" / "axe.min.js"


async def accessibility_problems(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations inside the widget (the host page is not ours)."""
    if not await page.evaluate("() => 'axe' in window"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("""async () => {
        const result = await axe.run({include: [["contactgate-chat"]]}, {resultTypes: ["violations"]});
        return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target)}));
    }""")
    return result


def widget_messages(page: Page) -> Any:
    return page.locator("contactgate-chat .log .msg .text")


async def rendered(page: Page) -> list[str]:
    return await widget_messages(page).all_inner_texts()


async def customer_texts_until(agent: Agent, last: str) -> list[str]:
    """The customer's messages the agent gets, up to and including ``last``."""
    texts: list[str] = []
    while not texts or texts[-1] != last:
        frame = await agent.next("message", author="customer", timeout=30)
        texts.append(frame["text"])
    return texts


async def test_customer_asks_the_bot_waits_chats_drops_reloads_and_ends(browser: Browser, gateway: GatewayProcess,
                                                                        site: dict[str, Any]) -> None:
    context, page = await new_page(browser)
    await page.goto(site["url"])
    launcher = page.get_by_role("button", name="Chat with us")
    await expect(launcher).to_be_visible(timeout=WAIT)
    await launcher.click()
    panel = page.get_by_role("dialog", name="Customer service")
    await expect(panel).to_be_visible()
    await expect(page.locator("contactgate-chat .msg.bot")).to_have_count(1, timeout=WAIT)  # the greeting
    box = page.get_by_label("Your message")
    await expect(box).to_be_focused()
    await page.screenshot(path=artefact("widget-1-greeting.png"))

    # The bot answers from the FAQ.
    await box.fill("How do I track my parcel?")
    await box.press("Enter")
    await expect(page.locator("contactgate-chat .msg.bot").nth(1)).to_contain_text("tracking number", timeout=WAIT)
    await expect(page.locator("contactgate-chat .msg.customer .text")).to_have_text(["How do I track my parcel?"])

    # A person, please: the customer waits first in line.
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    await box.fill("I'd like to talk to an agent")
    await box.press("Enter")
    status = page.locator("contactgate-chat .status")
    await expect(status).to_have_text(re.compile(r"You are number 1 in line\. Estimated wait: .+\."), timeout=WAIT)
    await page.screenshot(path=artefact("widget-2-queued.png"))
    assert await accessibility_problems(page) == []

    offer = await alice.next("offer")
    cid = offer["conversation"]["id"]
    await alice.send(type="accept", conversation_id=cid)
    await expect(page.locator("contactgate-chat header .agent")).to_have_text("You are chatting with Alice", timeout=WAIT)
    await expect(page.locator("contactgate-chat .notice")).to_have_text(["Alice joined the conversation."])
    await expect(status).to_be_hidden()

    await alice.send(type="typing", conversation_id=cid, active=True)
    typing = page.locator("contactgate-chat .typing")
    await expect(typing).to_have_text("Alice is typing…", timeout=WAIT)
    await page.screenshot(path=artefact("widget-3-typing.png"))
    await page.locator("contactgate-chat").screenshot(path=artefact("widget-3-typing-panel.png"))
    await alice.send(type="message", conversation_id=cid, id="a1", text="Hi, this is Alice. Let me check.")
    await expect(page.locator("contactgate-chat .msg.agent .text")).to_have_text(["Hi, this is Alice. Let me check."],
                                                                                 timeout=WAIT)
    await expect(typing).to_be_hidden()
    await expect(page.locator("contactgate-chat .msg.agent .who")).to_have_text(["Alice"])

    # The network drops. The customer writes twice meanwhile; the agent writes once.
    await context.set_offline(True)
    await expect(status).to_have_text(re.compile("offline"), timeout=WAIT)
    for text in ("My parcel 123 is late", "It was due on Monday"):
        await box.fill(text)
        await box.press("Enter")
    await expect(page.locator("contactgate-chat .pending-log .msg")).to_have_count(2)
    await page.screenshot(path=artefact("widget-4-offline.png"))
    await alice.send(type="message", conversation_id=cid, id="a2", text="Are you still there?")
    await alice.next("ack", id="a2")

    # Back: what was typed is sent once, what was missed is shown once.
    await context.set_offline(False)
    await expect(page.locator("contactgate-chat .pending-log .msg")).to_have_count(0, timeout=WAIT)
    await expect(page.locator("contactgate-chat .msg.agent .text")).to_have_text(
        ["Hi, this is Alice. Let me check.", "Are you still there?"], timeout=WAIT)
    await box.fill("Yes, still here")
    await box.press("Enter")
    assert await customer_texts_until(alice, "Yes, still here") == [
        "My parcel 123 is late", "It was due on Monday", "Yes, still here"]
    # In the order the gateway stored them: the agent's line came before the offline ones were sent.
    expected = ["How do I track my parcel?", "I'd like to talk to an agent", "Hi, this is Alice. Let me check.",
                "Are you still there?", "My parcel 123 is late", "It was due on Monday", "Yes, still here"]
    await expect(page.locator("contactgate-chat .msg.customer .text, contactgate-chat .msg.agent .text")).to_have_text(
        expected, timeout=WAIT)
    before_reload = await rendered(page)
    assert len(before_reload) == len(set(before_reload)) == len(expected) + 3  # the greeting, FAQ answer, handoff line

    # A reload resumes the same conversation: the same messages, once each; live ones follow.
    await page.reload()
    await expect(launcher).to_be_visible(timeout=WAIT)
    await expect(widget_messages(page)).to_have_text(before_reload, timeout=WAIT)
    await alice.send(type="message", conversation_id=cid, id="a3", text="Found it: it arrives tomorrow.")
    await expect(page.locator("contactgate-chat .badge")).to_have_text("1", timeout=WAIT)  # unread, panel closed
    await launcher.click()
    await expect(widget_messages(page)).to_have_text([*before_reload, "Found it: it arrives tomorrow."], timeout=WAIT)
    await expect(page.locator("contactgate-chat header .agent")).to_have_text("You are chatting with Alice")
    await page.screenshot(path=artefact("widget-5-after-reload.png"))

    # The agent ends it.
    await alice.send(type="close", conversation_id=cid, disposition="resolved")
    await expect(page.get_by_text("The conversation has ended.")).to_be_visible(timeout=WAIT)
    await expect(box).to_be_hidden()
    await page.screenshot(path=artefact("widget-6-ended.png"))
    assert await accessibility_problems(page) == []
    again = page.get_by_role("button", name="Start a new chat")
    await again.click()
    await expect(page.locator("contactgate-chat .msg.bot")).to_have_count(1, timeout=WAIT)  # a new greeting
    await expect(box).to_be_visible()
    assert getattr(page, "foreign") == []
    await alice.close()
    await context.close()


async def test_chinese_on_a_phone(browser: Browser, gateway: GatewayProcess, site: dict[str, Any]) -> None:
    context, page = await new_page(browser, locale="zh-CN", viewport=PHONE, is_mobile=True, has_touch=True)
    await page.goto(site["url"])
    launcher = page.get_by_role("button", name="在线咨询")
    await expect(launcher).to_be_visible(timeout=WAIT)
    await launcher.click()
    panel = page.get_by_role("dialog", name="客户服务")
    await expect(panel).to_be_visible()
    await expect(page.locator("contactgate-chat .msg.bot")).to_have_count(1, timeout=WAIT)
    box = await panel.bounding_box()
    assert box is not None and box["width"] == PHONE["width"] and box["height"] == PHONE["height"]
    message = page.get_by_label("您的消息")
    await message.fill("转人工")
    await message.press("Enter")
    await expect(page.locator("contactgate-chat .status")).to_contain_text("当前排在第 1 位", timeout=WAIT)
    await expect(page.get_by_role("button", name="发送")).to_be_visible()
    await page.screenshot(path=artefact("widget-7-zh-phone.png"))
    assert await accessibility_problems(page) == []
    assert getattr(page, "foreign") == []

    # data-lang overrides the browser's language.
    await page.goto(site["url"] + "?lang=en")
    await expect(page.get_by_role("button", name="Chat with us")).to_be_visible(timeout=WAIT)
    await context.close()


async def test_keyboard_prechat_host_page_untouched_and_a_file(browser: Browser, gateway: GatewayProcess,
                                                               site: dict[str, Any]) -> None:
    context, page = await new_page(browser)
    await page.goto(site["url"] + "?prechat=name,email")
    launcher = page.get_by_role("button", name="Chat with us")
    await expect(launcher).to_be_visible(timeout=WAIT)

    # Keyboard only: Tab from the page's own button reaches the launcher.
    await page.locator("#own").focus()
    await page.keyboard.press("Tab")
    await expect(launcher).to_be_focused()
    await page.keyboard.press("Enter")
    name = page.get_by_label("Name")
    await expect(name).to_be_focused(timeout=WAIT)
    await page.keyboard.type("Mei")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Email")).to_be_focused()
    await page.keyboard.type("mei@vip.example")
    await page.keyboard.press("Enter")
    box = page.get_by_label("Your message")
    await expect(box).to_be_focused(timeout=WAIT)
    await expect(page.locator("contactgate-chat .msg.bot")).to_have_count(1, timeout=WAIT)
    # A visible focus ring.
    assert await box.evaluate("el => getComputedStyle(el).outlineStyle") != "none"

    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    await page.keyboard.type("agent")
    await page.keyboard.press("Enter")
    offer = await alice.next("offer")
    customer = offer["conversation"]["customer"]
    assert customer["name"] == "Mei" and customer["tier"] == "vip"  # the pre-chat form's email
    cid = offer["conversation"]["id"]
    await alice.send(type="accept", conversation_id=cid)
    await alice.next("assigned", conversation_id=cid)

    # A file from the agent: downloaded with the token (Authorization), offered as a blob link.
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.http}/api/attachments", params={"conversation_id": cid, "name": "label.txt"},
                             data=b"LABEL 123", headers={"Authorization": f"Bearer {ALICE_TOKEN}",
                                                         "Content-Type": "text/plain"}) as answer:
            assert answer.status == 201, await answer.text()
            attachment = await answer.json()
    await alice.send(type="message", conversation_id=cid, id="f1", text="Here is your label.",
                     attachments=[attachment["id"]])
    download_button = page.get_by_role("button", name=re.compile(r"Download label\.txt"))
    await expect(download_button).to_be_visible(timeout=WAIT)
    async with page.expect_download() as info:
        await download_button.click()
    download = await info.value
    assert download.suggested_filename == "label.txt"
    assert Path(await download.path()).read_bytes() == b"LABEL 123"
    await page.screenshot(path=artefact("widget-8-file.png"))
    assert await accessibility_problems(page) == []

    # Escape minimises and gives the focus back to the launcher.
    await page.keyboard.press("Escape")
    await expect(launcher).to_be_focused()
    await expect(page.get_by_role("dialog")).to_be_hidden()

    # The host page's styles and scripts are as they were, and none of theirs reached the widget.
    assert await page.locator("#own").evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(0, 128, 0)"
    assert await launcher.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(29, 78, 216)"
    assert await launcher.evaluate("el => getComputedStyle(el).color") == "rgb(255, 255, 255)"
    assert await launcher.evaluate("el => getComputedStyle(el).fontFamily") != "serif"
    page_state = await page.evaluate("""() => ({state: window.state, send: window.send(),
        added: Object.keys(window).filter(k => !["hostGlobals", "axe"].includes(k) && !window.hostGlobals.includes(k))})""")
    assert page_state == {"state": "host", "send": "host", "added": []}, json.dumps(page_state)
    assert getattr(page, "foreign") == []
    await alice.close()
    await context.close()


async def test_demo_page_works_under_its_own_strict_policy(browser: Browser, gateway: GatewayProcess) -> None:
    context, page = await new_page(browser)
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text)
            if "Content Security Policy" in message.text else None)
    await page.goto(gateway.http + "/chat")
    await page.get_by_role("button", name="Chat with us").click()
    await expect(page.locator("contactgate-chat .msg.bot")).to_have_count(1, timeout=WAIT)
    assert blocked == [] and getattr(page, "foreign") == []
    await context.close()
