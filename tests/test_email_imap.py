"""The IMAP mailbox reader against a real Dovecot: unseen mail is delivered, then marked \\Seen
(or moved) and never before; IDLE and polling; a store that is down, a message that can never be
taken, a wrong password and a server restart cost a backoff, never a message or a busy loop."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Awaitable, Callable

import pytest
from pydantic import ValidationError

from adapters.email import MailRejected
from adapters.email.imap import REJECTED_KEYWORD, ImapMailbox, ImapSettings
from gateway.store import StoreUnavailable
from tests.dovecot import ImapServer, mail

WAIT = 30.0   # generous: conditions are waited for, never timed


async def eventually(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Inbox:
    """A deliver callback that records what it was given (by Message-ID)."""

    def __init__(self) -> None:
        self.raws: list[bytes] = []
        self.calls = 0
        self.fail: Callable[[bytes], Exception | None] = lambda raw: None

    async def __call__(self, raw: bytes) -> None:
        self.calls += 1
        error = self.fail(raw)
        if error is not None:
            raise error
        self.raws.append(raw)

    def has(self, message_id: str) -> bool:
        return any(message_id.encode() in raw for raw in self.raws)


@pytest.fixture
async def running() -> Callable[[ImapMailbox], Awaitable[ImapMailbox]]:
    """Start a mailbox; it is stopped at the end of the test whatever happened."""
    started: list[ImapMailbox] = []

    async def start(mailbox: ImapMailbox) -> ImapMailbox:
        await mailbox.start()
        started.append(mailbox)
        return mailbox

    yield start
    for mailbox in started:
        await mailbox.stop()


async def test_mail_waiting_before_start_is_delivered_then_marked_seen(
        imap_server: ImapServer, imap_user: str, running) -> None:
    first, raw1 = mail("Where is my parcel?")
    second, raw2 = mail("它到哪儿了？")
    read, raw3 = mail("Already read")
    for raw in (raw1, raw2):
        await imap_server.append(imap_user, raw)
    await imap_server.append(imap_user, raw3, flags="\\Seen")
    inbox = Inbox()

    mailbox = await running(ImapMailbox(imap_server.settings(imap_user), inbox, name="support"))
    await eventually(lambda: inbox.has(first) and inbox.has(second), "the two unseen messages")

    await eventually(lambda: mailbox.state.idling, "IDLE after the first scan")
    assert await imap_server.message_ids(imap_user, "UNSEEN") == set()
    assert await imap_server.message_ids(imap_user, "SEEN") == {first, second, read}
    assert not inbox.has(read), "mail already \\Seen is not ours to take"
    assert inbox.raws[0] == raw1.replace(b"\n", b"\r\n"), "the bytes as stored (imaplib sent CRLF)"
    assert (mailbox.state.delivered, mailbox.state.failed, mailbox.state.connected) == (2, 0, True)


async def test_new_mail_arrives_through_idle(imap_server: ImapServer, imap_user: str, running) -> None:
    inbox = Inbox()
    # A poll interval no test waits for: only IDLE can bring the mail in.
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, poll_interval=3600), inbox, name="idle"))
    await eventually(lambda: mailbox.state.idling, "IDLE")

    for n in range(3):
        message_id, raw = mail(f"Question {n}")
        await imap_server.append(imap_user, raw)
        await eventually(lambda: inbox.has(message_id), f"message {n} pushed by IDLE")
    await eventually(lambda: mailbox.state.idling, "IDLE again")
    assert await imap_server.message_ids(imap_user, "UNSEEN") == set()
    assert mailbox.state.sessions == 1


async def test_mail_arriving_while_a_scan_runs_is_not_left_behind(
        imap_server: ImapServer, imap_user: str, running) -> None:
    """Mail that lands between the last SEARCH and the next IDLE must still be reported: with a
    poll interval no test waits for, a message left behind would never come."""
    inbox = Inbox()
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, poll_interval=3600), inbox, name="burst"))
    await eventually(lambda: mailbox.state.idling, "IDLE")
    sent = [mail(f"Burst {n}") for n in range(25)]

    def append_all() -> None:
        for _, raw in sent:
            imap_server.append_now(imap_user, raw)

    await asyncio.to_thread(append_all)
    await eventually(lambda: all(inbox.has(message_id) for message_id, _ in sent), "every message of the burst")
    assert mailbox.state.delivered == len(sent) == len(inbox.raws)


async def test_a_folder_that_does_not_exist_is_a_clear_error_and_a_retry(
        imap_server: ImapServer, imap_user: str, running) -> None:
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, folder="Support Inbox"), Inbox(),
                                        name="nofolder"))
    await eventually(lambda: mailbox.state.attempts >= 2, "a retry")
    assert "selecting folder 'Support Inbox' failed: NO" in (mailbox.state.last_error or "")
    assert mailbox.running and not mailbox.state.connected


async def test_new_mail_arrives_by_polling_when_idle_is_off(imap_server: ImapServer, imap_user: str, running) -> None:
    inbox = Inbox()
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, idle=False, poll_interval=0.1),
                                        inbox, name="poll"))
    await eventually(lambda: mailbox.state.connected, "connected")

    message_id, raw = mail("Polled")
    await imap_server.append(imap_user, raw)
    await eventually(lambda: inbox.has(message_id), "the polled message")
    assert not mailbox.state.idling
    await eventually(lambda: not imap_server.message_ids_now(imap_user, "UNSEEN"), "the message marked \\Seen")


async def test_a_store_that_is_down_leaves_mail_unseen_and_backs_off(
        imap_server: ImapServer, imap_user: str, running) -> None:
    first, raw1 = mail("First")
    second, raw2 = mail("Second")
    await imap_server.append(imap_user, raw1)
    await imap_server.append(imap_user, raw2)
    inbox = Inbox()
    store_down = True
    inbox.fail = lambda raw: StoreUnavailable("cannot connect to PostgreSQL") if store_down else None
    settings = imap_server.settings(imap_user, backoff_initial=0.05, backoff_max=0.4)

    began = time.monotonic()
    mailbox = await running(ImapMailbox(settings, inbox, name="down"))
    await eventually(lambda: mailbox.state.failed >= 4, "four failed deliveries")
    elapsed = time.monotonic() - began
    # Every retry waits at least half of backoff_initial, so over `elapsed` seconds there can be
    # at most this many calls; a busy loop would make thousands.
    assert inbox.calls <= 2 + elapsed / (settings.backoff_initial / 2)
    assert inbox.calls == mailbox.state.failed, "the scan stops at the first failure"
    assert mailbox.state.connected, "a store that is down is no reason to drop the mailbox"
    assert "could not be stored" in (mailbox.state.last_error or "")
    assert await imap_server.message_ids(imap_user, "UNSEEN") == {first, second}

    store_down = False
    await eventually(lambda: inbox.has(first) and inbox.has(second), "both messages once the store is back")
    await eventually(lambda: not imap_server.message_ids_now(imap_user, "UNSEEN"), "both marked \\Seen")
    assert mailbox.state.delivered == 2
    assert mailbox.state.last_error is None


async def test_a_message_that_can_never_be_taken_is_flagged_and_skipped(
        imap_server: ImapServer, imap_user: str, running, caplog: pytest.LogCaptureFixture) -> None:
    bad, raw_bad = mail("Broken", body="POISON")
    good, raw_good = mail("Fine")
    await imap_server.append(imap_user, raw_bad)
    await imap_server.append(imap_user, raw_good)
    inbox = Inbox()
    attempts: dict[str, int] = {}

    def fail(raw: bytes) -> Exception | None:
        if b"POISON" in raw:
            attempts[bad] = attempts.get(bad, 0) + 1
            return MailRejected("the message has no sender address")
        return None

    inbox.fail = fail
    with caplog.at_level(logging.ERROR, logger="contactgate.email.imap"):
        mailbox = await running(ImapMailbox(imap_server.settings(imap_user), inbox, name="poison"))
        await eventually(lambda: inbox.has(good), "the good message behind the bad one")

        # More mail makes the mailbox scan again: the flagged message is not tried again.
        later, raw_later = mail("Later")
        await imap_server.append(imap_user, raw_later)
        await eventually(lambda: inbox.has(later), "a later message")

    assert attempts == {bad: 1}
    assert mailbox.state.rejected == 1
    assert await imap_server.message_ids(imap_user, "UNSEEN") == {bad}, "left unseen for a person to see"
    assert await imap_server.message_ids(imap_user, "KEYWORD", REJECTED_KEYWORD) == {bad}
    refused = [r for r in caplog.records if "cannot be taken" in r.getMessage()]
    assert len(refused) == 1 and "no sender address" in refused[0].getMessage()


async def test_a_wrong_password_is_logged_and_retried_with_backoff(
        imap_server: ImapServer, imap_user: str, running, caplog: pytest.LogCaptureFixture) -> None:
    settings = imap_server.settings(imap_user, password="not-the-password", backoff_initial=0.02, backoff_max=0.2)
    inbox = Inbox()
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="contactgate.email.imap"):
        mailbox = await running(ImapMailbox(settings, inbox, name="wrongpw"))
        # Two, not more: Dovecot itself delays each further failed login from one address.
        await eventually(lambda: mailbox.state.login_failures >= 2, "two refused logins")
    elapsed = time.monotonic() - began

    assert mailbox.running and not mailbox.state.connected
    refused = [r.getMessage() for r in caplog.records if r.name == "contactgate.email.imap"]
    assert refused and all(f"login refused for {imap_user}@{imap_server.host}:{imap_server.port}" in m
                           for m in refused), refused
    assert "AUTHENTICATIONFAILED" in refused[0] or "Authentication failed" in refused[0]
    # A refused login waits at least half of four times backoff_initial before the next try.
    assert mailbox.state.attempts <= 2 + elapsed / (4 * settings.backoff_initial / 2)
    assert inbox.calls == 0


async def test_the_server_restarting_mid_session_costs_a_reconnect_not_mail(
        imap_server_alone: ImapServer, imap_user: str, running) -> None:
    imap_server = imap_server_alone  # it stops and starts the server
    inbox = Inbox()
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, poll_interval=3600), inbox, name="restart"))
    await eventually(lambda: mailbox.state.idling, "IDLE")
    before, raw = mail("Before the restart")
    await imap_server.append(imap_user, raw)
    await eventually(lambda: inbox.has(before), "mail before the restart")
    await eventually(lambda: mailbox.state.idling, "IDLE again")

    await asyncio.to_thread(imap_server.stop_server)
    try:
        await eventually(lambda: not mailbox.state.connected, "the mailbox noticing the server is gone")
        attempts = mailbox.state.attempts
        # While the server is down, connections are refused: the mailbox keeps trying, backing off.
        await eventually(lambda: mailbox.state.attempts >= attempts + 2, "reconnect attempts while down")
        assert "reconnecting in" in (mailbox.state.last_error or "")
    finally:
        await asyncio.to_thread(imap_server.start_server)

    await eventually(lambda: mailbox.state.idling, "IDLE on a new connection")
    after, raw = mail("After the restart")
    await imap_server.append(imap_user, raw)
    await eventually(lambda: inbox.has(after), "mail appended after the restart")
    assert mailbox.state.sessions >= 2
    assert [m for m in (before, after) if not inbox.has(m)] == []
    assert sum(raw.count(before.encode()) for raw in inbox.raws) == 1


async def test_a_server_restart_while_the_mail_is_stored_gets_it_delivered_again(
        imap_server_alone: ImapServer, imap_user: str, running) -> None:
    """The connection drops after deliver and before \\Seen: the message is delivered again (the
    channel dedupes by Message-ID), never lost."""
    imap_server = imap_server_alone  # it stops and starts the server
    message_id, raw = mail("In flight")
    await imap_server.append(imap_user, raw)
    inbox = Inbox()
    stopped = False

    def fail(raw: bytes) -> Exception | None:
        nonlocal stopped
        if not stopped:
            stopped = True
            imap_server.stop_server()   # the server goes away while this mail is being stored
            imap_server.start_server()
        return None

    inbox.fail = fail
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user), inbox, name="inflight"))
    await eventually(lambda: len(inbox.raws) == 2, "the message delivered again after the reconnect")
    await eventually(lambda: not imap_server.message_ids_now(imap_user, "UNSEEN"), "then marked \\Seen")
    assert all(message_id.encode() in r for r in inbox.raws)
    assert mailbox.state.sessions == 2


async def test_move_to_moves_stored_mail_into_its_folder(imap_server: ImapServer, imap_user: str, running) -> None:
    message_id, raw = mail("Move me")
    await imap_server.append(imap_user, raw)
    inbox = Inbox()
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, move_to="Processed/Email"), inbox,
                                        name="move"))
    await eventually(lambda: inbox.has(message_id), "the message")
    await eventually(lambda: not imap_server.message_ids_now(imap_user), "INBOX emptied")
    assert await imap_server.message_ids(imap_user, "SEEN", folder="Processed/Email") == {message_id}
    assert mailbox.state.delivered == 1

    later, raw = mail("Move me too")
    await imap_server.append(imap_user, raw)
    await eventually(lambda: later in imap_server.message_ids_now(imap_user, folder="Processed/Email"),
                     "the second message moved into the existing folder")


async def test_imaps_and_starttls(imap_server: ImapServer, imap_user: str, running) -> None:
    assert imap_server.tls_port and imap_server.ca_file, "the throwaway Dovecot serves IMAPS"
    for settings in (imap_server.settings(imap_user, tls=True, port=imap_server.tls_port, ca_file=imap_server.ca_file),
                     imap_server.settings(imap_user, starttls=True, ca_file=imap_server.ca_file)):
        message_id, raw = mail(f"Over TLS ({'imaps' if settings.tls else 'starttls'})")
        await imap_server.append(imap_user, raw)
        inbox = Inbox()
        mailbox = await running(ImapMailbox(settings, inbox, name="tls"))
        await eventually(lambda: inbox.has(message_id), f"mail over {'IMAPS' if settings.tls else 'STARTTLS'}")
        await mailbox.stop()


async def test_a_certificate_nobody_vouches_for_is_refused(imap_server: ImapServer, imap_user: str, running) -> None:
    message_id, raw = mail("Not over an untrusted link")
    await imap_server.append(imap_user, raw)
    inbox = Inbox()
    mailbox = await running(ImapMailbox(imap_server.settings(imap_user, tls=True, port=imap_server.tls_port),
                                        inbox, name="untrusted"))
    await eventually(lambda: mailbox.state.attempts >= 2, "a retry")
    assert "CERTIFICATE_VERIFY_FAILED" in (mailbox.state.last_error or "")
    assert inbox.calls == 0 and not mailbox.state.connected


async def test_stop_logs_out_and_is_idempotent(imap_server: ImapServer, imap_user: str) -> None:
    inbox = Inbox()
    mailbox = ImapMailbox(imap_server.settings(imap_user), inbox, name="stop")
    await mailbox.stop()   # never started: nothing to do
    await mailbox.start()
    with pytest.raises(RuntimeError, match="already running"):
        await mailbox.start()
    await eventually(lambda: mailbox.state.idling, "IDLE")
    await mailbox.stop()
    await mailbox.stop()
    assert not mailbox.running and not mailbox.state.connected
    await eventually(lambda: f"imap({imap_user})" in _logged_out(imap_server), "Dovecot logging the LOGOUT")

    # Stopped mail stays where it is; a second start picks it up.
    message_id, raw = mail("While stopped")
    await imap_server.append(imap_user, raw)
    await mailbox.start()
    try:
        await eventually(lambda: inbox.has(message_id), "mail that came while stopped")
    finally:
        await mailbox.stop()


async def test_stop_is_prompt_while_the_server_is_unreachable(imap_user: str) -> None:
    with socket.socket() as probe:   # a port nothing listens on: every connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = ImapMailbox(ImapSettings(host="127.0.0.1", port=port, username=imap_user, password="x",
                                       backoff_initial=60, backoff_max=60), Inbox(), name="nowhere")
    await mailbox.start()
    await eventually(lambda: mailbox.state.attempts >= 1 and mailbox.state.last_error is not None, "a refusal")
    await asyncio.wait_for(mailbox.stop(), WAIT)   # not the 60 s backoff
    assert "reconnecting in" in (mailbox.state.last_error or "")


def _logged_out(server: ImapServer) -> str:
    return "\n".join(line for line in server.log_path().read_text(errors="replace").splitlines()
                     if "Logged out" in line)


def test_settings_are_checked() -> None:
    base = dict(host="imap.example.com", username="support@example.com", password="pw")
    assert ImapSettings(**base).effective_port == 143
    assert ImapSettings(**base, tls=True).effective_port == 993
    assert "**" in repr(ImapSettings(**base).password) and "pw" not in repr(ImapSettings(**base))
    for bad, needle in ((dict(tls=True, starttls=True), "exclude each other"),
                        (dict(folder="INBOX", move_to="INBOX"), "another folder"),
                        (dict(backoff_initial=10, backoff_max=1), "backoff_max"),
                        (dict(idle_timeout=3600), "idle_timeout"),
                        (dict(poll_intervall=5), "poll_intervall"),
                        (dict(move_to="已处理"), "modified UTF-7"),
                        (dict(folder="INBOX\r\nA1 DELETE INBOX"), "printable")):
        with pytest.raises(ValidationError, match=needle):
            ImapSettings(**base, **bad)
