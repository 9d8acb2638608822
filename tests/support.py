"""Test support: the real gateway as a subprocess, and real websocket clients for customers
and agents. Nothing here fakes the gateway: every test talks to it over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import asyncpg
import websockets
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
FRAME_TIMEOUT = 10.0

ALICE_TOKEN = "alice-test-token"
BOB_TOKEN = "bob-test-token"


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> Any:
    """Serve an aiohttp app (a stand-in for a service on the internet, or a server under test)
    on a free port of 127.0.0.1; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def gateway_config(store_url: str, **sections: Any) -> dict[str, Any]:
    """The test config: the shipped FAQ, two tiers, two queues, Alice (both) and Bob (general)."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "max_frame_bytes": 4096, "log_format": "json",
                   "shutdown_timeout": 5},
        "store": {"url": store_url},
        "channels": [{"type": "webchat"}],
        "selfservice": {"faq": str(REPO / "faq" / "shipping_kb.yaml"), "max_unanswered": 2},
        "tiers": {"default": "standard", "rules": [{"tier": "vip", "when": {"email_domain": ["vip.example"]}}]},
        "queues": [{"name": "vip_desk", "priority": {"vip": 10}},
                   {"name": "general", "priority": {"vip": 10, "standard": 0}}],
        "routing": {"rules": [{"name": "vip-first", "when": {"tier": "vip"}, "queue": "vip_desk"}],
                    "default_queue": "general"},
        # Roomy limits: tests that are not about limits open many customers from 127.0.0.1 and
        # send in bursts (tests/test_limits_e2e.py sets its own).
        "limits": {"new_conversations_per_address": {"rate": 100, "burst": 1000},
                   "messages_per_connection": {"rate": 1000, "burst": 1000},
                   "messages_per_customer": {"rate": 1000, "burst": 1000},
                   "agent_messages_per_connection": {"rate": 1000, "burst": 1000}},
        "agents": [
            {"id": "alice", "name": "Alice", "token": ALICE_TOKEN, "capacity": 2, "queues": ["vip_desk", "general"]},
            {"id": "bob", "name": "Bob", "token": BOB_TOKEN, "capacity": 1, "queues": ["general"]},
        ],
    }
    config.update(sections)
    return config


class GatewayProcess:
    """``contactgate serve`` on a free port; its JSON log lines are kept in ``logs``."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.port = 0
        self.logs: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def write_config(cls, directory: Path, config: dict[str, Any]) -> "GatewayProcess":
        path = directory / "config.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        return cls(path)

    async def start(self, preexec_fn: Callable[[], None] | None = None) -> "GatewayProcess":
        """``preexec_fn`` runs in the child before the gateway (e.g. to lower its file limit)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path),
            cwd=str(REPO), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            preexec_fn=preexec_fn)
        listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_logs(listening))
        try:
            self.port = await asyncio.wait_for(listening, 60)
        except BaseException:
            await self.stop()
            raise AssertionError(f"gateway did not start; log:\n{self.log_text()}")
        return self

    async def _read_logs(self, listening: asyncio.Future[int]) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line, "raw": True}
            self.logs.append(record)
            if record.get("msg") == "listening" and not listening.done():
                listening.set_result(int(record["port"]))
        if not listening.done():
            listening.set_exception(RuntimeError("gateway exited before listening"))

    def log_text(self) -> str:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in self.logs)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode


async def raw_execute(url: str, sql: str, *args: object) -> None:
    """One statement with the raw driver (``?`` placeholders), as code of an older version wrote."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute(sql, args)
        return
    parts = sql.split("?")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1)), *args)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_away(pg_url: str, pg_admin_dsn: str) -> Any:
    """PostgreSQL goes away for the gateway on ``pg_url`` inside the block: no new connections,
    its sessions killed. It comes back when the block ends, however it ends."""
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


async def serve_until_exit(config_path: Path, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    """``contactgate serve`` for a config it must refuse: it has to end by itself (within
    ``timeout``, else this fails). Its exit code and output come back. (GatewayProcess is for
    gateways that start: asyncio may lose the exit code of a child that ends at once.)"""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout)


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, type_: str, timeout: float = FRAME_TIMEOUT, **fields: Any) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == type_, f"expected {type_!r} frame, got {frame}"
        for key, value in fields.items():
            assert frame.get(key) == value, f"expected {key}={value!r} in {frame}"
        return frame

    async def next(self, type_: str, timeout: float = FRAME_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The next frame of this type (and fields), skipping any other (bot answers, positions,
        presence); an error frame that was not asked for fails at once."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == type_ and all(frame.get(k) == v for k, v in fields.items()):
                    return frame
                assert frame["type"] != "error", f"waiting for {type_!r}, got {frame}"

    async def expect_nothing(self, within: float = 0.5) -> None:
        """No frame arrives: the check behind 'exactly once'."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), within)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")

    async def closed(self, timeout: float = FRAME_TIMEOUT) -> tuple[int | None, str]:
        """Wait until the server closes; return (code, reason)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        await self.ws.wait_closed()
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.ws.close()


class Customer(Client):
    token: str | None = None
    conversation_id: str | None = None
    last_seq: int = 0

    @classmethod
    async def connect(cls, gateway: GatewayProcess, **hello: Any) -> "Customer":
        """Connect and say hello; returns after the welcome."""
        customer = cls(await websockets.connect(gateway.url("/webchat/ws")))
        await customer.hello(**hello)
        return customer

    async def hello(self, token: str | None = None, last_seq: int = 0, **profile: Any) -> dict[str, Any]:
        await self.send(type="hello", token=token, last_seq=last_seq, **profile)
        welcome = await self.expect("welcome")
        self.token, self.conversation_id = welcome["token"], welcome["conversation_id"]
        return welcome

    async def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        """The next conversation event; checks seq only grows (events internal to routing, such
        as offers, have a seq too but are not shown to customers)."""
        frame = await self.expect(type_, **fields)
        assert frame["seq"] > self.last_seq, f"seq went back: after {self.last_seq} got {frame}"
        self.last_seq = frame["seq"]
        return frame

    async def say(self, text: str, client_id: str) -> dict[str, Any]:
        await self.send(type="message", id=client_id, text=text)
        return await self.event("ack", id=client_id)


class Agent(Client):
    @classmethod
    async def connect(cls, gateway: GatewayProcess, token: str, **auth: Any) -> "Agent":
        agent = cls(await websockets.connect(gateway.url("/agent/ws")))
        await agent.send(type="auth", token=token, **auth)
        return agent
