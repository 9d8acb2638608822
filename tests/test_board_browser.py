"""The supervisor board (/board) in a real browser (headless chromium, tests/browser.py): a wrong
admin token is refused, the right one shows the queues; a web chat customer (a websocket client)
queues and the queue turns amber with the customer about to breach, then past the target; Alice
(an agent over the websocket) answers and the board shows the queue red, nobody waiting and
Alice busy. Then the same board in Chinese. Screenshots of each state go to test-artefacts/;
axe-core on each language, and no CSP violation.

Every wait is for a condition (generous timeouts), never a sleep."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest_asyncio
import websockets
from playwright.async_api import Browser, Page, expect

from gateway.model import QueueSample
from gateway.store import open_store
from tests.browser import artefact
from tests.support import ALICE_TOKEN, Agent, Client, Customer, GatewayProcess, gateway_config
from tests.test_console_browser import accessibility_problems

WAIT = 20_000  # ms, for every expectation in the browser
ADMIN_TOKEN = "board-browser-admin-token"


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url)
    config["server"]["admin_token"] = ADMIN_TOKEN
    config["board"] = {"tick": 2, "breach_share": 0.5}
    config["queues"][1]["service_level"] = {"answer_within": 3, "percent": 80}
    # Three hours of samples from before this gateway started (as a previous run would have
    # left them): the charts draw them from the store.
    store = await open_store(sqlite_url)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    await store.add_queue_samples([
        QueueSample("general", now - timedelta(minutes=m), round(85 + 10 * math.sin(m / 20), 1), int(3 + 2 * math.cos(m / 15)))
        for m in range(180, 1, -1)])
    await store.close()
    process = await GatewayProcess.write_config(tmp_path, config).start()
    yield process
    await process.stop()


def watch(page: Page, problems: list[str], sockets: list[str]) -> None:
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.on("websocket", lambda ws: sockets.append(ws.url))


async def sign_in(page: Page, label: str, button: str, token: str) -> None:
    await page.get_by_label(label).fill(token)
    await page.get_by_role("button", name=button).click()


async def test_the_board_shows_the_queue_change_as_a_customer_waits_and_is_answered(
        browser: Browser, gateway: GatewayProcess) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
    page = await context.new_page()
    problems: list[str] = []
    sockets: list[str] = []
    watch(page, problems, sockets)

    await page.goto(gateway.http + "/board")
    await sign_in(page, "Admin token", "Sign in", "not-the-token")
    await expect(page.get_by_role("alert")).to_have_text("That is not the admin token.", timeout=WAIT)
    assert await accessibility_problems(page) == []
    await sign_in(page, "Admin token", "Sign in", ADMIN_TOKEN)
    await expect(page.locator(".top .connection")).to_have_text("Live", timeout=WAIT)
    assert await page.evaluate("() => sessionStorage.getItem('contactgate:board:token')") == ADMIN_TOKEN
    assert ADMIN_TOKEN not in page.url and all(ADMIN_TOKEN not in url for url in sockets)
    general = page.locator('li.queue[data-queue="general"]')
    await expect(general.locator(".badge")).to_have_text("On target")
    await expect(general.locator("dd.waiting")).to_have_text("0")
    await expect(general.locator(".plot canvas")).to_have_count(1)  # uPlot drew the samples
    await expect(general.locator(".plot")).to_have_attribute("aria-label", re.compile(r"last 8 h: no answers yet, Waiting 0$"))
    await expect(general.locator(".chart .none")).to_be_hidden()
    await expect(page.locator(".agents tbody tr")).to_have_count(2)
    await page.screenshot(path=artefact("board-1-quiet.png"))

    # A customer asks for a person and nobody is there: amber, then about to breach, past the target.
    customer = await Customer.connect(gateway, name="Mei")
    await customer.send(type="message", id="c1", text="I'd like to talk to an agent")
    await customer.next("ack", id="c1")
    await expect(general.locator("dd.waiting")).to_have_text("1", timeout=WAIT)
    await expect(general).to_have_class(re.compile(r"\bamber\b"))
    await expect(general.locator(".badge")).to_have_text("At risk")
    breach = page.locator(".breaching tbody tr")
    await expect(breach).to_have_count(1, timeout=WAIT)
    await expect(breach.locator("td")).to_have_text(["general", "standard", "webchat", re.compile(r"\d+ s"),
                                                     re.compile("past target")], timeout=WAIT)
    await page.screenshot(path=artefact("board-2-waiting.png"))
    assert await accessibility_problems(page) == []

    # Alice answers (late): nobody waits, 0 % within the target, red; Alice busy with it.
    agent = await Agent.connect(gateway, ALICE_TOKEN)
    await agent.expect("ready")
    offer = await agent.next("offer")
    await agent.send(type="accept", conversation_id=offer["conversation"]["id"])
    await customer.next("assigned", timeout=30)
    await expect(general.locator("dd.waiting")).to_have_text("0", timeout=WAIT)
    await expect(general.locator(".badge")).to_have_text("Below target")
    await expect(general.locator("dd.level")).to_contain_text("0 % (0 of 1)")
    await expect(general.locator("dd.staffing")).to_have_text("0 / 1 / 0")
    await expect(breach).to_have_count(0)
    await expect(page.get_by_text("Nobody is close to the target.")).to_be_visible()
    alice = page.locator('.agents tr[data-agent="alice"]')
    await expect(alice.locator("td")).to_have_text(["busy", "1 of 2 (webchat 1)", re.compile(r"\d+ s")])
    await page.screenshot(path=artefact("board-3-answered.png"))
    assert problems == []

    # The network drops: the board says so, reconnects when it is back and is live again.
    await context.set_offline(True)
    await expect(page.locator(".top .connection")).to_have_text("Offline: reconnecting…", timeout=WAIT)
    await context.set_offline(False)
    await expect(page.locator(".top .connection")).to_have_text("Live", timeout=WAIT)
    await expect(general.locator(".badge")).to_have_text("Below target")

    # The same board in Chinese (the browser's language), on a narrower screen.
    zh_context = await browser.new_context(viewport={"width": 820, "height": 1000}, locale="zh-CN")
    zh = await zh_context.new_page()
    watch(zh, problems, sockets)
    await zh.goto(gateway.http + "/board")
    await sign_in(zh, "管理员令牌", "登录", ADMIN_TOKEN)
    await expect(zh.locator(".top .connection")).to_have_text("实时", timeout=WAIT)
    await expect(zh.get_by_role("heading", name="队列")).to_be_visible()
    await expect(zh.locator('li.queue[data-queue="general"] .badge')).to_have_text("未达标")
    await expect(zh.locator('.agents tr[data-agent="alice"] td').first).to_have_text("忙碌")
    assert await zh.evaluate("() => document.documentElement.lang") == "zh-CN"
    await zh.screenshot(path=artefact("board-4-zh.png"))
    assert await accessibility_problems(zh) == []
    # The language picker switches back to English without signing in again.
    await zh.locator(".top select").select_option("en")
    await expect(zh.locator('li.queue[data-queue="general"] .badge')).to_have_text("Below target", timeout=WAIT)
    assert problems == []
    for client in (customer, agent):
        await client.close()
    await zh_context.close()
    await context.close()


async def test_a_gateway_without_admin_token_says_the_admin_api_is_off(browser: Browser, tmp_path: Path,
                                                                      sqlite_url: str) -> None:
    process = await GatewayProcess.write_config(tmp_path, gateway_config(sqlite_url)).start()
    try:
        # The socket says so at once, before any token: an error frame, then 4403.
        client = Client(await websockets.connect(process.url("/board/ws")))
        error = await client.expect("error")
        assert error["code"] == "admin_disabled" and "server.admin_token" in error["message"]
        assert await client.closed() == (4403, "admin API is off")
        page = await browser.new_page()
        await page.goto(process.http + "/board")
        await sign_in(page, "Admin token", "Sign in", "anything")
        await expect(page.get_by_role("alert")).to_have_text(re.compile("The admin API is off on this gateway: set "
                                                                        "server.admin_token"), timeout=WAIT)
        assert await page.evaluate("() => sessionStorage.getItem('contactgate:board:token')") is None
        await page.screenshot(path=artefact("board-5-admin-off.png"))
        await page.close()
    finally:
        await process.stop()
