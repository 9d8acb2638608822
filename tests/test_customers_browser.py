"""The widget's identities in headless chromium: data-user-id, data-user-email and data-user-hash
on the embedding page make the visitor the customer the CRM knows by that email; a visitor who
typed an email in the pre-chat form proves it with a code the gateway mails."""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest_asyncio
from playwright.async_api import Browser, expect

from gateway.customers.signed import signature
from tests.browser import artefact
from tests.support import GatewayProcess, gateway_config
from support_mail import MailSink
from tests.test_widget_browser import WAIT, accessibility_problems, new_page
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


@pytest_asyncio.fixture
async def mail_gateway(tmp_path: Path, sqlite_url: str, site: dict[str, Any],
                       sink: MailSink) -> AsyncIterator[tuple[GatewayProcess, MailSink]]:
    """Web chat with a pre-chat email, and an email channel that mails the codes to a sink."""
    config = gateway_config(sqlite_url, channels=[
        {"type": "webchat", "allowed_origins": [site["url"]], "prechat": ["name", "email"]},
        {"type": "email", "name": "mail", "address": "support@acme.example", "display_name": "Acme Support",
         "listen": {"host": "127.0.0.1", "port": 0, "accept_recipients": ["acme.example"]},
         "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "timeout": 5},
         "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5}, "bot_interval": 0}])
    config["server"]["admin_token"] = ADMIN
    process = await GatewayProcess.write_config(tmp_path, config).start()
    site["gateway"] = process.http
    yield process, sink
    await process.stop()


async def test_the_visitor_verifies_the_pre_chat_email_with_a_mailed_code(
        browser: Browser, mail_gateway: tuple[GatewayProcess, MailSink], site: dict[str, Any]) -> None:
    gateway, sink = mail_gateway
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        async with http.put(f"{gateway.http}/api/customers/crm-lin", json={
                "name": "Lin Wei", "identities": [{"kind": "email", "address": "lin@customer.example"}]}) as r:
            assert r.status == 201
        context, page = await new_page(browser)
        widget = page.locator("contactgate-chat")
        try:
            await page.goto(site["url"])
            await page.get_by_role("button", name="Chat with us").click()
            await widget.get_by_role("textbox", name="Name").fill("Lin")
            await widget.get_by_role("textbox", name="Email").fill("Lin@Customer.example")
            await page.get_by_role("button", name="Start chat").click()
            ask = widget.get_by_role("button", name="Verify your email")
            await expect(ask).to_be_visible(timeout=WAIT)
            assert await accessibility_problems(page) == []
            await ask.click()
            code_box = widget.get_by_label("Verification code")
            await expect(code_box).to_be_focused(timeout=WAIT)
            [(_, raw)] = await sink.wait_for(1, timeout=20)
            mail = BytesParser(policy=policy.default).parsebytes(raw)
            assert mail["To"].addresses[0].addr_spec == "lin@customer.example"
            code = re.search(r"\b(\d{6})\b", mail.get_body(("plain",)).get_content()).group(1)  # type: ignore[union-attr]
            assert await accessibility_problems(page) == []
            await page.screenshot(path=artefact("widget-verify-code.png"))

            # Not six digits: said at once, nothing sent. A wrong code: the tries left.
            await code_box.fill("12")
            await widget.get_by_role("button", name="Verify", exact=True).click()
            await expect(widget.locator(".verify-note")).to_have_text("The code is 6 digits.", timeout=WAIT)
            await code_box.fill("000000" if code != "000000" else "111111")
            await code_box.press("Enter")
            await expect(widget.locator(".verify-note")).to_have_text(re.compile(r"That code is not right\. Tries left: \d"),
                                                                     timeout=WAIT)
            await code_box.fill(code)
            await code_box.press("Enter")
            await expect(widget.locator(".notice", has_text="Your email is verified.")).to_be_visible(timeout=WAIT)
            await expect(widget.locator(".verify")).to_be_hidden()

            # The visitor is now the customer the CRM knows by that email (the code's mail is a
            # conversation of its own); a reload offers no code again.
            async with http.get(f"{gateway.http}/api/conversations?customer=crm-lin") as r:
                found = (await r.json())["conversations"]
            assert sorted(c["channel"] for c in found) == ["mail", "webchat"]
            await page.reload()
            await page.get_by_role("button", name="Chat with us").click()
            await expect(widget.locator(".msg.bot").first).to_be_visible(timeout=WAIT)
            await expect(widget.locator(".verify")).to_be_hidden()
            assert page.foreign == []  # type: ignore[attr-defined]
        finally:
            await context.close()
