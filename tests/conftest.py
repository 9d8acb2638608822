"""Shared fixtures: real PostgreSQL, Redis and IMAP (started by ``make test``), never mocks or skips.

A missing service fails the run loudly: a green run that silently skipped the production engine
would be worse than a red one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Iterator, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
import pytest_asyncio

from gateway.store import Store, open_store
from support_mail import MailSink
from tests import dovecot

if TYPE_CHECKING:
    from playwright.async_api import Browser

T = TypeVar("T")

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _run_isolated(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on its own loop in a worker thread.

    Session fixtures are set up outside the tests' loop; asyncio.run() in the main thread would
    tear down the event loop pytest-asyncio installed for the current test.
    """
    async def main() -> T:
        return await fn()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database (URL-form DSNs only)."""
    return urlsplit(dsn)._replace(path="/" + database).geturl()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    dsn = os.environ.get("CONTACTGATE_TEST_PG_DSN", DEFAULT_PG_DSN)

    async def check() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.close()

    try:
        _run_isolated(check)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {dsn} ({type(exc).__name__}: {exc}).\n"
            "Run the tests with `make test`, which starts PostgreSQL and Redis, or point "
            "CONTACTGATE_TEST_PG_DSN at a server where this user may CREATE DATABASE.",
            pytrace=False,
        )
    return dsn


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    """Create an empty database, yield its URL, drop it (kicking out leftover sessions)."""
    name = f"cg_test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest_asyncio.fixture
async def pg_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    async with fresh_database(pg_admin_dsn) as url:
        yield url


def _redis_ping(url: str, timeout: float = 3.0) -> bytes:
    """PING over a raw socket (AUTH first when the url has a password); returns the reply line."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"only redis:// urls are checked here, got {parts.scheme}://")

    def command(*args: str) -> bytes:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            raw = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                  timeout=timeout) as sock:
        reader = sock.makefile("rb")
        if parts.password is not None:
            auth = ([unquote(parts.username)] if parts.username else []) + [unquote(parts.password)]
            sock.sendall(command("AUTH", *auth))
            reply = reader.readline().strip()
            if not reply.startswith(b"+OK"):
                return reply
        sock.sendall(command("PING"))
        return reader.readline().strip()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("CONTACTGATE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        reply = _redis_ping(url)
    except Exception as exc:
        reply = f"{type(exc).__name__}: {exc}".encode()
    if reply != b"+PONG":
        pytest.fail(
            f"Redis is not usable at {url} (PING answered {reply!r}).\n"
            "Run the tests with `make test`, which starts PostgreSQL and Redis, or set "
            "CONTACTGATE_TEST_REDIS_URL.",
            pytrace=False,
        )
    return url


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened store on each engine. ``store.url`` reopens the same database."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'contactgate.db'}"  # absolute path -> four slashes
        else:
            # Not via the async pg_url fixture: an async fixture cannot request another async
            # fixture lazily, and the sqlite runs should not need PostgreSQL at all.
            admin_dsn = request.getfixturevalue("pg_admin_dsn")
            url = await stack.enter_async_context(fresh_database(admin_dsn))
        opened = await open_store(url)
        stack.push_async_callback(opened.close)
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for a gateway under test, on each engine (a test module may narrow it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(scope="session")
def imap_found() -> dovecot.ImapServer:
    """The real IMAP server (the throwaway Dovecot of ``make test``); fails when it is missing."""
    with dovecot.in_use(alone=False):  # not while another test process restarts it
        return dovecot.server_from_env()


@pytest.fixture
def imap_server(imap_found: dovecot.ImapServer) -> Iterator[dovecot.ImapServer]:
    """The IMAP server, shared with the tests of other processes but never one restarting it."""
    with dovecot.in_use(alone=False):
        yield imap_found


@pytest.fixture
def imap_server_alone(imap_found: dovecot.ImapServer) -> Iterator[dovecot.ImapServer]:
    """The IMAP server for a test that stops and starts it: no other test uses it meanwhile."""
    with dovecot.in_use(alone=True):
        yield imap_found


@pytest.fixture
def imap_user() -> str:
    """A user nobody has used: on the throwaway Dovecot, an empty mailbox of its own."""
    return dovecot.new_user()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator["Browser"]:
    """Headless chromium (tests/browser.py); fails, never skips, when it is not installed."""
    from tests.browser import chromium  # only the browser tests need Playwright imported

    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[MailSink]:
    """A real SMTP server recording what the gateway sends (tests/support_mail.py)."""
    sink = MailSink()
    await sink.start()
    yield sink
    await sink.stop()
