"""``contactgate`` command line: ``serve``, ``check-config``, ``simulate``, ``ivr-simulate`` and ``faq-eval``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from adapters.base import ChannelUnavailable

from .config import ConfigError, GatewayConfig, file_warnings
from .connections import GatedSite, QuietBadRequests, raise_file_limit
from .selfservice import SelfService, evalcli, load_gateway_config
from .logs import setup_logging
from .store import StoreError
from .tasks import TaskSet

log = logging.getLogger("contactgate")

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="contactgate", description="Omnichannel contact-center gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("file", nargs="?", help="config file, as for the other commands (or --config)")
    serve.add_argument("--config", help="config file (default: config.yaml)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port (0: any free port)")
    check = commands.add_parser("check-config", help="validate a config file and exit (2 when invalid)")
    check.add_argument("file", nargs="?", default="config.yaml")
    sim = commands.add_parser("simulate", help="show which rule and steps would take a contact, and why")
    sim.add_argument("file", nargs="?", default="config.yaml")
    sim.add_argument("--channel", default="webchat")
    sim.add_argument("--text", default="", help="what the customer writes")
    sim.add_argument("--tier", help="a tier stored on the customer's profile")
    sim.add_argument("--email")
    sim.add_argument("--phone")
    sim.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE", help="a customer attribute (repeatable)")
    sim.add_argument("--at", help="when, ISO 8601 with offset (default: now), e.g. 2026-11-24T22:00+08:00")
    sim.add_argument("--json", action="store_true", help="print JSON")
    ivr = commands.add_parser("ivr-simulate", help="walk an IVR menu: the TwiML of each step of a call")
    ivr.add_argument("file", nargs="?", default="config.yaml")
    ivr.add_argument("--channel", help="the ivr channel's name (default: the first)")
    ivr.add_argument("--digits", default="", help="keys pressed, one step each: 1,2 (an empty one, 1,,2, is a timeout)")
    ivr.add_argument("--speech", action="append", default=[], help="a speech result, after the digits (repeatable)")
    ivr.add_argument("--caller", default="+15550100", help="the caller's number (From)")
    ivr.add_argument("--name", help="the caller's name, as a known customer")
    ivr.add_argument("--at", help="when, ISO 8601 with offset (default: now): business hours apply")
    evalcli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.file and args.config and args.file != args.config:
            parser.error("serve: give the config file once (FILE or --config)")
        args.config = args.file or args.config or "config.yaml"
    if args.command == "faq-eval":
        return evalcli.run(args)
    if args.command == "check-config":
        return check_config(Path(args.file))
    if args.command == "simulate":
        return run_simulate(args)
    if args.command == "ivr-simulate":
        return run_ivr_simulate(args)
    return run_serve(args)


def check_config(path: Path) -> int:
    try:
        config, _ = load_gateway_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    warnings = file_warnings(path, config)
    print(f"{path}: ok — {len(config.channels)} channel(s), {len(config.queues)} queue(s), "
          f"{len(config.routing.rules)} routing rule(s), {len(config.agents)} agent(s)"
          + (f"; {len(warnings)} warning(s):" if warnings else ""))
    for warning in warnings:
        print(f"warning: {path}:{warning}")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from .simulate import as_json, render, simulate

    attributes: dict[str, object] = {}
    for item in args.attr:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"--attr {item!r}: expected NAME=VALUE", file=sys.stderr)
            return EXIT_CONFIG
        attributes[name] = _number(value)
    try:
        at = _at(args.at)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        config, selfservice = load_gateway_config(Path(args.file))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    result = simulate(config, selfservice, channel=args.channel, text=args.text,
                      tier=args.tier, email=args.email, phone=args.phone, attributes=attributes, at=at)
    print(as_json(result) if args.json else render(result))
    return 0


def run_ivr_simulate(args: argparse.Namespace) -> int:
    from ivr.simulate import SimulationError, render_turns, simulate_call

    try:
        at = _at(args.at)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        config, selfservice = load_gateway_config(Path(args.file))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    digits = args.digits.split(",") if args.digits else []
    try:
        turns = simulate_call(config, selfservice, channel=args.channel, digits=digits, speech=args.speech,
                              caller=args.caller, name=args.name, at=at)
    except SimulationError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(render_turns(turns, config, selfservice, args.channel, at))
    return 0


def _at(value: str | None) -> datetime | None:
    """``--at``: ISO 8601, UTC when it has no offset. Raises ValueError with the message to print."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--at {value!r}: expected ISO 8601, e.g. 2026-11-24T22:00+08:00") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def _number(value: str) -> object:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


def run_serve(args: argparse.Namespace) -> int:
    try:
        config, selfservice = load_gateway_config(Path(args.config))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
    setup_logging(config.server.log_level, config.server.log_format)
    selfservice.log_notice()
    for warning in file_warnings(args.config, config):
        log.warning("config warning", extra={"warning": f"{args.config}:{warning}"})
    loop_factory = _loop_factory(config.server.event_loop)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(config, selfservice, Path(args.config).resolve(), overrides))


def _loop_factory(choice: str):  # type: ignore[no-untyped-def]
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("server.event_loop is uvloop but uvloop is not installed (pip install 'contactgate[fast]')")
        return None
    return uvloop.new_event_loop


async def _serve(config: GatewayConfig, selfservice: "SelfService", config_path: Path,
                 server_overrides: dict[str, object]) -> int:
    from .app import create_app

    from .app import CONNECTIONS, RELOADER

    raise_file_limit()
    logging.getLogger("aiohttp.server").addFilter(QuietBadRequests())
    app = create_app(config, config_path, selfservice, server_overrides)
    gate = app[CONNECTIONS]
    # keepalive_timeout runs from the moment a connection is made and is not reset by partial
    # data: it is the header timeout, for new and for idle keep-alive connections alike.
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=config.server.shutdown_timeout,
                           keepalive_timeout=config.server.header_timeout)
    try:
        # Bind first: a second gateway on a taken port must not touch the store (its recovery
        # would re-queue conversations the running one is serving).
        sock = socket.create_server((config.server.host, config.server.port), reuse_port=False)
    except OSError as exc:
        log.error("cannot start", extra={"error": f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}"})
        return 1
    try:
        await runner.setup()
        site = GatedSite(runner, sock, gate)
        await site.start()
    except (StoreError, OSError, ChannelUnavailable) as exc:
        # A database that is down, a port that is taken, a channel that cannot start (its
        # provider rejected the credentials, its certificate does not load): say so in one
        # line, exit non-zero.
        log.error("cannot start", extra={"error": str(exc)})
        await runner.cleanup()
        return 1
    except Exception:
        # Anything else is a bug, but the process must still end: what started (the store's
        # thread) would otherwise keep it alive, up but serving nothing.
        log.exception("cannot start")
        await runner.cleanup()
        return 1
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(gate.exception_handler)
    # Signals before "listening": whoever waits for that line may send SIGHUP or SIGTERM at once.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader = app[RELOADER]
    reloads = TaskSet()
    loop.add_signal_handler(signal.SIGHUP, lambda: reloads.spawn(reloader.reload(reason="SIGHUP"), name="reload:SIGHUP"))
    for host, port in (a[:2] for a in runner.addresses):
        log.info("listening", extra={"url": f"http://{host}:{port}", "port": port,
                                     "loop": type(asyncio.get_running_loop()).__module__,
                                     "max_connections": gate.limits.max_connections,
                                     "connection_reserve": gate.limits.reserve})
    await stop.wait()
    log.info("shutting down: closing websockets, finishing in-flight writes")
    await reloads.close(timeout=5)
    await runner.cleanup()
    gate.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
