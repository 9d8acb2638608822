"""A real browser for the tests: Debian's chromium (scripts/ensure-browser.sh installs it),
driven by Playwright's async API. Never a browser Playwright downloads, never a skip: a missing
chromium fails the test that needs it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CONTACTGATE_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium phones home at start (component updates,
# sync, QUIC probes), which a closed network refuses and which a test must not depend on.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots of each state: looked at by people, not committed (.gitignore).
ARTEFACTS = REPO / "test-artefacts"


def require_chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"chromium is not installed at {CHROMIUM}: run `make test` (scripts/ensure-browser.sh "
                    "installs it) or set CONTACTGATE_TEST_CHROMIUM", pytrace=False)
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def artefact(name: str) -> str:
    """Where a screenshot called ``name`` goes (the folder is made on first use)."""
    ARTEFACTS.mkdir(exist_ok=True)
    return str(ARTEFACTS / name)
