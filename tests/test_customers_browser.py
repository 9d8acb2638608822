"""The widget's signed identity in headless chromium: data-user-id, data-user-email and
data-user-hash on the embedding page make the visitor the customer the CRM knows by that email."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest_asyncio
from playwright.async_api import Browser, expect

from gateway.customers.signed import signature
from tests.support import GatewayProcess, gateway_config
from tests.test_widget_browser import WAIT, new_page
from tests.test_widget_browser import site as embedding_site

SECRET = "widget-signing-key"
ADMIN = "admin-widget-token"


site = embedding_site  # the embedding page on its own origin (tests/test_widget_browser.py)


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str, site: dict[str, Any]) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url, channels=[{"type": "webchat", "allowed_origins": [site["url"]],
                                                   "identity_secret": SECRET}])
    config["server"]["admin_token"] = ADMIN
    process = await GatewayProcess.write_config(tmp_path, config).start()
    site["gateway"] = process.http
    yield process
    await process.stop()


async def test_a_signed_page_makes_the_visitor_the_known_customer(browser: Browser, gateway: GatewayProcess,
                                                                 site: dict[str, Any]) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        async with http.put(f"{gateway.http}/api/customers/crm-mei", json={
                "name": "Mei Chen", "identities": [{"kind": "email", "address": "mei@customer.example"}]}) as r:
            assert r.status == 201
        attributes = {"user-id": "u-42", "user-email": "mei@customer.example",
                      "user-hash": signature(SECRET, "u-42", "mei@customer.example")}
        context, page = await new_page(browser)
        try:
            await page.goto(site["url"] + "?" + urlencode(attributes))
            await page.get_by_role("button", name="Chat with us").click()
            await expect(page.locator("contactgate-chat .msg.bot")).to_have_count(1, timeout=WAIT)  # welcomed
            async with http.get(f"{gateway.http}/api/conversations?customer=crm-mei") as r:
                found = (await r.json())["conversations"]
            assert [c["channel"] for c in found] == ["webchat"]
            assert page.foreign == []  # type: ignore[attr-defined]
        finally:
            await context.close()
