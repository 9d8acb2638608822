"""Telegram test support: the Bot API stand-in served for a test, the gateway's config with a
``type: telegram`` channel pointed at it, Telegram's side of a webhook, and reading what the
gateway stored through the admin API."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from support import GatewayProcess, gateway_config, serving
from telegram_api import TOKEN, BotApi

ADMIN_TOKEN = "admin-test-token"
SECRET = "webhook-secret_42"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PATH = "/telegram/telegram"


@contextlib.asynccontextmanager
async def serve_api() -> AsyncIterator[BotApi]:
    """The Bot API stand-in on a free port (``.port``), for one test."""
    bot_api = BotApi()
    async with serving(bot_api.app()) as port:
        bot_api.port = port  # type: ignore[attr-defined]
        yield bot_api


def telegram_config(store_url: str, api: BotApi, **channel: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"type": "telegram", "name": "telegram", "token": TOKEN,
                                "api_base": f"http://127.0.0.1:{api.port}",  # type: ignore[attr-defined]
                                "mode": "webhook", "secret_token": SECRET,
                                "public_url": "https://support.acme.example" + PATH,
                                "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5},
                                "flood": {"per_bot": {"rate": 30, "burst": 30}, "per_chat": {"rate": 20, "burst": 20}},
                                "poll_timeout": 1}
    settings.update(channel)
    if settings["mode"] == "polling":
        settings.pop("public_url", None)
    config = gateway_config(store_url)
    config["channels"] = [{"type": "webchat"}, settings]
    config["server"]["admin_token"] = ADMIN_TOKEN
    config["attachments"] = {"max_bytes": 50_000, "max_message_bytes": 120_000}
    return config


async def start(tmp_path: Path, config: dict[str, Any]) -> GatewayProcess:
    return await GatewayProcess.write_config(tmp_path, config).start()


async def post_update(gateway: GatewayProcess, update: Any, *, secret: str | None = SECRET,
                      raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """Telegram's POST of one update to the webhook; (status, JSON answer)."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    body = raw if raw is not None else json.dumps(update).encode()
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.http + PATH, data=body, headers=headers) as response:
            return response.status, await response.json()


async def admin_get(gateway: GatewayProcess, path: str) -> Any:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(gateway.http + path) as response:
            assert response.status == 200, await response.text()
            if response.content_type == "application/json":
                return await response.json()
            return await response.read()


async def conversations(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return (await admin_get(gateway, "/api/conversations?channel=telegram"))["conversations"]


async def events(gateway: GatewayProcess, conversation_id: str) -> list[dict[str, Any]]:
    return (await admin_get(gateway, f"/api/conversations/{conversation_id}"))["events"]


async def only_conversation(gateway: GatewayProcess) -> tuple[str, list[dict[str, Any]]]:
    found = await conversations(gateway)
    assert len(found) == 1, found
    return found[0]["id"], await events(gateway, found[0]["id"])


def messages(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["author"], e["text"]) for e in found if e["kind"] == "message"]
