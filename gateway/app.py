"""The aiohttp application: everything is built here, started in order and stopped in reverse.

Construction is plain and synchronous (so routes can be mounted); all I/O happens in the
``cleanup_ctx`` generators: the store opens first and closes last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from adapters import registry
from adapters.base import Adapter

from .config import GatewayConfig
from .connections import ConnectionGate, ConnectionLimits, current_file_limit
from .api import AdminApi, api_errors
from .board.feed import BoardFeed
from .hub import AgentHub
from .reload import ConfigReloader
from .model import Conversation, Event
from .pipeline import Pipeline
from .selfservice import SelfService
from .store import Store, StoreError, make_store
from .tasks import TaskSet
from .web import Pages
from .websocket import OPEN_WEBSOCKETS, SEND_BUFFER_BYTES, SENDER_TASKS, close_all

log = logging.getLogger("contactgate.app")

CONFIG = web.AppKey("config", GatewayConfig)
STORE = web.AppKey("store", Store)  # type: ignore[type-abstract]
PIPELINE = web.AppKey("pipeline", Pipeline)
HUB = web.AppKey("hub", AgentHub)
ADAPTERS = web.AppKey("adapters", dict)
RELOADER = web.AppKey("reloader", ConfigReloader)
CONNECTIONS = web.AppKey("connections", ConnectionGate)
BOARD = web.AppKey("board", BoardFeed)


def create_app(config: GatewayConfig, config_path: Path | None = None,
               selfservice: SelfService | None = None, server_overrides: dict | None = None) -> web.Application:
    import weakref

    app = web.Application(client_max_size=config.server.max_frame_bytes * 4)
    store = make_store(config.store.url)
    pipeline = Pipeline(config, store, selfservice or SelfService.from_config(config.selfservice))
    hub = AgentHub(pipeline)
    adapters: dict[str, Adapter] = {
        channel.channel_name: registry.create(channel.type, channel.channel_name, channel.settings, pipeline)
        for channel in config.channels
    }

    async def to_customer(conversation: Conversation, event: Event) -> None:
        adapter = adapters.get(conversation.channel)
        if adapter is not None:
            await adapter.send(conversation, event)

    async def status_to_customer(conversation_id: str, channel: str, status: dict) -> None:
        adapter = adapters.get(channel)
        if adapter is not None:
            await adapter.notify(conversation_id, status)

    pipeline.subscribe(to_customer)
    pipeline.subscribe_status(status_to_customer)

    app[CONFIG], app[STORE], app[PIPELINE], app[HUB], app[ADAPTERS] = config, store, pipeline, hub, adapters
    app[OPEN_WEBSOCKETS] = weakref.WeakSet()
    app[SEND_BUFFER_BYTES], app[SENDER_TASKS] = config.server.max_send_buffer_bytes, TaskSet()
    app[RELOADER] = reloader = ConfigReloader(config_path, pipeline, server_overrides)
    app[CONNECTIONS] = gate = ConnectionGate(ConnectionLimits.for_server(config.server, current_file_limit()))
    app.middlewares.append(gate.middleware)
    app.middlewares.append(api_errors)
    app[BOARD] = board = BoardFeed(pipeline)
    api = AdminApi(pipeline, reloader, board)
    api.registry.register(gate)
    app.router.add_routes(api.routes())
    app.router.add_routes(board.routes())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_routes(hub.routes())
    app.router.add_routes(Pages(c.channel_name for c in config.channels if c.type == "webchat").routes())
    for adapter in adapters.values():
        app.router.add_routes(adapter.routes())
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_routing_ctx)
    app.cleanup_ctx.append(_adapters_ctx)
    app.on_shutdown.append(_going_away)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    log.info("store open", extra={"engine": type(app[STORE]).__name__})
    yield
    await app[STORE].close()
    log.info("store closed")


async def _routing_ctx(app: web.Application) -> AsyncIterator[None]:
    pipeline = app[PIPELINE]
    await pipeline.recover()
    await pipeline.start()
    await pipeline.dispatch()
    await app[RELOADER].start(app[CONFIG].server.reload_poll)
    await app[BOARD].start()
    yield
    await app[BOARD].stop()
    await app[RELOADER].stop()
    await pipeline.stop()


async def _adapters_ctx(app: web.Application) -> AsyncIterator[None]:
    started: list[Adapter] = []
    try:
        for adapter in app[ADAPTERS].values():
            started.append(adapter)     # before start: one that fails half way is stopped too
            await adapter.start()
        yield
    finally:
        for adapter in reversed(started):
            try:
                await adapter.stop()
            except Exception:
                log.exception("adapter stop failed", extra={"channel": adapter.name})


async def _going_away(app: web.Application) -> None:
    await app[HUB].stop()
    for adapter in app[ADAPTERS].values():
        await adapter.stop()
    await close_all(app)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except Exception as exc:  # any failure to reach the store means "not ready", never a 500
        reason = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
        return web.json_response({"status": "unavailable", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})
