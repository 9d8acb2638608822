"""The pages' foundation against a real gateway: static files with cache headers, gzip and
nosniff, the demo page's Content-Security-Policy, the widget's channel settings with CORS, and
the Origin check on both websockets (cross-site websocket hijacking)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import yaml

from gateway.config import ConfigError, parse_config
from tests.support import ALICE_TOKEN, GatewayProcess, gateway_config

SITE = "https://www.acme.example"
PROXY_NAME = "https://desk.acme.example"


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(sqlite_url, channels=[{"type": "webchat", "allowed_origins": [SITE + ":443"],
                                                   "prechat": ["name"]}])
    config["server"]["allowed_origins"] = [PROXY_NAME]
    process = await GatewayProcess.write_config(tmp_path, config).start()
    yield process
    await process.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # auto_decompress off: the test looks at what went over the wire.
    async with aiohttp.ClientSession(auto_decompress=False, headers={"Accept-Encoding": "identity"}) as session:
        yield session


async def test_widget_script_is_revalidated_gzipped_and_not_sniffed(gateway: GatewayProcess,
                                                                   http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.http + "/widget.js", headers={"Accept-Encoding": "gzip"}) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/javascript")
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Cache-Control"] == "no-cache"  # the URL sites embed never changes
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "Accept-Encoding" in answer.headers["Vary"]
        etag, modified = answer.headers["ETag"], answer.headers["Last-Modified"]
        script = gzip.decompress(await answer.read()).decode()
    assert "attachShadow" in script and "__CONTACTGATE_WIDGET_CSS__" not in script
    async with http.get(gateway.http + "/widget.js", headers={"Accept-Encoding": "identity"}) as plain:
        assert "Content-Encoding" not in plain.headers and (await plain.read()).decode() == script
    async with http.get(gateway.http + "/widget.js", headers={"If-None-Match": etag}) as again:
        assert again.status == 304 and await again.read() == b""
    async with http.get(gateway.http + "/widget.js", headers={"If-Modified-Since": modified}) as since:
        assert since.status == 304


async def test_versioned_files_are_kept_for_a_year_others_revalidated(gateway: GatewayProcess,
                                                                     http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.http + "/widget.js", headers={"Accept-Encoding": "identity"}) as answer:
        script = (await answer.read()).decode()
    css_url = re.search(r"web/widget\.css\?v=[0-9a-f]{16}", script).group(0)
    async with http.get(f"{gateway.http}/{css_url}") as css:
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
        assert css.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for stale in ("/web/widget.css", "/web/widget.css?v=0123456789abcdef"):
        async with http.get(gateway.http + stale) as answer:
            assert answer.status == 200 and answer.headers["Cache-Control"] == "no-cache"
    for missing in ("/web/nope.js", "/web/widget.js", "/web/..%2Fconfig.py"):
        async with http.get(gateway.http + missing) as answer:
            assert answer.status == 404, missing


async def test_demo_page_has_a_strict_content_security_policy(gateway: GatewayProcess,
                                                              http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.http + "/chat") as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")
        csp = answer.headers["Content-Security-Policy"]
        page = (await answer.read()).decode()
    rules = dict(rule.strip().split(" ", 1) for rule in csp.split(";"))
    assert rules["default-src"] == "'self'" and rules["script-src"] == "'self'"
    assert rules["connect-src"] == f"'self' ws://127.0.0.1:{gateway.port} wss://127.0.0.1:{gateway.port}"
    assert rules["frame-ancestors"] == "'none'" and rules["object-src"] == "'none'"
    assert "unsafe-inline" not in csp
    assert '<script src="widget.js" data-channel="webchat" async></script>' in page
    assert "<script>" not in page  # no inline script: the policy would block it anyway
    async with http.get(gateway.http + "/chat?channel=nope") as answer:
        assert answer.status == 404


async def test_console_page_has_the_strict_policy_and_versioned_files(gateway: GatewayProcess,
                                                                     http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.http + "/console") as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")
        csp = answer.headers["Content-Security-Policy"]
        page = (await answer.read()).decode()
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "<script>" not in page
    script = re.search(r'<script type="module" src="(web/console\.js\?v=[0-9a-f]{16})"></script>', page)
    style = re.search(r'<link rel="stylesheet" href="(web/console\.css\?v=[0-9a-f]{16})">', page)
    assert script and style, page
    for path in (script.group(1), style.group(1)):
        async with http.get(f"{gateway.http}/{path}") as answer:
            assert answer.status == 200
            assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # The console's modules import each other by versioned URLs too: all of them kept a year.
    async with http.get(f"{gateway.http}/{script.group(1)}") as answer:
        imports = re.findall(r'from "\./([\w-]+\.js)(\?v=[0-9a-f]{16})?"', await answer.text())
    assert len(imports) >= 5 and all(version for _, version in imports), imports
    for name, version in imports:
        async with http.get(f"{gateway.http}/web/{name}{version}") as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/javascript")
            assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_widget_settings_answer_cors_only_to_allowed_sites(gateway: GatewayProcess,
                                                                 http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.http + "/widget/webchat.json", headers={"Origin": SITE}) as answer:
        assert answer.status == 200 and answer.headers["Access-Control-Allow-Origin"] == SITE
        assert await answer.json() == {"channel": "webchat", "path": "/webchat/ws",
                                       "attachments_path": "/webchat/attachments", "prechat": ["name"],
                                       "uploads": True, "max_bytes": 10 * 1024 * 1024, "verify_email": False}
    async with http.get(gateway.http + "/widget/webchat.json", headers={"Origin": "https://evil.example"}) as answer:
        assert "Access-Control-Allow-Origin" not in answer.headers
    async with http.options(gateway.http + "/webchat/attachments/x",
                            headers={"Origin": SITE, "Access-Control-Request-Method": "GET",
                                     "Access-Control-Request-Headers": "authorization"}) as answer:
        assert answer.status == 204 and answer.headers["Access-Control-Allow-Origin"] == SITE
        assert answer.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    async with http.get(gateway.http + "/webchat/attachments/x", headers={"Origin": SITE}) as answer:
        assert answer.status == 401 and answer.headers["Access-Control-Allow-Origin"] == SITE


async def opens(http: aiohttp.ClientSession, url: str, origin: str | None) -> int:
    """101 if the websocket opened, else the status of the refusal."""
    try:
        ws = await http.ws_connect(url, origin=origin)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


WEBCHAT_ORIGINS = [
    (None, 101),                            # not a browser (scripts, the README's clients)
    (SITE, 101),                            # the channel's allowed_origins (":443" normalised away)
    ("HTTPS://WWW.ACME.EXAMPLE", 101),
    (PROXY_NAME, 101),                      # server.allowed_origins: the gateway's other name
    ("own", 101),                           # the gateway's own pages (/chat)
    ("http://www.acme.example", 403),       # another scheme is another site
    ("https://evil.example", 403),
    ("null", 403),                          # a sandboxed frame or a file:// page
]
AGENT_ORIGINS = [
    (None, 101),
    ("own", 101),
    (PROXY_NAME, 101),
    (SITE, 403),                            # a site that embeds the widget is not the desk
    ("https://evil.example", 403),
    ("http://127.0.0.1:1", 403),            # the same host on another port is another origin
]


async def test_webchat_origin(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    for origin, status in WEBCHAT_ORIGINS:
        origin = gateway.http if origin == "own" else origin
        assert await opens(http, gateway.url("/webchat/ws"), origin) == status, origin


async def test_agent_origin(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    for origin, status in AGENT_ORIGINS:
        origin = gateway.http if origin == "own" else origin
        assert await opens(http, gateway.url("/agent/ws"), origin) == status, origin
        if status == 101:  # and an allowed page's socket works as ever
            async with http.ws_connect(gateway.url("/agent/ws"), origin=origin) as ws:
                await ws.send_json({"type": "auth", "token": ALICE_TOKEN})
                assert (await ws.receive_json(timeout=10))["type"] == "ready"


@pytest.mark.parametrize("where, value, message", [
    ("server", ["https://desk.example/path"], "leave out the path"),
    ("server", ["*"], "any site open an agent"),
    ("server", ["desk.example"], "is not an origin"),
    ("channel", ["ftp://www.example"], "is not an origin"),
])
def test_bad_origins_are_config_errors(where: str, value: list[str], message: str) -> None:
    config = gateway_config("sqlite:///x.db")
    if where == "server":
        config["server"]["allowed_origins"] = value
    else:
        config["channels"] = [{"type": "webchat", "allowed_origins": value}]
    with pytest.raises(ConfigError, match=message):
        parse_config(yaml.safe_dump(config))


def test_any_site_may_embed_when_the_channel_says_so() -> None:
    config = parse_config(yaml.safe_dump(gateway_config("sqlite:///x.db",
                                                        channels=[{"type": "webchat", "allowed_origins": ["*"]}])))
    assert config.channels[0].settings["allowed_origins"] == ["*"]
