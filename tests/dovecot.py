"""Test support for IMAP: the real Dovecot that scripts/ensure-services.sh provides, a plain
client (the standard library's imaplib, not the aioimaplib under test) to put mail into a
mailbox and look at its flags, and a way to stop and start that server mid-test.

The throwaway Dovecot lets any user name log in with one password, so every test takes a fresh
user and so an empty mailbox of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Iterator

import pytest

from adapters.email.imap import ImapSettings

ENV = "CONTACTGATE_TEST_IMAP_"


def new_user() -> str:
    return f"t{uuid.uuid4().hex[:12]}@example.test"


def mail(subject: str, body: str = "Hello.", *, message_id: str | None = None,
         sender: str = "customer@example.org") -> tuple[str, bytes]:
    """A small real message: its Message-ID and its bytes."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "support@example.test"
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="example.org")
    message.set_content(body)
    return message["Message-ID"], message.as_bytes()


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    password: str
    tls_port: int | None
    ca_file: Path | None
    dovecot_conf: Path | None   # set when it is the throwaway Dovecot, which tests may restart

    # -- settings for the code under test ---------------------------------------------------

    def settings(self, user: str, **overrides: Any) -> ImapSettings:
        """Settings for ``user``'s INBOX with test-sized backoffs (a test overrides the rest)."""
        values: dict[str, Any] = dict(host=self.host, port=self.port, username=user, password=self.password,
                                      backoff_initial=0.05, backoff_max=0.5, timeout=10)
        values.update(overrides)
        return ImapSettings(**values)

    # -- a plain client ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _client(self, user: str) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            client.login(user, self.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append_now(self, user: str, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        with self._client(user) as client:
            status, answer = client.append(folder, flags or None, None, raw)
            assert status == "OK", answer

    async def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        await asyncio.to_thread(self.append_now, user, raw, folder, flags)

    def message_ids_now(self, user: str, *criteria: str, folder: str = "INBOX") -> set[str]:
        """Message-IDs of the messages in ``folder`` that match the IMAP SEARCH ``criteria``."""
        with self._client(user) as client:
            status, answer = client.select(folder, readonly=True)
            assert status == "OK", answer
            status, found = client.uid("SEARCH", *(criteria or ("ALL",)))
            assert status == "OK", found
            ids: set[str] = set()
            for uid in found[0].split():
                status, parts = client.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                assert status == "OK", parts
                header = b"".join(part[1] for part in parts if isinstance(part, tuple))
                match = re.search(rb"<[^>]+>", header)
                assert match, header
                ids.add(match.group().decode())
            return ids

    async def message_ids(self, user: str, *criteria: str, folder: str = "INBOX") -> set[str]:
        return await asyncio.to_thread(self.message_ids_now, user, *criteria, folder=folder)

    # -- the server itself ------------------------------------------------------------------

    def _throwaway(self) -> Path:
        if self.dovecot_conf is None:
            pytest.fail(f"this test stops and starts the IMAP server, which needs the throwaway Dovecot "
                        f"({ENV}DOVECOT_CONF, written by scripts/ensure-services.sh)", pytrace=False)
        return self.dovecot_conf

    def _master_pid(self) -> int | None:
        conf = self._throwaway()
        base = subprocess.run(["doveconf", "-c", str(conf), "-h", "base_dir"], check=True,
                              capture_output=True, text=True).stdout.strip()
        try:
            pid = int(Path(base, "master.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop_server(self) -> None:
        """Stop the throwaway Dovecot and wait until it is gone (its clients are disconnected)."""
        pid = self._master_pid()
        assert pid is not None, "the throwaway Dovecot is not running"
        # Like an init system stopping the service: SIGTERM to the master and every process
        # under it (one imap process per client), which Dovecot answers with "* BYE Server
        # shutting down". The master alone would leave clients connected for another 10 s, and
        # a child may still answer a command after the master is gone: the server is stopped
        # once all of them are.
        processes = {pid, *_children(pid)}
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(self._alive(p) for p in processes) or self.greets():
            assert time.monotonic() < deadline, f"Dovecot (pid {pid}) did not stop within 30 s"
            time.sleep(0.05)

    def start_server(self) -> None:
        """Start the throwaway Dovecot again from its config and wait until it greets."""
        conf = self._throwaway()
        subprocess.run(["dovecot", "-c", str(conf)], check=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.greets():
            assert time.monotonic() < deadline, "Dovecot did not greet within 30 s of starting"
            time.sleep(0.05)

    def greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                return sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie is gone for our purposes.
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return False

    def log_path(self) -> Path:
        return self._throwaway().parent / "log"


def _children(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces and parentheses: the fields after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@contextlib.contextmanager
def in_use(*, alone: bool) -> Iterator[None]:
    """Hold the IMAP server across test processes (pytest-xdist): shared by the tests that use
    it, ``alone`` for one that stops and starts it, so no other test meets it down."""
    import fcntl
    import tempfile

    path = Path(tempfile.gettempdir()) / f"contactgate-dovecot-{os.environ.get(ENV + 'PORT', 'none')}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def server_from_env() -> ImapServer:
    """The IMAP server of ``.services/env``; fails the test run (never skips) when it is missing."""
    host = os.environ.get(ENV + "HOST")
    if not host:
        pytest.fail(f"{ENV}HOST is not set: run the tests with `make test`, which starts a throwaway Dovecot "
                    f"(or `. .services/env` after scripts/ensure-services.sh).", pytrace=False)
    try:
        port = int(os.environ[ENV + "PORT"])
        password = os.environ[ENV + "PASSWORD"]
    except (KeyError, ValueError) as exc:
        pytest.fail(f"{ENV}HOST is set, so {ENV}PORT and {ENV}PASSWORD must be too ({exc!r})", pytrace=False)
    tls_port = os.environ.get(ENV.replace("IMAP_", "IMAPS_") + "PORT")
    ca_file = os.environ.get(ENV + "CA_FILE")
    conf = os.environ.get(ENV + "DOVECOT_CONF")
    server = ImapServer(host=host, port=port, password=password, tls_port=int(tls_port) if tls_port else None,
                        ca_file=Path(ca_file) if ca_file else None, dovecot_conf=Path(conf) if conf else None)
    try:
        with server._client("probe@example.test"):
            pass
    except (OSError, imaplib.IMAP4.error) as exc:
        pytest.fail(f"the IMAP server at {host}:{port} does not let a user log in ({type(exc).__name__}: {exc}).\n"
                    "Run the tests with `make test`, which starts a throwaway Dovecot.", pytrace=False)
    return server
