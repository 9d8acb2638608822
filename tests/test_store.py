"""The storage contract, run against both engines through the parametrized ``store`` fixture."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from urllib.parse import urlsplit

import asyncpg
import pytest

from gateway.model import Author, Conversation, ConversationState, EventKind, StateChange
from gateway.store import ConversationKey, NotFound, Store, StoreError, StoreUnavailable, open_store
from gateway.store.migrations import MIGRATIONS
from tests.support import raw_execute

ALL_VERSIONS = [m.version for m in MIGRATIONS]


async def new_conversation(store: Store, channel: str = "webchat") -> Conversation:
    customer = await store.create_customer(name="Ada")
    return await store.create_conversation(customer.id, channel)


async def say(store: Store, conv: Conversation, text: str, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("author", Author.CUSTOMER)
    return await store.append_event(conv.id, kind=EventKind.MESSAGE, text=text, **kw)


async def old_conversation(store: Store) -> Conversation:
    """A customer's conversation written the way code before version 5 did."""
    now = datetime.now().astimezone()
    customer_id, conversation_id = f"ada-{now.timestamp()}", f"old-{now.timestamp()}"
    at: object = now.isoformat(timespec="microseconds") if store.url.startswith("sqlite") else now
    await raw_execute(store.url, "INSERT INTO customers (id, name, created_at) VALUES (?, 'Ada', ?)", customer_id, at)
    await raw_execute(store.url, "INSERT INTO identities (channel, address, customer_id) VALUES ('email', ?, ?)",
                      f"Ada-{customer_id}@example.com".lower(), customer_id)
    await raw_execute(store.url, "INSERT INTO conversations (id, customer_id, channel, state, last_seq, created_at, "
                      "updated_at) VALUES (?, ?, 'webchat', 'bot', 0, ?, ?)", conversation_id, customer_id, at, at)
    return await store.get_conversation(conversation_id)


async def applied_versions(url: str) -> list[int]:
    """Read schema_migrations with the raw driver, independent of the store code."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


# customers and identities ---------------------------------------------------------------------
async def test_create_and_get_customer(store: Store) -> None:
    made = await store.create_customer(name="Ada", tier="gold", attributes={"lang": "zh", "n": [1, 2]})
    assert len(made.id) == 32 and int(made.id, 16) >= 0  # uuid4().hex
    assert made.created_at.utcoffset() == timedelta(0)
    assert await store.get_customer(made.id) == made

    given = await store.create_customer(name=None, customer_id="cust-1")
    assert given.id == "cust-1" and given.tier is None and given.attributes == {}
    assert await store.get_customer("cust-1") == given
    with pytest.raises(StoreError):
        await store.create_customer(name="again", customer_id="cust-1")


async def test_update_customer_changes_only_given_fields(store: Store) -> None:
    c = await store.create_customer(name="Ada", tier="gold", attributes={"lang": "en"})

    renamed = await store.update_customer(c.id, name="Ada L.")
    assert (renamed.name, renamed.tier, renamed.attributes) == ("Ada L.", "gold", {"lang": "en"})

    untiered = await store.update_customer(c.id, tier=None)
    assert (untiered.name, untiered.tier, untiered.attributes) == ("Ada L.", None, {"lang": "en"})

    reattr = await store.update_customer(c.id, attributes={"vip": True})
    assert (reattr.name, reattr.tier, reattr.attributes) == ("Ada L.", None, {"vip": True})

    assert await store.update_customer(c.id) == reattr  # nothing given: nothing changes
    assert (await store.update_customer(c.id, attributes=None)).attributes == {}
    assert (await store.get_customer(c.id)).created_at == c.created_at


async def test_identities_find_and_relink(store: Store) -> None:
    a = await store.create_customer(name="A")
    b = await store.create_customer(name="B")
    assert await store.find_customer("email", "x@example.com") is None

    await store.add_identity(a.id, "email", "x@example.com")
    await store.add_identity(a.id, "email", "x@example.com")  # idempotent
    await store.add_identity(a.id, "telegram", "42")
    assert await store.find_customer("email", "x@example.com") == a
    assert await store.find_customer("webchat", "x@example.com") is None  # channel is part of the key

    await store.add_identity(b.id, "email", "x@example.com")  # relink moves it
    assert await store.find_customer("email", "x@example.com") == b
    assert await store.find_customer("telegram", "42") == a


# conversations ----------------------------------------------------------------------------------
async def test_conversation_lifecycle(store: Store) -> None:
    conv = await new_conversation(store)
    assert conv.state is ConversationState.BOT and conv.last_seq == 0
    assert conv.queue is None and conv.agent_id is None and conv.closed_at is None
    assert conv.created_at == conv.updated_at and conv.created_at.utcoffset() == timedelta(0)
    assert len(conv.id) == 32
    assert await store.get_conversation(conv.id) == conv

    await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                             data={"queue": "billing", "position": 3},
                             change=StateChange(ConversationState.QUEUED, queue="billing"))
    queued = await store.get_conversation(conv.id)
    assert (queued.state, queued.queue, queued.agent_id) == (ConversationState.QUEUED, "billing", None)

    await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.ASSIGNED,
                             change=StateChange(ConversationState.ASSIGNED, agent_id="agent-7"))
    assigned = await store.get_conversation(conv.id)
    assert (assigned.state, assigned.queue, assigned.agent_id) == (
        ConversationState.ASSIGNED, "billing", "agent-7")  # queue kept

    closed_ev, _ = await store.append_event(
        conv.id, author=Author.AGENT, kind=EventKind.CLOSED, data={"disposition": "solved"},
        change=StateChange(ConversationState.CLOSED, queue=None))
    closed = await store.get_conversation(conv.id)
    assert (closed.state, closed.queue, closed.agent_id) == (ConversationState.CLOSED, None, "agent-7")
    assert closed.closed_at == closed_ev.at == closed.updated_at
    assert closed.last_seq == 3
    assert conv.id not in [c.id for c in await store.open_conversations()]


async def test_closed_at_kept_on_reclose_and_cleared_on_reopen(store: Store) -> None:
    conv = await new_conversation(store)
    first, _ = await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                                        change=StateChange(ConversationState.CLOSED))
    await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                             change=StateChange(ConversationState.CLOSED))
    assert (await store.get_conversation(conv.id)).closed_at == first.at

    await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                             change=StateChange(ConversationState.QUEUED, queue="q"))
    assert (await store.get_conversation(conv.id)).closed_at is None


async def test_append_without_change_keeps_state_and_bumps_updated_at(store: Store) -> None:
    conv = await new_conversation(store)
    await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                             change=StateChange(ConversationState.QUEUED, queue="q", agent_id="a"))
    before = await store.get_conversation(conv.id)
    ev, _ = await say(store, conv, "still there?")
    after = await store.get_conversation(conv.id)
    assert (after.state, after.queue, after.agent_id) == (before.state, before.queue, before.agent_id)
    assert after.updated_at == ev.at >= before.updated_at
    assert after.last_seq == 2


async def test_state_change_is_atomic_with_the_event(store: Store) -> None:
    conv = await new_conversation(store)
    await say(store, conv, "hello")
    before = await store.get_conversation(conv.id)
    # The data cannot be serialised, so the insert fails after last_seq was bumped and the state
    # changed inside the transaction: all of it must roll back.
    with pytest.raises(TypeError):
        await store.append_event(conv.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                                 data={"bad": object()},
                                 change=StateChange(ConversationState.QUEUED, queue="q"))
    assert await store.get_conversation(conv.id) == before
    assert [e.seq for e in await store.events_after(conv.id, 0)] == [1]
    ev, created = await say(store, conv, "next")  # and the store is still usable
    assert created and ev.seq == 2


async def test_a_bad_append_in_a_group_commit_fails_alone(store: Store) -> None:
    # Appends issued together share one transaction: one that cannot be stored must fail by
    # itself and leave no trace, while the others commit with gapless seqs.
    a, b = await new_conversation(store), await new_conversation(store)
    outcomes = await asyncio.gather(
        say(store, a, "a1"),
        store.append_event(a.id, author=Author.SYSTEM, kind=EventKind.QUEUED, data={"bad": object()},
                           change=StateChange(ConversationState.QUEUED, queue="q")),
        say(store, b, "b1"),
        say(store, replace(a, id="no-such-conversation"), "lost"),
        say(store, a, "a2", client_id="x"),
        say(store, a, "a2 again", client_id="x"),
        say(store, b, "b2"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], TypeError) and isinstance(outcomes[3], NotFound), outcomes
    assert [e.seq for e in await store.events_after(a.id, 0)] == [1, 2]
    assert [e.text for e in await store.events_after(b.id, 0)] == ["b1", "b2"]
    assert outcomes[5] == (outcomes[4][0], False)  # the resend inside the same batch is deduped
    assert (await store.get_conversation(a.id)).state is ConversationState.BOT


# events -------------------------------------------------------------------------------------------
async def test_seq_is_gapless_and_events_round_trip(store: Store) -> None:
    conv = await new_conversation(store)
    appended = []
    for i in range(10):
        ev, created = await say(store, conv, f"msg {i}", client_id=f"c{i}", data={"i": i, "ü": "字"})
        assert created
        appended.append(ev)
    assert [e.seq for e in appended] == list(range(1, 11))
    assert appended[0].at.utcoffset() == timedelta(0)
    assert list(await store.events_after(conv.id, 0)) == appended
    assert (await store.get_conversation(conv.id)).last_seq == 10


async def test_events_after_with_limit(store: Store) -> None:
    conv = await new_conversation(store)
    for i in range(5):
        await say(store, conv, str(i))
    assert [e.seq for e in await store.events_after(conv.id, 2, limit=2)] == [3, 4]
    assert [e.seq for e in await store.events_after(conv.id, 2)] == [3, 4, 5]
    assert [e.seq for e in await store.events_after(conv.id, 0, limit=10)] == [1, 2, 3, 4, 5]
    assert list(await store.events_after(conv.id, 2, limit=0)) == []
    assert list(await store.events_after(conv.id, 5)) == []
    empty = await new_conversation(store)
    assert list(await store.events_after(empty.id, 0)) == []


async def test_dedupe_by_client_id_returns_existing(store: Store) -> None:
    conv = await new_conversation(store)
    first, created = await say(store, conv, "hello", client_id="m-1")
    assert created
    again, created = await say(store, conv, "hello (retried)", client_id="m-1",
                               change=StateChange(ConversationState.QUEUED, queue="q"))
    assert not created and again == first
    after = await store.get_conversation(conv.id)
    assert after.last_seq == 1 and after.state is ConversationState.BOT  # nothing written
    assert list(await store.events_after(conv.id, 0)) == [first]
    ev, created = await say(store, conv, "no client id")  # seq continues without a gap
    assert created and ev.seq == 2


async def test_same_client_id_from_another_author_is_not_deduped(store: Store) -> None:
    conv = await new_conversation(store)
    _, c1 = await say(store, conv, "from customer", client_id="x")
    ev, c2 = await say(store, conv, "from agent", client_id="x", author=Author.AGENT)
    assert c1 and c2 and ev.seq == 2
    other = await new_conversation(store)  # and client ids are per conversation
    _, c3 = await say(store, other, "elsewhere", client_id="x")
    assert c3


async def test_concurrent_appends_get_seqs_1_to_n(store: Store) -> None:
    conv = await new_conversation(store)
    results = await asyncio.gather(*(say(store, conv, f"m{i}") for i in range(50)))
    assert sorted(ev.seq for ev, _ in results) == list(range(1, 51))
    assert [e.seq for e in await store.events_after(conv.id, 0)] == list(range(1, 51))
    assert (await store.get_conversation(conv.id)).last_seq == 50


async def test_concurrent_duplicates_store_one_event(store: Store) -> None:
    conv = await new_conversation(store)
    results = await asyncio.gather(*(say(store, conv, "hi", client_id="dup") for _ in range(20)))
    assert sum(created for _, created in results) == 1
    assert all(ev == results[0][0] for ev, _ in results)
    assert len(await store.events_after(conv.id, 0)) == 1
    assert (await store.get_conversation(conv.id)).last_seq == 1


async def test_concurrent_duplicates_across_two_store_instances(store: Store) -> None:
    """Two gateway processes sharing a database: the database, not a Python lock, must dedupe."""
    other = await open_store(store.url)
    try:
        conv = await new_conversation(store)
        results = await asyncio.gather(*(
            say(s, conv, "hi", client_id="dup") for _ in range(10) for s in (store, other)))
        assert sum(created for _, created in results) == 1
        gapless = await asyncio.gather(*(say(s, conv, "m") for _ in range(10) for s in (store, other)))
        assert sorted(ev.seq for ev, _ in gapless) == list(range(2, 22))
    finally:
        await other.close()


async def test_sqlite_append_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    """A batch's statements run on the event loop; taking the write lock from another process
    must still wait on aiosqlite's thread (busy_timeout), not stall the loop or fail."""
    path = tmp_path / "shared.db"
    store = await open_store(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        conv = await new_conversation(store)
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        append = asyncio.ensure_future(say(store, conv, "waits"))
        loop = asyncio.get_running_loop()
        longest_tick = 0.0
        for _ in range(20):  # the loop keeps running while the append waits for the lock
            before = loop.time()
            await asyncio.sleep(0.01)
            longest_tick = max(longest_tick, loop.time() - before)
        assert longest_tick < 1.0 and not append.done()
        other.execute("COMMIT")
        event, created = await asyncio.wait_for(append, 10)
        assert created and event.seq == 1
        db = store._db  # type: ignore[attr-defined]
        assert (await db.execute_fetchall("PRAGMA busy_timeout"))[0][0] == 5000  # restored
    finally:
        other.close()
        await store.close()


async def test_open_conversations_oldest_first_without_closed(store: Store) -> None:
    a = await new_conversation(store)
    b = await new_conversation(store)
    c = await new_conversation(store)
    await store.append_event(b.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                             change=StateChange(ConversationState.CLOSED))
    await store.append_event(c.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                             change=StateChange(ConversationState.QUEUED, queue="q"))
    assert [x.id for x in await store.open_conversations()] == [a.id, c.id]


async def test_latest_conversation(store: Store) -> None:
    customer = await store.create_customer(name="Ada")
    assert await store.latest_conversation(customer.id, "email") is None
    await store.create_conversation(customer.id, "email")
    newer = await store.create_conversation(customer.id, "email")
    chat = await store.create_conversation(customer.id, "webchat")
    assert await store.latest_conversation(customer.id, "email") == newer
    assert await store.latest_conversation(customer.id, "webchat") == chat
    await store.append_event(newer.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                             change=StateChange(ConversationState.CLOSED))
    # Closed ones count too: deciding whether to reopen or start afresh is the caller's job.
    assert (await store.latest_conversation(customer.id, "email")).id == newer.id  # type: ignore[union-attr]
    assert await store.latest_conversation("nobody", "email") is None


async def test_unknown_ids_raise_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_customer("nope")
    with pytest.raises(NotFound):
        await store.update_customer("nope", name="x")
    with pytest.raises(NotFound):
        await store.update_customer("nope")
    with pytest.raises(NotFound):
        await store.add_identity("nope", "email", "a@b")
    with pytest.raises(NotFound):
        await store.create_conversation("nope", "email")
    with pytest.raises(NotFound):
        await store.get_conversation("nope")
    with pytest.raises(NotFound):
        await store.append_event("nope", author=Author.CUSTOMER, kind=EventKind.MESSAGE, text="x")
    with pytest.raises(NotFound):
        await store.append_event("nope", author=Author.CUSTOMER, kind=EventKind.MESSAGE,
                                 client_id="c", change=StateChange(ConversationState.CLOSED))
    with pytest.raises(NotFound):
        await store.events_after("nope", 0)


# migrations, durability, availability -------------------------------------------------------------
async def test_migrations_are_idempotent(store: Store) -> None:
    assert await applied_versions(store.url) == ALL_VERSIONS
    conv = await new_conversation(store)
    again = await open_store(store.url)  # re-runs the migrator on a migrated database
    try:
        assert await again.get_conversation(conv.id) == conv
    finally:
        await again.close()
    await store.open()  # opening an open store is a no-op
    assert await applied_versions(store.url) == ALL_VERSIONS


async def test_a_database_at_version_3_upgrades(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.store import migrations

    with monkeypatch.context() as at_version_3:
        at_version_3.setattr(migrations, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version <= 3))
        old = await open_store(store_url)
        try:
            conv = await old_conversation(old)
            if store_url.startswith("sqlite"):  # the same SQL as before version 4
                await say(old, conv, "written before the upgrade", client_id="m-1")
        finally:
            await old.close()
    if store_url.startswith("postgres"):  # the batch function as version 3 code called it
        conn = await asyncpg.connect(store_url)
        try:
            await conn.execute(
                "SELECT * FROM contactgate_append_events($1::text[], $2::timestamptz[], $3::text[], $4::bool[], "
                "$5::text[], $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], "
                "$12::jsonb[])", [conv.id], [conv.created_at], [None], [False], [None], [False], [None],
                ["customer"], ["message"], ["written before the upgrade"], ["m-1"], ["{}"])
        finally:
            await conn.close()
    assert await applied_versions(store_url) == [1, 2, 3]

    upgraded = await open_store(store_url)
    try:
        assert await applied_versions(store_url) == ALL_VERSIONS
        [before] = await upgraded.events_after(conv.id, 0)
        assert (before.seq, before.text) == (1, "written before the upgrade")
        assert (await say(upgraded, conv, "resent", client_id="m-1")) == (before, False)
        event, created = await say(upgraded, conv, "after", author=Author.AGENT, outbox="email")
        assert created and [i.seq for i in await upgraded.outbox_items(conv.id)] == [event.seq]
        if store_url.startswith("postgres"):  # one batch function, the one that writes the outbox
            conn = await asyncpg.connect(store_url)
            try:
                assert await conn.fetchval(
                    "SELECT count(*) FROM pg_proc WHERE proname = 'contactgate_append_events'") == 1
            finally:
                await conn.close()
    finally:
        await upgraded.close()


async def test_concurrent_first_open_postgres(pg_url: str) -> None:
    # Without the advisory lock, racing CREATE TABLEs fail with unique violations.
    stores = await asyncio.gather(*(open_store(pg_url) for _ in range(4)))
    for s in stores:
        await s.ping()
        await s.close()
    assert await applied_versions(pg_url) == ALL_VERSIONS


async def test_concurrent_first_open_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    stores = await asyncio.gather(*(open_store(url) for _ in range(4)))
    for s in stores:
        await s.ping()
        await s.close()
    assert await applied_versions(url) == ALL_VERSIONS


async def test_data_survives_close_and_reopen(store: Store) -> None:
    conv = await new_conversation(store)
    await store.add_identity(conv.customer_id, "email", "ada@example.com")
    events = [(await say(store, conv, f"m{i}", client_id=str(i)))[0] for i in range(3)]
    await store.close()
    await store.close()  # idempotent

    reopened = await open_store(store.url)
    try:
        assert await reopened.get_conversation(conv.id) == replace(
            conv, last_seq=3, updated_at=events[-1].at)
        assert list(await reopened.events_after(conv.id, 0)) == events
        assert (await reopened.find_customer("email", "ada@example.com")).id == conv.customer_id  # type: ignore[union-attr]
        _, created = await say(reopened, conv, "m0 again", client_id="0")  # dedupe survives too
        assert not created
    finally:
        await reopened.close()


async def test_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.get_customer("x")
    with pytest.raises(StoreUnavailable):
        await store.append_event("x", author=Author.CUSTOMER, kind=EventKind.MESSAGE)


async def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="127.0.0.1:1"):
        await open_store("postgresql://postgres:secret@127.0.0.1:1/postgres")
    try:
        await open_store("postgresql://postgres:secret@127.0.0.1:1/postgres")
    except StoreUnavailable as exc:
        assert "secret" not in str(exc)  # the password never reaches logs


async def test_missing_postgres_database_is_unavailable(pg_admin_dsn: str) -> None:
    missing = urlsplit(pg_admin_dsn)._replace(path="/cg_test_missing_database").geturl()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await open_store(missing)


async def test_postgres_pool_closed_underneath_is_unavailable(pg_url: str) -> None:
    store = await open_store(pg_url)
    try:
        store._pool.terminate()  # type: ignore[attr-defined]  # e.g. torn down by a shutdown race
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.ping()
    finally:
        await store.close()


async def test_postgres_lost_connections_are_unavailable_then_recover(pg_url: str, pg_admin_dsn: str) -> None:
    store = await open_store(pg_url)
    try:
        conv = await new_conversation(store)
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            database = pg_url.rsplit("/", 1)[1]
            # Kill our pooled connection while a query is running on it.
            busy = asyncio.ensure_future(_slow_query(store))
            await asyncio.sleep(0.3)
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
            with pytest.raises(StoreUnavailable):
                await busy
        finally:
            await admin.close()
        # The pool replaces the dead connection: the next call works again.
        assert (await store.get_conversation(conv.id)).id == conv.id
    finally:
        await store.close()


async def _slow_query(store: Store) -> None:
    async with store._conn() as conn:  # type: ignore[attr-defined]
        await conn.execute("SELECT pg_sleep(5)")


async def test_unopenable_sqlite_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        await open_store(f"sqlite:///{tmp_path / 'a-file' / 'x.db'}")


async def test_sqlite_url_forms_and_durability_settings(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = await open_store("sqlite:///data/sub/gateway.db")  # relative, parents created
    try:
        await new_conversation(rel)
        assert (tmp_path / "data" / "sub" / "gateway.db").is_file()
        db = rel._db  # type: ignore[attr-defined]
        assert (await db.execute_fetchall("PRAGMA journal_mode"))[0][0] == "wal"
        assert (await db.execute_fetchall("PRAGMA synchronous"))[0][0] == 2  # FULL
    finally:
        await rel.close()

    mem = await open_store("sqlite://:memory:")
    try:
        conv = await new_conversation(mem)
        assert (await say(mem, conv, "hi"))[0].seq == 1
    finally:
        await mem.close()

    with pytest.raises(StoreError):
        await open_store("sqlite://relative-without-third-slash.db")
    with pytest.raises(StoreError):
        await open_store("mysql://localhost/x")


async def test_identities_lists_every_link_of_a_customer(store: Store) -> None:
    customer = await store.create_customer(name="Ada")
    other = await store.create_customer(name="Bob")
    await store.add_identity(customer.id, "email", "ada@example.com")
    await store.add_identity(customer.id, "webchat", "hash-1")
    await store.add_identity(other.id, "email", "bob@example.com")
    found = await store.identities(customer.id)
    assert [(i.channel, i.address) for i in found] == [("email", "ada@example.com"), ("webchat", "hash-1")]
    assert all(i.customer_id == customer.id for i in found)
    assert await store.identities("nobody") == []


def test_asyncpg_protocol_errors_of_a_lost_connection_are_unavailable() -> None:
    # What a connection lost between or during operations can surface as, besides
    # ConnectionDoesNotExistError: asyncpg's own protocol state errors.
    from gateway.store.postgres import _is_unavailable

    assert _is_unavailable(asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"))
    assert _is_unavailable(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"))
    assert not _is_unavailable(asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"))


# listing (admin API) ------------------------------------------------------------------------
async def test_list_conversations_newest_first_with_filters(store: Store) -> None:
    ada = await store.create_customer(name="Ada")
    bo = await store.create_customer(name="Bo")
    a = await store.create_conversation(ada.id, "webchat")
    b = await store.create_conversation(ada.id, "email")
    c = await store.create_conversation(bo.id, "webchat")
    d = await store.create_conversation(bo.id, "webchat")
    await store.append_event(b.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                             change=StateChange(ConversationState.QUEUED, queue="general"))
    await store.append_event(c.id, author=Author.SYSTEM, kind=EventKind.QUEUED,
                             change=StateChange(ConversationState.QUEUED, queue="vip_desk"))
    await store.append_event(d.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                             change=StateChange(ConversationState.CLOSED, queue="general"))

    def ids(conversations) -> list[str]:  # type: ignore[no-untyped-def]
        return [x.id for x in conversations]

    everything = await store.list_conversations()
    assert ids(everything) == [d.id, c.id, b.id, a.id]
    assert everything[0] == await store.get_conversation(d.id)  # the whole row, closed_at included
    assert everything[0].closed_at is not None
    assert ids(await store.list_conversations(state=ConversationState.QUEUED)) == [c.id, b.id]
    assert ids(await store.list_conversations(queue="general")) == [d.id, b.id]
    assert ids(await store.list_conversations(customer_id=ada.id)) == [b.id, a.id]
    assert ids(await store.list_conversations(channel="webchat")) == [d.id, c.id, a.id]
    assert ids(await store.list_conversations(channel="webchat", customer_id=bo.id,
                                              state=ConversationState.CLOSED)) == [d.id]
    assert await store.list_conversations(queue="nowhere") == []
    assert await store.list_conversations(limit=0) == []


async def test_list_conversations_pages_by_key(store: Store) -> None:
    customer = await store.create_customer(name="Ada")
    made = [await store.create_conversation(customer.id, "webchat") for _ in range(5)]
    newest_first = [c.id for c in reversed(made)]
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_conversations(limit=2, before=before)
        if not page:
            break
        seen += [c.id for c in page]
        before = ConversationKey.of(page[-1])
        # A conversation created while paging is newer than every key: it never shows up late.
        await store.create_conversation(customer.id, "webchat")
    assert seen == newest_first
    with pytest.raises(ValueError):
        await store.list_conversations(limit=-1)


async def set_created_at(url: str, conversation_ids: list[str], at: datetime) -> None:
    """Give conversations one creation time with the raw driver (two created in the same
    microsecond would have it)."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.executemany("UPDATE conversations SET created_at = ? WHERE id = ?",
                           [(at.isoformat(timespec="microseconds"), cid) for cid in conversation_ids])
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany("UPDATE conversations SET created_at = $1 WHERE id = $2",
                               [(at, cid) for cid in conversation_ids])
    finally:
        await conn.close()


async def test_list_conversations_breaks_time_ties_by_id(store: Store) -> None:
    customer = await store.create_customer(name="Ada")
    made = [await store.create_conversation(customer.id, "webchat") for _ in range(3)]
    at = made[0].created_at
    await set_created_at(store.url, [c.id for c in made], at)
    expected = sorted((c.id for c in made), reverse=True)
    first = await store.list_conversations(limit=1)
    rest = await store.list_conversations(limit=5, before=ConversationKey.of(first[0]))
    assert [c.id for c in first + list(rest)] == expected
    assert all(c.created_at == at for c in rest)
