"""The benchmark run: throughput and latency of the gateway against the bare relay, then capacity,
then email ingestion against a bare SMTP server (bench/email_ingest.py); ``--suites`` picks.

``run_bench(Options())`` does everything ``make bench`` does and returns the result dict (also
written to ``bench/results/<timestamp>.json`` and ``.md``). docs/performance.md explains what is
measured and how. The client processes are spawned, so a script calling ``run_bench`` needs the
usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import profile, report
from .client import TIME_LIMIT
from .email_ingest import email_runs
from .measure import Sampler, WorkerPool, log, ms, percentile, split
from .relay import raise_nofile_limit
from .servers import (
    MEMORY_URL, REPO, ServerProcess, ThrowawayPostgres, agent_token, capacity_dir, export_revision,
    gateway_process, pg_admin_dsn, pg_available, relay_process, remove_sqlite, rss_kib, sleep_until,
    source_info,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STORES = ("sqlite", "postgresql", "memory")  # memory: the storeless probe, never a default
LOOPS = ("asyncio", "uvloop")
SUITES = ("load", "capacity", "email")


@dataclass
class Options:
    pairs: int = 100                 # customer/agent pairs for the load runs
    clients: int = 2                 # client worker processes
    warmup: float = 1.0              # seconds of load before measuring
    duration: float = 6.0            # measured seconds of the closed loop
    open_duration: float = 6.0       # measured seconds of the open loop
    rate: float = 50.0               # open loop: round trips per second offered, in total
    grace: float = 3.0               # open loop: how long after the window an answer still counts
    stores: list[str] = field(default_factory=lambda: ["sqlite", "postgresql"])
    loops: list[str] = field(default_factory=lambda: list(LOOPS))
    idle: int = 10_000               # capacity: idle customer websockets to open (0: skip)
    idle_concurrency: int = 200      # capacity: connects in flight at once (all workers together)
    idle_timeout: float = 100.0      # capacity: give up opening after this many seconds
    hold: float = 3.0                # capacity: seconds the sockets are held before counting them
    capacity_loop: str = "uvloop"
    mail_clients: int = 20           # email: SMTP connections sending at once (all client processes together)
    mail_duration: float = 5.0       # email: measured seconds (after --warmup)
    mail_loop: str = "uvloop"
    suites: list[str] = field(default_factory=lambda: list(SUITES))
    # Where the gateway's code is run from (a checkout of this repo): benchmark another revision.
    gateway_dir: Path = field(default_factory=lambda: Path(os.environ.get("CONTACTGATE_BENCH_GATEWAY_DIR") or REPO))
    gateway_rev: str | None = None   # a git revision of this repo to export and run instead of gateway_dir
    results_dir: Path = RESULTS_DIR
    profile: bool = False            # sample the gateway with py-spy during each closed loop
    pg_dsn: str = field(default_factory=pg_admin_dsn)


def _load_stats(results: list[dict[str, Any]], cpu: dict[str, float], duration: float,
                with_db: bool) -> dict[str, Any]:
    latencies = sorted(x for r in results for x in r["latencies"])
    count = len(latencies)
    messages = 2 * count  # each round trip delivers a customer message to an agent and an answer back
    errors: dict[str, int] = {}
    for r in results:
        for kind, n in r["error_kinds"].items():
            errors[kind] = errors.get(kind, 0) + n
    stats: dict[str, Any] = {
        "round_trips": count,
        "sent": sum(r["sent"] for r in results),
        "late": sum(r["late"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_kinds": errors,
        "round_trips_per_s": round(count / duration, 1),
        "latency_ms": {"p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99)),
                       "p99.9": ms(percentile(latencies, 99.9)),
                       "mean": ms(sum(latencies) / count if count else None),
                       "max": ms(latencies[-1] if latencies else None)},
        "server_cpu_s": round(cpu["server"], 3),
        "server_cpu_util": round(cpu["server"] / cpu["seconds"], 3),
        "server_main_thread_cpu_util": round(cpu["server_main"] / cpu["seconds"], 3),
        "client_cpu_util": round(cpu["clients"] / cpu["seconds"], 3),
        # Everything else the machine did meanwhile (other people's processes): the run's noise.
        "other_cpu_util": round(max(0.0, cpu["machine"] - cpu["server"] - cpu["clients"] - cpu["db"]) / cpu["seconds"], 3),
        "server_cpu_us_per_msg": round(cpu["server"] / messages * 1e6, 1) if messages else None,
    }
    if with_db:
        stats["db_cpu_util"] = round(cpu["db"] / cpu["seconds"], 3)
        stats["db_cpu_us_per_msg"] = round(cpu["db"] / messages * 1e6, 1) if messages else None
    return stats


# one server under load ---------------------------------------------------------------------------
async def _measure(pool: WorkerPool, sampler: Sampler, command: str, warmup: float, duration: float,
                   extra: dict[str, Any], profile_to: Path | None = None) -> dict[str, Any]:
    start = time.monotonic() + 0.3
    window_start = start + warmup
    window_end = window_start + duration
    results = pool.start_all(command, {"start": start, "window_start": window_start,
                                       "window_end": window_end, **extra})
    await sleep_until(window_start)
    spy = await profile.record(sampler.server.pid, duration, profile_to) if profile_to else None
    before = await sampler.sample()
    await sleep_until(window_end)
    after = await sampler.sample()
    stats = _load_stats(await results, Sampler.delta(before, after), duration, sampler.pg is not None)
    if spy is not None:
        _, err = await spy.communicate()
        if spy.returncode == 0 and profile_to is not None and profile_to.exists():
            stats["profile"] = profile.summarize(profile_to)
        else:
            stats["profile"] = {"error": err.decode(errors="replace")[-500:]}
    return stats


async def load_run(pool: WorkerPool, server: ServerProcess, options: Options,
                   pg: ThrowawayPostgres | None, profile_to: Path | None = None) -> dict[str, Any]:
    pairs = options.pairs
    started = time.monotonic()
    tokens = [agent_token(i) for i in range(pairs)]
    await pool.all("agents", [{"url": server.url("/agent/ws"), "tokens": t} for t in split(tokens, pool.size)])
    names = [f"c{i}" for i in range(pairs)]
    await pool.all("customers", [{"url": server.url("/webchat/ws"), "names": n} for n in split(names, pool.size)])
    setup_s = time.monotonic() - started
    sampler = Sampler(server, pool, pg)
    closed = await _measure(pool, sampler, "closed", options.warmup, options.duration, {}, profile_to)
    opened = await _measure(pool, sampler, "open", options.warmup, options.open_duration,
                            {"per_customer": options.rate / pairs, "grace": options.grace})
    opened["offered_per_s"] = options.rate
    await pool.all("reset")
    return {"pairs": pairs, "setup_s": round(setup_s, 2), "closed": closed, "open": opened}


async def capacity_run(pool: WorkerPool, server: ServerProcess, options: Options) -> dict[str, Any]:
    await asyncio.sleep(0.5)
    rss_before = rss_kib(server.pid)
    target = options.idle
    names = [f"idle{i}" for i in range(target)]
    deadline = time.monotonic() + options.idle_timeout
    sampler = Sampler(server, pool, None)
    before = await sampler.sample()
    opened = await pool.all("idle", [{"url": server.url("/webchat/ws"), "names": n, "deadline": deadline,
                                      "concurrency": max(1, options.idle_concurrency // pool.size)}
                                     for n in split(names, pool.size)])
    cpu = Sampler.delta(before, await sampler.sample())
    open_s = cpu["seconds"]
    await asyncio.sleep(options.hold)
    alive = server.alive()
    rss_after = rss_kib(server.pid) if alive else None
    checks = await pool.all("idle_check")
    await pool.all("reset")
    n_opened = sum(o["opened"] for o in opened)
    held = sum(c["open"] for c in checks) if alive else 0
    failures: dict[str, int] = {}
    for o in opened:
        for kind, n in o["failures"].items():
            failures[kind] = failures.get(kind, 0) + n
    timed_out = failures.pop(TIME_LIMIT, 0)
    return {
        "target": target, "opened": n_opened, "held": held, "failures": failures, "timed_out": timed_out,
        "errors": sum(failures.values()) + (n_opened - held),
        "open_server_cpu_util": round(cpu["server"] / open_s, 3), "open_client_cpu_util": round(cpu["clients"] / open_s, 3),
        "open_other_cpu_util": round(max(0.0, cpu["machine"] - cpu["server"] - cpu["clients"]) / open_s, 3),
        "open_s": round(open_s, 2), "hellos_per_s": round(n_opened / open_s, 1) if open_s else None,
        "rss_before_kib": rss_before, "rss_after_kib": rss_after,
        "rss_per_conn_kib": round((rss_after - rss_before) / n_opened, 2) if rss_after and n_opened else None,
        "server_alive": alive,
    }


# the whole run -----------------------------------------------------------------------------------
def _host() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp

    versions = {"python": platform.python_version(), "aiohttp": aiohttp.__version__}
    with contextlib.suppress(ImportError):
        import uvloop

        versions["uvloop"] = uvloop.__version__
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), **versions,
            "loadavg_before": os.getloadavg()}


def _check_options(options: Options) -> list[str]:
    notes = []
    for store in options.stores:
        if store not in STORES:
            raise SystemExit(f"unknown store {store!r} (known: {', '.join(STORES)})")
    for suite in options.suites:
        if suite not in SUITES:
            raise SystemExit(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    for loop in [*options.loops, options.capacity_loop, options.mail_loop]:
        if loop not in LOOPS:
            raise SystemExit(f"unknown loop {loop!r} (known: {', '.join(LOOPS)})")
    if "uvloop" in [*options.loops, options.capacity_loop, options.mail_loop] and importlib.util.find_spec("uvloop") is None:
        notes.append("uvloop is not installed (pip install 'contactgate[fast]'): uvloop runs skipped")
        options.loops = [loop for loop in options.loops if loop != "uvloop"]
        options.capacity_loop = options.mail_loop = "asyncio"
    if "email" in options.suites and "memory" in options.stores:
        notes.append("email: no run on the store memory (the storeless probe keeps no mail)")
    limit = raise_nofile_limit()
    # The server holds one descriptor per socket; each client process holds its share.
    ceiling = max(0, limit - 200)
    if options.idle > ceiling:
        notes.append(f"capacity target lowered from {options.idle} to {ceiling}: the open-files limit is {limit}")
        options.idle = ceiling
    if options.pairs * 2 > ceiling:
        raise SystemExit(f"--pairs {options.pairs} needs more than the open-files limit of {limit}")
    return notes


async def _run(options: Options, command: str) -> dict[str, Any]:
    notes = _check_options(options)
    workdir = Path(tempfile.mkdtemp(prefix="contactgate-bench-"))
    try:
        return await _run_in(options, command, notes, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run_in(options: Options, command: str, notes: list[str], workdir: Path) -> dict[str, Any]:
    if options.gateway_rev:
        source = export_revision(options.gateway_rev, workdir / "gateway-src")
        options.gateway_dir = Path(source["dir"])
    else:
        source = source_info(options.gateway_dir)
    result: dict[str, Any] = {
        "stamp": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "pg_dsn"},
        "host": _host(), "gateway_source": source, "notes": notes, "load": [], "capacity": [],
        "email": [],
    }
    began = time.monotonic()
    if "postgresql" in options.stores:
        why = await pg_available(options.pg_dsn)
        if why is not None:
            note = f"PostgreSQL runs skipped: cannot connect to the admin DSN ({why}); set CONTACTGATE_BENCH_PG_DSN"
            log(note)
            notes.append(note)
            options.stores = [s for s in options.stores if s != "postgresql"]
    pool = WorkerPool(options.clients)
    try:
        await pool.all("ping")
        if "load" in options.suites and options.pairs > 0:
            for loop in options.loops:
                targets: list[tuple[str, str | None]] = [("relay", None)] + [("gateway", s) for s in options.stores]
                for kind, store in targets:
                    label = f"{kind} {store or '-'} {loop}"
                    log(f"{label}: {options.pairs} pairs, closed loop {options.duration}s, "
                        f"open loop {options.rate:g}/s for {options.open_duration}s")
                    entry = {"server": kind, "store": store, "loop": loop}
                    profile_to = None
                    if options.profile:
                        profile_to = options.results_dir / f"{result['stamp']}-profile-{kind}-{store}-{loop}.txt"
                        profile_to.parent.mkdir(parents=True, exist_ok=True)
                    entry.update(await _one_load(pool, options, kind, store, loop, workdir, profile_to))
                    result["load"].append(entry)
                    log(f"{label}: {report.load_line(entry)}")
        if "capacity" in options.suites and options.idle > 0:
            for kind in ("relay", "gateway"):
                label = f"{kind} capacity ({options.capacity_loop})"
                log(f"{label}: opening {options.idle} idle customer websockets")
                entry = {"server": kind, "store": _capacity_store_label() if kind == "gateway" else None,
                         "loop": options.capacity_loop}
                entry.update(await _one_capacity(pool, options, kind, workdir))
                result["capacity"].append(entry)
                log(f"{label}: held {entry['held']}/{entry['target']}, "
                    f"{entry['rss_per_conn_kib']} KiB per connection, {entry['errors']} errors")
        if "email" in options.suites and options.mail_clients > 0:
            result["email"] = await email_runs(pool, options, workdir)
    finally:
        pool.close()
    result["host"]["loadavg_after"] = os.getloadavg()
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    result["ratios"] = report.ratios(result)
    result["email_ratios"] = report.email_ratios(result)
    result["targets"] = report.targets(result)
    return result


async def _one_load(pool: WorkerPool, options: Options, kind: str, store: str | None, loop: str,
                    workdir: Path, profile_to: Path | None = None) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        pg = None
        if kind == "relay":
            server = relay_process(loop, workdir)
        else:
            if store == "postgresql":
                pg = await stack.enter_async_context(ThrowawayPostgres(options.pg_dsn))
                url = pg.url
            elif store == "memory":
                url = MEMORY_URL
            else:
                db = workdir / f"load-{loop}.db"
                url = "sqlite:///" + str(db)
                stack.callback(remove_sqlite, db)
            server = gateway_process(url, loop, options.pairs, workdir, options.gateway_dir)
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        stack.callback(server.stop)
        try:
            entry = await load_run(pool, server, options, pg, profile_to)
        except Exception:
            with contextlib.suppress(Exception):
                await pool.all("reset")
            log(f"{kind} log tail:\n{server.log_tail()}")
            raise
        if not server.alive():
            raise RuntimeError(f"{kind} died during the run:\n{server.log_tail()}")
        return entry


async def _one_capacity(pool: WorkerPool, options: Options, kind: str, workdir: Path) -> dict[str, Any]:
    loop = options.capacity_loop
    if kind == "relay":
        server = relay_process(loop, workdir)
        db = None
    else:
        db = capacity_dir() / f"contactgate-bench-capacity-{os.getpid()}.db"
        server = gateway_process("sqlite:///" + str(db), loop, 1, workdir, options.gateway_dir)
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    try:
        return await capacity_run(pool, server, options)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        if db is not None:
            remove_sqlite(db)


def _capacity_store_label() -> str:
    where = capacity_dir()
    return "sqlite (tmpfs)" if str(where).startswith("/dev/shm") else f"sqlite ({where})"


def run_bench(options: Options, command: str = "python -m bench") -> tuple[dict[str, Any], Path, Path]:
    """Run, write ``<results_dir>/<timestamp>.json`` and ``.md``; returns (result, json path, md path)."""
    result = asyncio.run(_run(options, command))
    options.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["stamp"]
    json_path = options.results_dir / f"{stamp}.json"
    md_path = options.results_dir / f"{stamp}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(report.markdown(result))
    return result, json_path, md_path


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load, capacity and email ingestion benchmark of the gateway against bare baselines "
                    "(docs/performance.md).")
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="customer/agent pairs (default %(default)s)")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="client processes (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=defaults.warmup, help="seconds before measuring (default %(default)s)")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="closed-loop seconds (default %(default)s)")
    parser.add_argument("--open-duration", type=float, default=defaults.open_duration, help="open-loop seconds (default %(default)s)")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="open-loop round trips/s in total (default %(default)s)")
    parser.add_argument("--grace", type=float, default=defaults.grace, help="open loop: seconds an answer may arrive after the window (default %(default)s)")
    parser.add_argument("--stores", default=",".join(defaults.stores), help="comma-separated: sqlite,postgresql (default %(default)s); memory = the gateway without a store (a probe)")
    parser.add_argument("--loops", default=",".join(defaults.loops), help="comma-separated: asyncio,uvloop (default %(default)s)")
    parser.add_argument("--idle", type=int, default=defaults.idle, help="capacity: idle websockets to open, 0 to skip (default %(default)s)")
    parser.add_argument("--idle-concurrency", type=int, default=defaults.idle_concurrency, help="capacity: connects in flight (default %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout, help="capacity: seconds allowed to open them (default %(default)s)")
    parser.add_argument("--hold", type=float, default=defaults.hold, help="capacity: seconds to hold them (default %(default)s)")
    parser.add_argument("--capacity-loop", default=defaults.capacity_loop, choices=LOOPS, help="event loop of the capacity runs (default %(default)s)")
    parser.add_argument("--mail-clients", type=int, default=defaults.mail_clients, help="email: SMTP connections sending at once, 0 to skip (default %(default)s)")
    parser.add_argument("--mail-duration", type=float, default=defaults.mail_duration, help="email: measured seconds (default %(default)s)")
    parser.add_argument("--mail-loop", default=defaults.mail_loop, choices=LOOPS, help="event loop of the email runs (default %(default)s)")
    parser.add_argument("--suites", default=",".join(defaults.suites), help="comma-separated: load,capacity,email (default %(default)s)")
    parser.add_argument("--gateway-dir", type=Path, default=defaults.gateway_dir,
                        help="run the gateway from this checkout (default: this repo; env CONTACTGATE_BENCH_GATEWAY_DIR)")
    parser.add_argument("--gateway-rev", metavar="REV",
                        help="run the gateway as committed at this git revision (e.g. HEAD), exported to a temp dir")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy during each closed loop (pip install py-spy; perturbs the numbers)")
    parser.add_argument("--results-dir", type=Path, default=defaults.results_dir, help="where results go (default bench/results)")
    args = parser.parse_args(argv)
    return Options(pairs=args.pairs, clients=max(1, args.clients), warmup=args.warmup, duration=args.duration,
                   open_duration=args.open_duration, rate=args.rate, grace=args.grace,
                   stores=[s for s in args.stores.split(",") if s], loops=[s for s in args.loops.split(",") if s],
                   idle=args.idle, idle_concurrency=args.idle_concurrency, idle_timeout=args.idle_timeout,
                   hold=args.hold, capacity_loop=args.capacity_loop, results_dir=args.results_dir,
                   mail_clients=args.mail_clients, mail_duration=args.mail_duration, mail_loop=args.mail_loop,
                   suites=[s for s in args.suites.split(",") if s],
                   gateway_dir=args.gateway_dir.resolve(), gateway_rev=args.gateway_rev, profile=args.profile)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_args(argv)
    command = " ".join(["python -m bench", *map(shlex.quote, argv)])
    result, json_path, md_path = run_bench(options, command)
    print(report.markdown(result))
    print(f"results: {json_path}\n         {md_path}")
    return 0
