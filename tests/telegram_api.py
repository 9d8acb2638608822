"""A stand-in for Telegram's Bot API (it is on the internet): an aiohttp app speaking its JSON
wire format, so the real python-telegram-bot client talks to it through ``api_base``.

``POST /bot<token>/<method>`` with parameters as a query string, a form, multipart or JSON;
answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": ..., "description":
..., "parameters": {"retry_after": ...}}``; files at ``GET /file/bot<token>/<file_path>``.
Methods: getMe, setWebhook, deleteWebhook, getUpdates (a long poll on the updates a test
pushes; an offset confirms, and forgets, the updates before it), sendMessage, sendPhoto,
sendDocument, sendChatAction, getFile, answerCallbackQuery.

A test scripts failures (``fail``: 429 with retry_after, 403, 400, 500; ``hang``) and reads
every call (``calls``, ``wait_for``). Serve it with tests/support.serving.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAtest-token_for_the_stand-in"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Acme Support", "username": "acme_support_bot",
            "can_join_groups": False, "can_read_all_group_messages": False, "supports_inline_queries": False}
MAX_DOWNLOAD = 20 * 1024 * 1024


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str | None, bytes, str]] = field(default_factory=dict)  # part -> (filename, bytes, type)

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    def json(self, key: str) -> Any:
        value = self.params.get(key)
        return json.loads(value) if isinstance(value, str) else value

    def file(self, key: str) -> tuple[str | None, bytes, str] | None:
        """The upload of parameter ``key``: its own part, or the part an attach:// URI names."""
        value = self.params.get(key)
        if isinstance(value, str) and value.startswith("attach://"):
            return self.files.get(value.removeprefix("attach://"))
        return self.files.get(key)


@dataclass
class Failure:
    method: str
    chat_id: int | None
    status: int
    description: str
    retry_after: int | None
    times: int
    hang: asyncio.Event | None = None


class BotApi:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.pending: list[dict[str, Any]] = []     # updates not confirmed by an offset yet
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, bytes)
        self.webhook: dict[str, Any] | None = None
        self._failures: list[Failure] = []
        self._changed = asyncio.Condition()
        self._update_ids = itertools.count(10_000)
        self._message_ids = itertools.count(500)
        self._file_ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        return app

    # what a test does ----------------------------------------------------------------------------
    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (its update_id given, or the next one)."""
        update = {"update_id": next(self._update_ids), **update}
        self.pending.append(update)
        asyncio.get_running_loop().create_task(self._notify())
        return update

    def new_update_id(self) -> int:
        return next(self._update_ids)

    def add_file(self, data: bytes, *, size: int | None = None, suffix: str = "jpg") -> str:
        """A file a customer sent; returns its file_id. ``size``: what Telegram claims it has."""
        number = next(self._file_ids)
        file_id = f"FILE{number:04d}"
        self.files[file_id] = (f"documents/file_{number}.{suffix}", data)
        if size is not None:
            self.files[file_id] = (self.files[file_id][0], data + b"\0" * max(size - len(data), 0))
        return file_id

    def fail(self, method: str, *, status: int = 429, chat_id: int | None = None, retry_after: int | None = None,
             description: str | None = None, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (for ``chat_id``, if given) fail so."""
        if description is None:
            description = {429: f"Too Many Requests: retry after {retry_after}",
                           403: "Forbidden: bot was blocked by the user",
                           400: "Bad Request: chat not found"}.get(status, "Internal Server Error")
        self._failures.append(Failure(method, chat_id, status, description, retry_after, times))

    def hang(self, method: str, *, chat_id: int | None = None, times: int = 1) -> asyncio.Event:
        """The next calls of ``method`` get no answer until the returned event is set."""
        release = asyncio.Event()
        self._failures.append(Failure(method, chat_id, 0, "", None, times, hang=release))
        return release

    def sent(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (chat_id is None or c.chat_id == chat_id)]

    async def wait_for(self, method: str, count: int = 1, chat_id: int | None = None,
                       timeout: float = 15.0) -> list[Call]:
        """At least ``count`` calls of ``method`` (to ``chat_id``); all of them."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.sent(method, chat_id)) >= count)
        return self.sent(method, chat_id)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # the wire ------------------------------------------------------------------------------------
    async def _method(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params: dict[str, Any] = dict(request.query)
        files: dict[str, tuple[str | None, bytes, str]] = {}
        if request.method == "POST":
            if request.content_type == "application/json":
                params.update(await request.json())
            elif request.can_read_body:
                for key, value in (await request.post()).items():
                    if isinstance(value, web.FileField):
                        files[key] = (value.filename, value.file.read(), value.content_type)
                    else:
                        params[key] = value
        method = request.match_info["method"]
        call = Call(method, params, files)
        self.calls.append(call)
        await self._notify()
        failure = self._failure(call)
        if failure is not None:
            if failure.hang is not None:
                await failure.hang.wait()
            else:
                return _error(failure.status, failure.description, failure.retry_after)
        handler = getattr(self, "_" + method, None)
        if handler is None:
            return _error(404, "Not Found")
        return await handler(call)

    def _failure(self, call: Call) -> Failure | None:
        for failure in self._failures:
            if failure.method == call.method and failure.times > 0 and \
                    (failure.chat_id is None or failure.chat_id == call.chat_id):
                failure.times -= 1
                return failure
        return None

    async def _getMe(self, call: Call) -> web.Response:
        return _ok(BOT_USER)

    async def _setWebhook(self, call: Call) -> web.Response:
        self.webhook = {"url": call.params.get("url"), "secret_token": call.params.get("secret_token"),
                        "allowed_updates": call.json("allowed_updates")}
        return _ok(True)

    async def _deleteWebhook(self, call: Call) -> web.Response:
        self.webhook = None
        return _ok(True)

    async def _getUpdates(self, call: Call) -> web.Response:
        if self.webhook is not None:
            return _error(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
        offset = int(call.params["offset"]) if call.params.get("offset") not in (None, "") else None
        timeout = float(call.params.get("timeout") or 0)
        limit = int(call.params.get("limit") or 100)
        if offset is not None:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not self.pending and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if offset is not None:
                    self.pending = [u for u in self.pending if u["update_id"] >= offset]
        return _ok(self.pending[:limit])

    def _message(self, call: Call, **content: Any) -> dict[str, Any]:
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "from": BOT_USER,
                   "chat": {"id": call.chat_id, "type": "private", "first_name": "Customer"}, **content}
        if call.params.get("reply_markup"):
            message["reply_markup"] = call.json("reply_markup")
        return message

    async def _sendMessage(self, call: Call) -> web.Response:
        text = call.params.get("text") or ""
        if not text:
            return _error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return _error(400, "Bad Request: message is too long")
        return _ok(self._message(call, text=text))

    def _upload(self, call: Call, key: str) -> tuple[str, bytes] | None:
        upload = call.file(key)
        if upload is None:
            return None
        name, data, _ = upload
        return name or key, data

    async def _sendPhoto(self, call: Call) -> web.Response:
        upload = self._upload(call, "photo")
        if upload is None:
            return _error(400, "Bad Request: there is no photo in the request")
        file_id = self.add_file(upload[1])
        photo = [{"file_id": file_id, "file_unique_id": "u" + file_id, "width": 640, "height": 480,
                  "file_size": len(upload[1])}]
        return _ok(self._message(call, photo=photo, **({"caption": call.params["caption"]} if call.params.get("caption") else {})))

    async def _sendDocument(self, call: Call) -> web.Response:
        upload = self._upload(call, "document")
        if upload is None:
            return _error(400, "Bad Request: there is no document in the request")
        file_id = self.add_file(upload[1], suffix="bin")
        document = {"file_id": file_id, "file_unique_id": "u" + file_id, "file_name": upload[0],
                    "file_size": len(upload[1])}
        return _ok(self._message(call, document=document))

    async def _sendChatAction(self, call: Call) -> web.Response:
        return _ok(True)

    async def _answerCallbackQuery(self, call: Call) -> web.Response:
        return _ok(True)

    async def _getFile(self, call: Call) -> web.Response:
        file_id = call.params.get("file_id", "")
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        path, data = self.files[file_id]
        if len(data) > MAX_DOWNLOAD:
            return _error(400, "Bad Request: file is too big")
        return _ok({"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(data), "file_path": path})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        path = request.match_info["path"]
        self.calls.append(Call("download", {"path": path}))
        await self._notify()
        for file_path, data in self.files.values():
            if file_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return _error(404, "Not Found")


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


# updates as Telegram writes them -------------------------------------------------------------------
def user(user_id: int, first_name: str = "Mei", last_name: str | None = "Chen", username: str | None = "meichen",
         language_code: str | None = "en") -> dict[str, Any]:
    found = {"id": user_id, "is_bot": False, "first_name": first_name}
    found.update({k: v for k, v in (("last_name", last_name), ("username", username),
                                    ("language_code", language_code)) if v is not None})
    return found


_message_ids = itertools.count(1)


def message(chat_id: int, text: str | None = None, *, sender: dict[str, Any] | None = None,
            message_id: int | None = None, **content: Any) -> dict[str, Any]:
    sender = sender or user(chat_id)
    found: dict[str, Any] = {"message_id": message_id or next(_message_ids), "date": int(time.time()), "from": sender,
                             "chat": {"id": chat_id, "type": "private", "first_name": sender["first_name"]}}
    if text is not None:
        found["text"] = text
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            found["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    found.update(content)
    return found


def callback(chat_id: int, data: str, on: dict[str, Any], query_id: str = "cbq-1") -> dict[str, Any]:
    """A button press on message ``on`` (as the bot sent it, keyboard and all)."""
    return {"id": query_id, "from": user(chat_id), "chat_instance": "ci-1", "data": data, "message": on}
