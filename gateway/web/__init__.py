"""The pages the gateway serves itself: the chat widget's script and its files, and a demo page.

Files live in ``gateway/web/static/`` (package data, so ``pip install .`` serves them too) and
are read once at start. Every answer has an ``ETag`` and ``Last-Modified`` (a matching
``If-None-Match`` or ``If-Modified-Since`` gets 304), is gzipped for clients that accept it,
and has ``X-Content-Type-Options: nosniff``. Caching:

- a versioned URL (``/web/widget.css?v=<its content hash>``, as the widget asks for it) may be
  kept for a year (``immutable``): a new version has a new URL;
- anything else (``/widget.js``, whose URL sites embed and cannot change) is ``no-cache``:
  kept, but revalidated each time, so a new release reaches every site at once.

HTML pages get a strict Content-Security-Policy: scripts, styles and connections from the
gateway itself only (its websockets included), no inline script, no frames.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from importlib import resources
from typing import Iterable

from aiohttp import web

__all__ = ["Pages", "StaticFile"]

YEAR = 365 * 24 * 3600
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
         ".png": "image/png", ".txt": "text/plain"}
# The widget's stylesheet URL inside widget.js, replaced by its versioned URL when served.
CSS_PLACEHOLDER = "__CONTACTGATE_WIDGET_CSS__"
# An ES module's import of a sibling file (the console's modules), given its versioned URL when
# served, so every module may be cached for a year like the page's own script.
IMPORT = re.compile(rb'from "\./([\w-]+\.js)"')


@dataclass(frozen=True, slots=True)
class StaticFile:
    name: str
    body: bytes
    gzipped: bytes | None   # None when gzip does not make it smaller (a PNG)
    content_type: str
    etag: str               # '"<sha256 prefix>"'
    version: str            # the same hash, for ?v=
    modified: datetime      # the start of this process: files change only with a release

    @classmethod
    def of(cls, name: str, body: bytes, modified: datetime) -> "StaticFile":
        digest = hashlib.sha256(body).hexdigest()[:16]
        suffix = name[name.rfind("."):] if "." in name else ""
        content_type = TYPES.get(suffix, "application/octet-stream")
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        return cls(name, body, packed if len(packed) < len(body) else None, content_type, f'"{digest}"', digest,
                   modified)


def load_static(package: str = "gateway.web", folder: str = "static") -> dict[str, StaticFile]:
    modified = datetime.now(timezone.utc).replace(microsecond=0)
    root = resources.files(package).joinpath(folder)
    files = {entry.name: entry.read_bytes() for entry in root.iterdir() if entry.is_file()}
    # Libraries vendored as released (with their licences), served as /web/vendor/<name>.
    vendor = root.joinpath("vendor")
    if vendor.is_dir():
        files.update({f"vendor/{entry.name}": entry.read_bytes() for entry in vendor.iterdir() if entry.is_file()})
    # Our own ES modules get their imports rewritten to versioned URLs (_module); the rest as is.
    loaded = {name: StaticFile.of(name, body, modified) for name, body in files.items()
              if name != "widget.js" and not _own_module(name)}
    for name in files:
        if _own_module(name):
            _module(name, files, loaded, modified, ())
    if "widget.js" in files:
        css = loaded["widget.css"]
        script = files["widget.js"].replace(CSS_PLACEHOLDER.encode(), f"web/widget.css?v={css.version}".encode())
        loaded["widget.js"] = StaticFile.of("widget.js", script, modified)
    return loaded


def _own_module(name: str) -> bool:
    return name.endswith(".js") and name != "widget.js" and not name.startswith("vendor/")


def _module(name: str, files: dict[str, bytes], loaded: dict[str, StaticFile], modified: datetime,
            importers: tuple[str, ...]) -> StaticFile:
    """A script with its sibling imports versioned (those first: a module's hash covers theirs)."""
    if name in loaded:
        return loaded[name]
    if name in importers or name not in files:
        raise ValueError(f"gateway/web/static: {' -> '.join((*importers, name))}: an import cycle or a missing file")

    def versioned(match: re.Match[bytes]) -> bytes:
        child = _module(match[1].decode(), files, loaded, modified, (*importers, name))
        return b'from "./' + match[1] + b"?v=" + child.version.encode() + b'"'

    loaded[name] = StaticFile.of(name, IMPORT.sub(versioned, files[name]), modified)
    return loaded[name]


def html_csp(request: web.Request) -> str:
    """The policy of a page of ours: only the gateway itself, and its websockets."""
    host = request.host
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"connect-src 'self' ws://{host} wss://{host}; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def _not_modified(request: web.Request, file: StaticFile) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return file.etag in tags or "*" in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            return parsedate_to_datetime(since) >= file.modified
        except (TypeError, ValueError):
            return False
    return False


def file_response(request: web.Request, file: StaticFile, *, versioned: bool = False,
                  extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = {"ETag": file.etag, "Last-Modified": format_datetime(file.modified, usegmt=True),
               "Cache-Control": f"public, max-age={YEAR}, immutable" if versioned else "no-cache",
               "X-Content-Type-Options": "nosniff", "Vary": "Accept-Encoding", **(extra_headers or {})}
    if _not_modified(request, file):
        return web.Response(status=304, headers=headers)
    body = file.body
    if file.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", "").lower():
        body = file.gzipped
        headers["Content-Encoding"] = "gzip"
    charset = "utf-8" if file.content_type.startswith("text/") or file.content_type.endswith("+xml") else None
    response = web.Response(body=body, headers=headers, content_type=file.content_type, charset=charset)
    return response


DEMO_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>contactgate: chat demo</title>
<link rel="stylesheet" href="web/demo.css">
</head>
<body>
<main>
<h1>contactgate</h1>
<p>This page embeds the chat widget with one tag:</p>
<pre><code>&lt;script src="{origin}/widget.js" data-channel="{channel}" async&gt;&lt;/script&gt;</code></pre>
<p>Open the chat with the button at the bottom right. Ask the bot about tracking or prices, or type
<kbd>agent</kbd> to talk to a person.</p>
</main>
<script src="widget.js" data-channel="{channel}" async></script>
</body>
</html>
"""


CONSOLE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>contactgate: agent console</title>
<link rel="stylesheet" href="web/console.css?v={css}">
</head>
<body>
<div id="console" class="console"></div>
<script type="module" src="web/console.js?v={js}"></script>
</body>
</html>
"""


BOARD_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>contactgate: supervisor board</title>
<link rel="stylesheet" href="web/vendor/uPlot.min.css?v={chart_css}">
<link rel="stylesheet" href="web/board.css?v={css}">
</head>
<body>
<div id="board" class="board"></div>
<script src="web/vendor/uPlot.iife.min.js?v={chart_js}"></script>
<script type="module" src="web/board.js?v={js}"></script>
</body>
</html>
"""


class Pages:
    """Routes for the widget (``/widget.js``, ``/web/{name}``), the demo page ``/chat``, the
    agent console ``/console`` and the supervisor board ``/board``."""

    def __init__(self, webchat_channels: Iterable[str]) -> None:
        self.files = load_static()
        self.channels = list(webchat_channels)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/widget.js", self.widget), web.get("/web/{name:(?:vendor/)?[^/]+}", self.static),
                web.get("/chat", self.demo), web.get("/console", self.console), web.get("/board", self.board)]

    async def widget(self, request: web.Request) -> web.Response:
        # Any site may load the script (a <script> tag needs no CORS); what it may then open is
        # decided by the channel's allowed_origins.
        return file_response(request, self.files["widget.js"])

    async def static(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["name"])
        if file is None or file.name == "widget.js":
            raise web.HTTPNotFound(text="no such file")
        return file_response(request, file, versioned=request.query.get("v") == file.version)

    async def demo(self, request: web.Request) -> web.Response:
        if not self.channels:
            raise web.HTTPNotFound(text="no web chat channel is configured")
        channel = request.query.get("channel", self.channels[0])
        if channel not in self.channels:
            raise web.HTTPNotFound(text=f"no web chat channel {channel!r}")
        origin = f"{request.scheme}://{request.host}"
        return self._page(request, "chat.html", DEMO_PAGE.format(origin=_escape(origin), channel=_escape(channel)))


    async def console(self, request: web.Request) -> web.Response:
        # The token is typed into the page and kept in sessionStorage: never in a URL or cookie.
        return self._page(request, "console.html", CONSOLE_PAGE.format(css=self.files["console.css"].version,
                                                                      js=self.files["console.js"].version))


    async def board(self, request: web.Request) -> web.Response:
        # The admin token is typed into the page and kept in sessionStorage: never in a URL or cookie.
        files = self.files
        return self._page(request, "board.html", BOARD_PAGE.format(
            css=files["board.css"].version, js=files["board.js"].version,
            chart_css=files["vendor/uPlot.min.css"].version, chart_js=files["vendor/uPlot.iife.min.js"].version))

    def _page(self, request: web.Request, name: str, html: str) -> web.Response:
        """A page of ours: under the strict policy, sending no referrer."""
        page = StaticFile.of(name, html.encode(), self.files["widget.js"].modified)
        return file_response(request, page, extra_headers={"Content-Security-Policy": html_csp(request),
                                                           "Referrer-Policy": "no-referrer"})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
