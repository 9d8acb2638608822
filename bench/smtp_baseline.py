"""The email baseline: a bare aiosmtpd server whose ``handle_DATA`` only says "250 OK", the
ceiling of the SMTP stack on this machine.

It runs aiosmtpd's ``SMTP`` protocol on its own loop with ``loop.create_server`` and the session
settings the gateway's listener uses (``adapters/email/smtp_in.py``: no ``decode_data``,
SMTPUTF8, the 25 MiB size limit, a fixed host name), so what the gateway costs on top of this
is the price of parsing, threading and storing. It keeps nothing. The bench also runs one as
the relay the gateway mails its bot answers to.

Run: ``python -m bench.smtp_baseline --port 2525 --loop uvloop``; it writes one JSON line with
``"msg": "listening"`` to stderr, and on SIGTERM one with ``"msg": "stopped"`` and ``accepted``
(how many mails it answered 250).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP

from .relay import serve_main

# The gateway listener's defaults (ListenerSettings), so both sides do the same work per mail.
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
IDLE_TIMEOUT = 300.0


class AcceptAll:
    """aiosmtpd's handler: every mail is answered 250 and forgotten."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.accepted += 1
        return "250 OK"


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = AcceptAll()

    def session() -> SMTP:
        return SMTP(handler, data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True, decode_data=False,
                    hostname="baseline.bench", ident="bench baseline ESMTP", timeout=IDLE_TIMEOUT, loop=loop)

    server = await loop.create_server(session, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"msg": "listening", "port": bound, "loop": type(loop).__module__}), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps({"msg": "stopped", "accepted": handler.accepted}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    return serve_main("python -m bench.smtp_baseline", __doc__.split("\n\n")[0], serve, argv,
                      port_required=True)


if __name__ == "__main__":
    sys.exit(main())
