"""The email load, in a client worker process: SMTP connections (aiosmtplib) that each send
mails back to back, as an MTA with a queue for us does (closed loop).

Each connection is opened (and EHLO said) before the start, then sends ``MAIL``, ``RCPT`` and
``DATA`` for one mail of its :class:`~bench.mail_corpus.MailStream`, waits for the reply to the
final dot, and sends the next, until the window ends. The latency of a mail is that whole
transaction, from ``MAIL FROM`` to the 250. A refusal (a 4xx or 5xx) is counted by its code
and the stream goes on; a dropped connection is counted and opened again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiosmtplib

from .mail_corpus import SUPPORT, MailStream

CONNECT_TIMEOUT = 30.0
TRANSACTION_TIMEOUT = 60.0   # one mail that takes longer is an error
RECONNECT_PAUSE = 0.2


class _Tally:
    def __init__(self, window_start: float, window_end: float) -> None:
        self.window_start, self.window_end = window_start, window_end
        self.latencies: list[float] = []
        self.sent = 0          # transactions started inside the window
        self.accepted = 0      # mails answered 250, the whole run (warm-up included)
        self.new_threads = 0   # of those, the ones that open a thread
        self.errors: Counter[str] = Counter()

    def in_window(self, t0: float) -> bool:
        return self.window_start <= t0 < self.window_end


async def _connect(host: str, port: int) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=TRANSACTION_TIMEOUT, local_hostname="client.bench",
                           start_tls=False)
    await smtp.connect(timeout=CONNECT_TIMEOUT)
    await smtp.ehlo()
    return smtp


async def _connection(host: str, port: int, stream: MailStream, smtp: aiosmtplib.SMTP, start: float,
                      tally: _Tally) -> None:
    await _sleep_until(start)
    while True:
        t0 = time.monotonic()
        if t0 >= tally.window_end:
            break
        mail = stream.next()
        counted = tally.in_window(t0)
        tally.sent += counted
        try:
            await smtp.sendmail(mail.sender, [SUPPORT], mail.data)
        except aiosmtplib.SMTPResponseException as exc:
            tally.errors[f"{exc.code} {exc.message}"[:120]] += 1
            continue
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            tally.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
            smtp.close()
            await asyncio.sleep(RECONNECT_PAUSE)
            try:
                smtp = await _connect(host, port)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as again:
                tally.errors[f"reconnect: {type(again).__name__}: {again}"[:120]] += 1
                return
            continue
        t1 = time.monotonic()
        tally.accepted += 1
        tally.new_threads += mail.new_thread
        if counted:
            tally.latencies.append(t1 - t0)
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        smtp.close()


async def closed_loop(host: str, port: int, names: list[str], start: float, window_start: float,
                      window_end: float) -> dict[str, Any]:
    """One SMTP connection per name, each sending its stream's mails back to back from ``start``
    to ``window_end``; latencies of the transactions started in [window_start, window_end)."""
    tally = _Tally(window_start, window_end)
    connections = await asyncio.gather(*(_connect(host, port) for _ in names))
    await asyncio.gather(*(_connection(host, port, MailStream(name), smtp, start, tally)
                           for name, smtp in zip(names, connections)))
    return {"latencies": tally.latencies, "sent": tally.sent, "accepted": tally.accepted,
            "new_threads": tally.new_threads, "errors": sum(tally.errors.values()),
            "error_kinds": dict(tally.errors)}


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
