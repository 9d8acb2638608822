"""The load: customer and agent websockets driven from separate worker processes.

One client implementation serves both the gateway and the relay (they speak the same frames).
Each worker process owns a slice of the agents and of the customers; the gateway decides which
agent gets which customer, so an agent simply answers whatever customer message reaches it, and
the customer that sent it measures the round trip on its own clock:

    customer --message--> server --message--> agent --message--> server --message--> customer
    t0                                                                                t1

A worker is driven by commands over a pipe from the orchestrator (bench.run) so that all
workers start each phase at the same monotonic instant (CLOCK_MONOTONIC is system-wide).
The email figure's SMTP load runs in the same workers (``do_mail``, bench.mail_client).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from . import mail_client
from .relay import raise_nofile_limit

FRAME_TIMEOUT = 60.0  # a setup step (hello, handoff) that takes longer is an error
ROUND_TRIP_TIMEOUT = 30.0
TIME_LIMIT = "not done within the time limit"


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


class Window:
    """Which round trips count: sent in [start, end), answered by ``deadline``."""

    def __init__(self, start: float, end: float, deadline: float) -> None:
        self.start, self.end, self.deadline = start, end, deadline
        self.latencies: list[float] = []
        self.sent = 0        # sent inside the window
        self.late = 0        # sent inside the window, answered after the deadline (or never)

    def record(self, t0: float, t1: float) -> None:
        if self.start <= t0 < self.end:
            if t1 <= self.deadline:
                self.latencies.append(t1 - t0)
            else:
                self.late += 1


class AgentClient:
    def __init__(self, worker: "Worker", ws: aiohttp.ClientWebSocketResponse) -> None:
        self.worker = worker
        self.ws = ws
        self.ready = asyncio.get_running_loop().create_future()
        self.replies = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        ws, worker = self.ws, self.worker
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                kind = frame.get("type")
                if kind == "message":
                    if frame.get("author") == "customer":
                        # Echo the text: it is the customer's message id, how it finds its round trip.
                        text = frame["text"]
                        await ws.send_str(_dumps({"type": "message", "conversation_id": frame["conversation_id"],
                                                  "id": "r" + text, "text": text}))
                        self.replies += 1
                elif kind == "offer":
                    await ws.send_str(_dumps({"type": "accept", "conversation_id": frame["conversation"]["id"]}))
                elif kind == "ready":
                    if not self.ready.done():
                        self.ready.set_result(frame)
                elif kind == "error":
                    worker.error(f"agent got error frame: {frame.get('code')}")
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            worker.error(f"agent socket: {type(exc).__name__}: {exc}")
        finally:
            if not worker.closing:
                worker.error("agent socket closed by the server")
            if not self.ready.done():
                self.ready.set_exception(ConnectionError("agent socket closed before ready"))


class CustomerClient:
    def __init__(self, worker: "Worker", ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.worker = worker
        self.ws = ws
        self.name = name
        loop = asyncio.get_running_loop()
        self.welcome = loop.create_future()
        self.assigned = loop.create_future()
        # message id -> (send or scheduled time, future to wake a closed-loop sender or None)
        self.pending: dict[str, tuple[float, asyncio.Future[float] | None]] = {}
        self.counter = 0
        self.task = asyncio.create_task(self._read())

    def next_id(self) -> str:
        self.counter += 1
        return f"{self.name}.{self.counter}"

    async def _read(self) -> None:
        ws, worker = self.ws, self.worker
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                kind = frame.get("type")
                if kind == "message":
                    if frame.get("author") == "agent":
                        t1 = time.monotonic()
                        entry = self.pending.pop(frame.get("text"), None)
                        if entry is not None:
                            t0, waiter = entry
                            if waiter is not None:
                                if not waiter.done():
                                    waiter.set_result(t1)
                            elif worker.window is not None:
                                worker.window.record(t0, t1)
                elif kind == "welcome":
                    if not self.welcome.done():
                        self.welcome.set_result(frame)
                elif kind == "assigned":
                    if not self.assigned.done():
                        self.assigned.set_result(frame)
                elif kind == "error":
                    worker.error(f"customer got error frame: {frame.get('code')}")
        except Exception as exc:  # noqa: BLE001
            worker.error(f"customer socket: {type(exc).__name__}: {exc}")
        finally:
            if not worker.closing:
                worker.error("customer socket closed by the server")
            for future in (self.welcome, self.assigned):
                if not future.done():
                    future.set_exception(ConnectionError("customer socket closed"))
            for _, waiter in self.pending.values():
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ConnectionError("customer socket closed"))

    async def send(self, message_id: str) -> None:
        await self.ws.send_str(_dumps({"type": "message", "id": message_id, "text": message_id}))


class Worker:
    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self.agents: list[AgentClient] = []
        self.customers: list[CustomerClient] = []
        self.idle: list[tuple[aiohttp.ClientWebSocketResponse, asyncio.Task[None]]] = []
        self.errors: Counter[str] = Counter()
        self.window: Window | None = None
        self.closing = False
        self.session: aiohttp.ClientSession | None = None

    def error(self, what: str) -> None:
        self.errors[what] += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        try:
            while True:
                command, args = await loop.run_in_executor(None, self.conn.recv)
                if command == "quit":
                    break
                try:
                    result = await getattr(self, "do_" + command)(**args)
                except Exception:  # noqa: BLE001 - reported to the orchestrator, which fails the run
                    self.conn.send(("error", traceback.format_exc()))
                else:
                    self.conn.send(("ok", result))
        finally:
            await self.do_reset()
            await self.session.close()

    async def _connect(self, url: str) -> aiohttp.ClientWebSocketResponse:
        assert self.session is not None
        return await self.session.ws_connect(url, autoclose=True, autoping=True, max_msg_size=0,
                                             timeout=aiohttp.ClientWSTimeout(ws_close=5))

    # setup ---------------------------------------------------------------------------------------
    async def do_agents(self, url: str, tokens: list[str]) -> dict[str, Any]:
        async def one(token: str) -> None:
            agent = AgentClient(self, await self._connect(url))
            self.agents.append(agent)
            await agent.ws.send_str(_dumps({"type": "auth", "token": token}))
            await asyncio.wait_for(agent.ready, FRAME_TIMEOUT)

        await _gather_limited([one(t) for t in tokens], 50)
        return {"agents": len(self.agents)}

    async def do_customers(self, url: str, names: list[str]) -> dict[str, Any]:
        started = time.monotonic()

        async def one(name: str) -> None:
            customer = CustomerClient(self, await self._connect(url), name)
            self.customers.append(customer)
            await customer.ws.send_str(_dumps({"type": "hello", "token": None, "last_seq": 0, "name": name}))
            await asyncio.wait_for(customer.welcome, FRAME_TIMEOUT)
            # A handoff phrase: queued, offered to a free agent, accepted, assigned.
            await customer.ws.send_str(_dumps({"type": "message", "id": name + ".handoff",
                                               "text": "I want to talk to an agent"}))
            await asyncio.wait_for(customer.assigned, FRAME_TIMEOUT)

        await _gather_limited([one(n) for n in names], 50)
        return {"customers": len(self.customers), "seconds": time.monotonic() - started}

    # load ----------------------------------------------------------------------------------------
    async def do_closed(self, start: float, window_start: float, window_end: float) -> dict[str, Any]:
        """Each customer: send, wait for the agent's answer, send again; from start to window_end."""
        window = Window(window_start, window_end, window_end + ROUND_TRIP_TIMEOUT)
        errors_before = sum(self.errors.values())

        async def customer_loop(customer: CustomerClient) -> None:
            loop = asyncio.get_running_loop()
            while time.monotonic() < window_end:
                message_id = customer.next_id()
                waiter: asyncio.Future[float] = loop.create_future()
                t0 = time.monotonic()
                customer.pending[message_id] = (t0, waiter)
                if t0 >= window_start:
                    window.sent += 1
                await customer.send(message_id)
                try:
                    t1 = await asyncio.wait_for(waiter, ROUND_TRIP_TIMEOUT)
                except asyncio.TimeoutError:
                    customer.pending.pop(message_id, None)
                    self.error("round trip timed out")
                    window.late += int(t0 >= window_start)
                    continue
                window.record(t0, t1)

        await _sleep_until(start)
        await asyncio.gather(*(customer_loop(c) for c in self.customers), return_exceptions=True)
        return self._load_result(window, errors_before)

    async def do_open(self, start: float, window_start: float, window_end: float, per_customer: float,
                      grace: float) -> dict[str, Any]:
        """Each customer sends ``per_customer`` messages per second at fixed times, whether or not
        answers came back; latency is taken from the scheduled send time, so a stall is not hidden."""
        window = Window(window_start, window_end, window_end + grace)
        self.window = window
        errors_before = sum(self.errors.values())
        interval = 1.0 / per_customer if per_customer > 0 else float("inf")
        rng = random.Random(self.index)

        async def customer_loop(customer: CustomerClient) -> None:
            scheduled = start + rng.random() * interval  # spread the customers over the interval
            while scheduled < window_end:
                await _sleep_until(scheduled)
                message_id = customer.next_id()
                customer.pending[message_id] = (scheduled, None)
                if scheduled >= window_start:
                    window.sent += 1
                try:
                    await customer.send(message_id)
                except Exception as exc:  # noqa: BLE001
                    self.error(f"send failed: {type(exc).__name__}")
                    return
                scheduled += interval

        await asyncio.gather(*(customer_loop(c) for c in self.customers), return_exceptions=True)
        # Wait for the last answers, up to the grace period.
        while time.monotonic() < window.deadline and any(c.pending for c in self.customers):
            await asyncio.sleep(0.05)
        self.window = None
        for customer in self.customers:
            for t0, _ in customer.pending.values():
                if window_start <= t0 < window_end:
                    window.late += 1
            customer.pending.clear()
        return self._load_result(window, errors_before)

    def _load_result(self, window: Window, errors_before: int) -> dict[str, Any]:
        return {"latencies": window.latencies, "sent": window.sent, "late": window.late,
                "errors": sum(self.errors.values()) - errors_before, "error_kinds": dict(self.errors)}

    async def do_mail(self, host: str, port: int, names: list[str], start: float, window_start: float,
                      window_end: float) -> dict[str, Any]:
        """The email figure: one SMTP connection per name, mails back to back (bench.mail_client)."""
        return await mail_client.closed_loop(host, port, names, start, window_start, window_end)

    # capacity ------------------------------------------------------------------------------------
    async def do_idle(self, url: str, names: list[str], concurrency: int, deadline: float) -> dict[str, Any]:
        """Open one customer socket per name (hello -> welcome) and keep it open, reading."""
        opened = 0
        failures: Counter[str] = Counter()
        started = time.monotonic()

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for _ in ws:  # answers pings, swallows the greeting
                pass

        async def one(name: str) -> None:
            nonlocal opened
            if time.monotonic() > deadline:
                failures[TIME_LIMIT] += 1
                return
            try:
                ws = await self._connect(url)
                await ws.send_str(_dumps({"type": "hello", "token": None, "last_seq": 0, "name": name}))
                while True:
                    message = await asyncio.wait_for(ws.receive(), max(1.0, deadline - time.monotonic()))
                    if message.type is not WSMsgType.TEXT:
                        raise ConnectionError(f"socket closed before welcome ({message.type.name})")
                    if json.loads(message.data).get("type") == "welcome":
                        break
            except Exception as exc:  # noqa: BLE001
                if time.monotonic() >= deadline:
                    failures[TIME_LIMIT] += 1
                else:
                    failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                return
            self.idle.append((ws, asyncio.create_task(drain(ws))))
            opened += 1

        await _gather_limited([one(n) for n in names], concurrency)
        return {"opened": opened, "failures": dict(failures), "seconds": time.monotonic() - started}

    async def do_idle_check(self) -> dict[str, Any]:
        open_now = sum(1 for ws, task in self.idle if not ws.closed and not task.done())
        return {"open": open_now, "total": len(self.idle)}

    async def do_reset(self) -> dict[str, Any]:
        """Close every socket of this worker (between servers)."""
        self.closing = True
        sockets = [a.ws for a in self.agents] + [c.ws for c in self.customers] + [ws for ws, _ in self.idle]
        tasks = [a.task for a in self.agents] + [c.task for c in self.customers] + [t for _, t in self.idle]
        await _gather_limited([_close(ws) for ws in sockets], 500)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.agents, self.customers, self.idle = [], [], []
        self.errors.clear()
        self.closing = False
        return {"closed": len(sockets)}

    async def do_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid()}


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    try:
        await asyncio.wait_for(ws.close(), 5)
    except Exception:  # noqa: BLE001 - already gone is fine
        pass


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _gather_limited(coroutines: list[Any], limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def limited(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(limited(c) for c in coroutines))


def worker_main(conn: Connection, index: int, use_uvloop: bool = True) -> None:
    """Entry point of a client process (multiprocessing target)."""
    raise_nofile_limit()
    loop_factory = None
    if use_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(Worker(conn, index).run())
