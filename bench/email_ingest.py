"""The email ingestion figure: mails per second through the gateway's own SMTP listener, each
parsed, sorted, threaded and stored before its 250, against a bare aiosmtpd server that only
says 250 (``bench.smtp_baseline``), with the same client in the same run.

Per store: the gateway (``python -m gateway.cli serve`` with :func:`email_gateway_config`) and a
second bare aiosmtpd process as its relay (the sink its bot mails go to, so they go somewhere).
The load is ``mail_clients`` SMTP connections spread over the client processes
(``bench.mail_client``), mails from ``bench.mail_corpus``. After each gateway run the store is
counted: every mail answered 250 must be one stored customer message, every thread opened one
conversation, or the figure measured something else.

The bot is configured as docs/channels.md advises for mail (``max_unanswered: 1``) with no FAQ:
the first mail of a thread gets the bot's handoff note (an event with its outbox item, mailed to
the sink by the outbox) and the thread is queued; a reply to it is only stored, since the bot
does not speak in a queued conversation. So three mails in four cost ingestion alone. No agent
is online, so the queue grows by one conversation per thread; its cost per enqueue grows with
it, but at the default duration's hundred or so threads it is noise beside parsing. (The other
way, a ``max_unanswered`` no thread reaches, makes the bot write "no answer" for every mail
and the outbox skip most of them: more bot work per mail, not less.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .mail_corpus import SUPPORT, SUPPORT_DOMAIN
from .measure import Sampler, WorkerPool, log, ms, percentile, split
from .servers import (
    REPO, ServerProcess, ThrowawayPostgres, cpu_seconds, free_port, gateway_config, remove_sqlite, sleep_until,
)

if TYPE_CHECKING:
    from .run import Options

BASELINE = "smtp-baseline"
SINK = "smtp-sink"
START_DELAY = 0.5   # seconds for the clients to open their connections before the start


# the servers ----------------------------------------------------------------------------------
def smtp_greets(port: int) -> bool:
    """Whether an SMTP server on 127.0.0.1:``port`` says its 220 greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            greeting = conn.recv(512)
            conn.sendall(b"QUIT\r\n")
            return greeting.startswith(b"220")
    except OSError:
        return False


@dataclass
class SmtpBaseline(ServerProcess):
    """``bench.smtp_baseline``: the ceiling, or the gateway's relay (``kind`` "smtp-sink")."""

    def ready(self) -> bool:
        return smtp_greets(self.port)

    def accepted(self) -> int | None:
        """How many mails it took, from the line it writes when stopped (None if it wrote none)."""
        with contextlib.suppress(OSError):
            for line in reversed(self.log_path.read_text(errors="replace").splitlines()):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("msg") == "stopped":
                        return int(record["accepted"])
        return None


@dataclass
class MailGateway(ServerProcess):
    """The gateway with an email channel: ready once ``/healthz`` answers and the listener greets."""

    smtp_port: int = 0

    def ready(self) -> bool:
        return super().ready() and smtp_greets(self.smtp_port)


def baseline_process(kind: str, loop: str, workdir: Path) -> SmtpBaseline:
    port = free_port()
    return SmtpBaseline(kind, [sys.executable, "-m", "bench.smtp_baseline", "--port", str(port),
                               "--loop", loop], port, workdir)


def email_gateway_config(store_url: str, loop: str, port: int, smtp_port: int, sink_port: int) -> dict[str, Any]:
    """The bench gateway (bench/servers.py) with one email channel instead of web chat: the
    listener on ``smtp_port``, replies to the sink on ``sink_port``, the bot as the module says."""
    config = gateway_config(store_url, loop, 0, port)
    config["channels"] = [{
        "type": "email", "name": "email", "address": SUPPORT, "display_name": "Acme Support",
        "listen": {"host": "127.0.0.1", "port": smtp_port, "hostname": "gateway.bench",
                   "accept_recipients": [SUPPORT_DOMAIN]},
        "smtp": {"host": "127.0.0.1", "port": sink_port, "security": "none", "timeout": 30,
                 "local_hostname": "gateway.bench"},
    }]
    config["selfservice"] = {"max_unanswered": 1, "greeting": None}
    config["agents"] = []
    return config


def mail_gateway_process(store_url: str, loop: str, sink_port: int, workdir: Path, source: Path = REPO) -> MailGateway:
    port, smtp_port = free_port(), free_port()
    config_path = workdir / "gateway-email.yaml"
    config_path.write_text(yaml.safe_dump(email_gateway_config(store_url, loop, port, smtp_port, sink_port),
                                          sort_keys=False))
    return MailGateway("gateway", [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path),
                                   "--port", str(port)], port, workdir, cwd=source, smtp_port=smtp_port)



# one server under load ---------------------------------------------------------------------------
class MailSampler(Sampler):
    """Sampler's readings plus the CPU of the gateway's sink (the relay its bot mails go to)."""

    def __init__(self, server: ServerProcess, pool: WorkerPool, pg: ThrowawayPostgres | None,
                 sink: ServerProcess | None) -> None:
        super().__init__(server, pool, pg)
        self.sink = sink

    async def sample(self) -> dict[str, Any]:
        sample = await super().sample()
        sample["sink"] = cpu_seconds(self.sink.pid) if self.sink is not None else 0.0
        return sample

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        return {**Sampler.delta(before, after), "sink": after["sink"] - before["sink"]}


def mail_stats(results: list[dict[str, Any]], cpu: dict[str, float], duration: float,
               with_db: bool) -> dict[str, Any]:
    latencies = sorted(x for r in results for x in r["latencies"])
    count = len(latencies)
    errors: dict[str, int] = {}
    for r in results:
        for kind, n in r["error_kinds"].items():
            errors[kind] = errors.get(kind, 0) + n
    seconds = cpu["seconds"]
    stats: dict[str, Any] = {
        "mails": count,                                   # answered 250, sent inside the window
        "sent": sum(r["sent"] for r in results),
        "accepted": sum(r["accepted"] for r in results),  # the whole run, warm-up included
        "new_threads": sum(r["new_threads"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_kinds": errors,
        "mails_per_s": round(count / duration, 1),
        "latency_ms": {"p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99)),
                       "p99.9": ms(percentile(latencies, 99.9)),
                       "mean": ms(sum(latencies) / count if count else None),
                       "max": ms(latencies[-1] if latencies else None)},
        "server_cpu_s": round(cpu["server"], 3),
        "server_cpu_util": round(cpu["server"] / seconds, 3),
        "server_main_thread_cpu_util": round(cpu["server_main"] / seconds, 3),
        "client_cpu_util": round(cpu["clients"] / seconds, 3),
        "sink_cpu_util": round(cpu["sink"] / seconds, 3),
        "other_cpu_util": round(max(0.0, cpu["machine"] - cpu["server"] - cpu["clients"] - cpu["db"] - cpu["sink"])
                                / seconds, 3),
        "server_cpu_us_per_mail": round(cpu["server"] / count * 1e6, 1) if count else None,
    }
    if with_db:
        stats["db_cpu_util"] = round(cpu["db"] / seconds, 3)
        stats["db_cpu_us_per_mail"] = round(cpu["db"] / count * 1e6, 1) if count else None
    return stats


async def mail_load(pool: WorkerPool, sampler: MailSampler, smtp_port: int, connections: int, warmup: float,
                    duration: float, label: str) -> dict[str, Any]:
    nonce = uuid.uuid4().hex[:6]
    names = [f"{label}{i}-{nonce}" for i in range(connections)]
    start = time.monotonic() + START_DELAY
    window_start = start + warmup
    window_end = window_start + duration
    results = pool.start_all("mail", [{"host": "127.0.0.1", "port": smtp_port, "names": part, "start": start,
                                       "window_start": window_start, "window_end": window_end}
                                      for part in split(names, pool.size)])
    await sleep_until(window_start)
    before = await sampler.sample()
    await sleep_until(window_end)
    after = await sampler.sample()
    stats = mail_stats(await results, MailSampler.delta(before, after), duration, sampler.pg is not None)
    stats["connections"] = connections
    return stats


_COUNTS = {"conversations": "SELECT count(*) FROM conversations WHERE channel = 'email'",
           "customer_messages": "SELECT count(*) FROM events WHERE author = 'customer' AND kind = 'message'"}


async def store_counts(url: str) -> dict[str, int]:
    """What the gateway stored on the email channel: read after it stopped, straight from the
    database (two tables any revision of the schema has), to check the run against the client's counts."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            return {name: int(db.execute(sql).fetchone()[0]) for name, sql in _COUNTS.items()}
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return {name: int(await conn.fetchval(sql)) for name, sql in _COUNTS.items()}
    finally:
        await conn.close()


# the figure ---------------------------------------------------------------------------------------
MAIL_STORES = ("sqlite", "postgresql")   # the storeless probe (bench/nostore.py) has no mail tables


async def email_runs(pool: WorkerPool, options: "Options", workdir: Path) -> list[dict[str, Any]]:
    """The baseline, then the gateway on each of ``options.stores`` that keeps mail."""
    loop = options.mail_loop
    entries = []
    for kind, store in [(BASELINE, None)] + [("gateway", s) for s in options.stores if s in MAIL_STORES]:
        label = f"{kind} {store or '-'} {loop}"
        log(f"{label}: email, {options.mail_clients} SMTP connections for {options.mail_duration}s")
        entry: dict[str, Any] = {"server": kind, "store": store, "loop": loop}
        entry.update(await _one(pool, options, kind, store, workdir))
        entries.append(entry)
        log(f"{label}: {mail_line(entry)}")
    return entries


def mail_line(entry: dict[str, Any]) -> str:
    m = entry["mails"]
    line = (f"{m['mails_per_s']:g} mails/s p50 {m['latency_ms']['p50']} ms p99 {m['latency_ms']['p99']} ms "
            f"{m['server_cpu_us_per_mail']} µs/mail; errors {m['errors']}")
    checks = entry.get("checks")
    if checks:
        line += (f"; stored {checks['stored']}/{checks['accepted']}, conversations "
                 f"{checks['conversations']}/{checks['new_threads']}, bot mails {checks['bot_mails']}")
    return line


async def _one(pool: WorkerPool, options: "Options", kind: str, store: str | None, workdir: Path) -> dict[str, Any]:
    loop = options.mail_loop
    in_thread = asyncio.get_running_loop().run_in_executor
    async with contextlib.AsyncExitStack() as stack:
        pg, sink, url = None, None, ""
        if kind == BASELINE:
            server: SmtpBaseline | MailGateway = baseline_process(BASELINE, loop, workdir)
            smtp_port = server.port
        else:
            sink = baseline_process(SINK, loop, workdir)
            await in_thread(None, sink.start)
            stack.callback(sink.stop)
            if store == "postgresql":
                pg = await stack.enter_async_context(ThrowawayPostgres(options.pg_dsn))
                url = pg.url
            else:
                db = workdir / f"email-{loop}.db"
                url = "sqlite:///" + str(db)
                stack.callback(remove_sqlite, db)
            server = mail_gateway_process(url, loop, sink.port, workdir, options.gateway_dir)
            smtp_port = server.smtp_port
        await in_thread(None, server.start)
        stack.callback(server.stop)
        try:
            stats = await mail_load(pool, MailSampler(server, pool, pg, sink), smtp_port, options.mail_clients,
                                    options.warmup, options.mail_duration, "b" if kind == BASELINE else "g")
        except Exception:
            log(f"{kind} log tail:\n{server.log_tail()}")
            raise
        if not server.alive():
            raise RuntimeError(f"{kind} died during the email run:\n{server.log_tail()}")
        entry: dict[str, Any] = {"mails": stats}
        if sink is not None:
            # Stopped first, so the store is read at rest and the sink has every mail it will get.
            stopping = time.monotonic()
            exit_code = await in_thread(None, server.stop)
            stop_s = time.monotonic() - stopping
            await in_thread(None, sink.stop)
            counts = await store_counts(url)
            entry["checks"] = {"accepted": stats["accepted"], "stored": counts["customer_messages"],
                               "new_threads": stats["new_threads"], "conversations": counts["conversations"],
                               "bot_mails": sink.accepted(), "stop_s": round(stop_s, 2), "exit_code": exit_code}
        return entry
