"""Versioned schema migrations shared by both engines.

Each :class:`Migration` carries the statements for every dialect, so the two schemas cannot drift
apart silently. ``open()`` applies the pending ones in order inside one transaction and records
them in ``schema_migrations``; re-running is a no-op. Never edit a released migration: append a
new one with the next version number.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

Dialect = Literal["sqlite", "postgres"]

# Arbitrary but fixed key for pg_advisory_xact_lock: every gateway process must use the same one.
PG_ADVISORY_LOCK_KEY = 0x636F6E74616374  # "contact"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


# SQLite keeps timestamps as fixed-width ISO-8601 UTC text (so text order is time order) and
# JSON as text; PostgreSQL uses timestamptz and jsonb.
_INITIAL_SQLITE = (
    """CREATE TABLE customers (
        id          TEXT PRIMARY KEY,
        name        TEXT,
        tier        TEXT,
        attributes  TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL
    )""",
    """CREATE TABLE identities (
        channel      TEXT NOT NULL,
        address      TEXT NOT NULL,
        customer_id  TEXT NOT NULL REFERENCES customers(id),
        PRIMARY KEY (channel, address)
    )""",
    "CREATE INDEX identities_customer ON identities (customer_id)",
    """CREATE TABLE conversations (
        id           TEXT PRIMARY KEY,
        customer_id  TEXT NOT NULL REFERENCES customers(id),
        channel      TEXT NOT NULL,
        state        TEXT NOT NULL,
        queue        TEXT,
        agent_id     TEXT,
        last_seq     INTEGER NOT NULL DEFAULT 0,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        closed_at    TEXT
    )""",
    # latest_conversation(customer, channel)
    "CREATE INDEX conversations_latest ON conversations (customer_id, channel, created_at)",
    # open_conversations(): partial, so it stays small however much history piles up
    "CREATE INDEX conversations_open ON conversations (created_at) WHERE state <> 'closed'",
    """CREATE TABLE events (
        conversation_id  TEXT NOT NULL REFERENCES conversations(id),
        seq              INTEGER NOT NULL,
        author           TEXT NOT NULL,
        kind             TEXT NOT NULL,
        text             TEXT,
        client_id        TEXT,
        data             TEXT NOT NULL DEFAULT '{}',
        at               TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    )""",
    # Dedupe of retried sends: one event per (conversation, author, client id).
    """CREATE UNIQUE INDEX events_client_id ON events (conversation_id, author, client_id)
        WHERE client_id IS NOT NULL""",
)

_INITIAL_POSTGRES = (
    """CREATE TABLE customers (
        id          text PRIMARY KEY,
        name        text,
        tier        text,
        attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at  timestamptz NOT NULL
    )""",
    """CREATE TABLE identities (
        channel      text NOT NULL,
        address      text NOT NULL,
        customer_id  text NOT NULL REFERENCES customers(id),
        PRIMARY KEY (channel, address)
    )""",
    "CREATE INDEX identities_customer ON identities (customer_id)",
    """CREATE TABLE conversations (
        id           text PRIMARY KEY,
        customer_id  text NOT NULL REFERENCES customers(id),
        channel      text NOT NULL,
        state        text NOT NULL,
        queue        text,
        agent_id     text,
        last_seq     bigint NOT NULL DEFAULT 0,
        created_at   timestamptz NOT NULL,
        updated_at   timestamptz NOT NULL,
        closed_at    timestamptz
    )""",
    "CREATE INDEX conversations_latest ON conversations (customer_id, channel, created_at)",
    "CREATE INDEX conversations_open ON conversations (created_at) WHERE state <> 'closed'",
    """CREATE TABLE events (
        conversation_id  text NOT NULL REFERENCES conversations(id),
        seq              bigint NOT NULL,
        author           text NOT NULL,
        kind             text NOT NULL,
        text             text,
        client_id        text,
        data             jsonb NOT NULL DEFAULT '{}'::jsonb,
        at               timestamptz NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    )""",
    """CREATE UNIQUE INDEX events_client_id ON events (conversation_id, author, client_id)
        WHERE client_id IS NOT NULL""",
)

# One round trip per append on PostgreSQL: lock the conversation row, look for a resent client
# id (a fresh snapshot after the lock, so a concurrent twin's commit is seen), then bump last_seq
# and insert. Returns no row for an unknown conversation; `created` false for a resend.
_APPEND_FUNCTION_POSTGRES = (
    """CREATE OR REPLACE FUNCTION contactgate_append_event(
        p_conversation text, p_at timestamptz, p_state text, p_set_queue bool, p_queue text,
        p_set_agent bool, p_agent text, p_author text, p_kind text, p_text text, p_client_id text,
        p_data jsonb)
    RETURNS TABLE (created bool, seq bigint, author text, kind text, text text, client_id text,
                   data jsonb, at timestamptz)
    LANGUAGE plpgsql AS $$
    DECLARE
        next_seq bigint;
    BEGIN
        PERFORM 1 FROM conversations c WHERE c.id = p_conversation FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF p_client_id IS NOT NULL THEN
            RETURN QUERY SELECT false, e.seq, e.author, e.kind, e.text, e.client_id, e.data, e.at
                FROM events e
                WHERE e.conversation_id = p_conversation AND e.author = p_author AND e.client_id = p_client_id;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
        UPDATE conversations c SET
            last_seq   = c.last_seq + 1,
            updated_at = p_at,
            state      = COALESCE(p_state, c.state),
            queue      = CASE WHEN p_set_queue THEN p_queue ELSE c.queue END,
            agent_id   = CASE WHEN p_set_agent THEN p_agent ELSE c.agent_id END,
            closed_at  = CASE WHEN p_state IS NULL THEN c.closed_at
                              WHEN p_state = 'closed' THEN COALESCE(c.closed_at, p_at)
                              ELSE NULL END
        WHERE c.id = p_conversation
        RETURNING c.last_seq INTO next_seq;
        INSERT INTO events (conversation_id, seq, author, kind, text, client_id, data, at)
            VALUES (p_conversation, next_seq, p_author, p_kind, p_text, p_client_id, p_data, p_at);
        RETURN QUERY SELECT true, next_seq, p_author, p_kind, p_text, p_client_id, p_data, p_at;
    END
    $$""",
    # Group commit: a batch of appends in one call (one transaction, one round trip). Rows come
    # back tagged with their index `i` (1-based); an unknown conversation has no row. Taken in
    # conversation id order (arrival order within one), so concurrent batches lock rows in the
    # same order and cannot deadlock.
    """CREATE OR REPLACE FUNCTION contactgate_append_events(
        p_conversation text[], p_at timestamptz[], p_state text[], p_set_queue bool[], p_queue text[],
        p_set_agent bool[], p_agent text[], p_author text[], p_kind text[], p_text text[],
        p_client_id text[], p_data jsonb[])
    RETURNS TABLE (i integer, created bool, seq bigint, author text, kind text, text text,
                   client_id text, data jsonb, at timestamptz)
    LANGUAGE plpgsql AS $$
    DECLARE
        k integer;
    BEGIN
        FOR k IN SELECT t.ord FROM unnest(p_conversation) WITH ORDINALITY AS t(c, ord) ORDER BY t.c, t.ord LOOP
            RETURN QUERY SELECT k, r.* FROM contactgate_append_event(
                p_conversation[k], p_at[k], p_state[k], p_set_queue[k], p_queue[k], p_set_agent[k],
                p_agent[k], p_author[k], p_kind[k], p_text[k], p_client_id[k], p_data[k]) AS r;
        END LOOP;
    END
    $$""",
)

# What channels keep beside the conversation. attachments: the bytes of files that came or went
# with a message. channel_refs: the names a channel knows a conversation by (Message-IDs, subject
# tokens), first writer wins. outbox: one row per outbound event a channel must deliver, written
# with the event; the partial index keeps claiming cheap however many sent items pile up.
_CHANNEL_TABLES_SQLITE = (
    """CREATE TABLE attachments (
        id               TEXT PRIMARY KEY,
        conversation_id  TEXT NOT NULL REFERENCES conversations(id),
        name             TEXT NOT NULL,
        content_type     TEXT NOT NULL,
        size             INTEGER NOT NULL,
        sha256           TEXT NOT NULL,
        data             BLOB NOT NULL,
        created_at       TEXT NOT NULL
    )""",
    """CREATE TABLE channel_refs (
        channel          TEXT NOT NULL,
        ref              TEXT NOT NULL,
        conversation_id  TEXT NOT NULL REFERENCES conversations(id),
        seq              INTEGER,
        created_at       TEXT NOT NULL,
        PRIMARY KEY (channel, ref)
    )""",
    "CREATE INDEX channel_refs_conversation ON channel_refs (conversation_id)",
    """CREATE TABLE outbox (
        id               TEXT PRIMARY KEY,
        conversation_id  TEXT NOT NULL,
        seq              INTEGER NOT NULL,
        channel          TEXT NOT NULL,
        status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TEXT NOT NULL,
        claimed_until    TEXT,
        last_error       TEXT,
        sent_ref         TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        UNIQUE (conversation_id, seq, channel),
        FOREIGN KEY (conversation_id, seq) REFERENCES events (conversation_id, seq)
    )""",
    "CREATE INDEX outbox_due ON outbox (channel, next_attempt_at) WHERE status = 'pending'",
)

_CHANNEL_TABLES_POSTGRES = (
    """CREATE TABLE attachments (
        id               text PRIMARY KEY,
        conversation_id  text NOT NULL REFERENCES conversations(id),
        name             text NOT NULL,
        content_type     text NOT NULL,
        size             bigint NOT NULL,
        sha256           text NOT NULL,
        data             bytea NOT NULL,
        created_at       timestamptz NOT NULL
    )""",
    """CREATE TABLE channel_refs (
        channel          text NOT NULL,
        ref              text NOT NULL,
        conversation_id  text NOT NULL REFERENCES conversations(id),
        seq              bigint,
        created_at       timestamptz NOT NULL,
        PRIMARY KEY (channel, ref)
    )""",
    "CREATE INDEX channel_refs_conversation ON channel_refs (conversation_id)",
    """CREATE TABLE outbox (
        id               text PRIMARY KEY,
        conversation_id  text NOT NULL,
        seq              bigint NOT NULL,
        channel          text NOT NULL,
        status           text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
        attempts         integer NOT NULL DEFAULT 0,
        next_attempt_at  timestamptz NOT NULL,
        claimed_until    timestamptz,
        last_error       text,
        sent_ref         text,
        created_at       timestamptz NOT NULL,
        updated_at       timestamptz NOT NULL,
        UNIQUE (conversation_id, seq, channel),
        FOREIGN KEY (conversation_id, seq) REFERENCES events (conversation_id, seq)
    )""",
    "CREATE INDEX outbox_due ON outbox (channel, next_attempt_at) WHERE status = 'pending'",
    # The batch function gains two arrays: the outbox channel (NULL: none) and the new item's id
    # of each append. Still one statement, so an event and its outbox item commit together; the
    # row is written only when the event is (a resent client id writes nothing). The 12-argument
    # version goes: a second function of the same name would only invite calling the wrong one.
    """DROP FUNCTION contactgate_append_events(text[], timestamptz[], text[], bool[], text[], bool[],
        text[], text[], text[], text[], text[], jsonb[])""",
    """CREATE FUNCTION contactgate_append_events(
        p_conversation text[], p_at timestamptz[], p_state text[], p_set_queue bool[], p_queue text[],
        p_set_agent bool[], p_agent text[], p_author text[], p_kind text[], p_text text[],
        p_client_id text[], p_data jsonb[], p_outbox text[], p_outbox_id text[])
    RETURNS TABLE (i integer, created bool, seq bigint, author text, kind text, text text,
                   client_id text, data jsonb, at timestamptz)
    LANGUAGE plpgsql AS $$
    DECLARE
        k integer;
        r record;
    BEGIN
        FOR k IN SELECT t.ord FROM unnest(p_conversation) WITH ORDINALITY AS t(c, ord) ORDER BY t.c, t.ord LOOP
            -- The common case keeps RETURN QUERY: the row-by-row loop below, which must see
            -- the new seq, cost about 15% of a batch's time when every append took it.
            IF p_outbox[k] IS NULL THEN
                RETURN QUERY SELECT k, a.* FROM contactgate_append_event(
                    p_conversation[k], p_at[k], p_state[k], p_set_queue[k], p_queue[k], p_set_agent[k],
                    p_agent[k], p_author[k], p_kind[k], p_text[k], p_client_id[k], p_data[k]) AS a;
                CONTINUE;
            END IF;
            FOR r IN SELECT * FROM contactgate_append_event(
                    p_conversation[k], p_at[k], p_state[k], p_set_queue[k], p_queue[k], p_set_agent[k],
                    p_agent[k], p_author[k], p_kind[k], p_text[k], p_client_id[k], p_data[k]) LOOP
                IF r.created THEN
                    INSERT INTO outbox (id, conversation_id, seq, channel, status, attempts,
                                        next_attempt_at, created_at, updated_at)
                        VALUES (p_outbox_id[k], p_conversation[k], r.seq, p_outbox[k], 'pending', 0,
                                p_at[k], p_at[k], p_at[k]);
                END IF;
                i := k; created := r.created; seq := r.seq; author := r.author; kind := r.kind;
                text := r.text; client_id := r.client_id; data := r.data; at := r.at;
                RETURN NEXT;
            END LOOP;
        END LOOP;
    END
    $$""",
)

# The knowledge base's side of conversations: outcomes of the bot's answers per entry (one row
# per conversation, bot message and outcome: a retried write counts once) and the entries and
# phrasings agents propose (knowledge capture).
_KB_TABLES_SQLITE = (
    """CREATE TABLE kb_outcomes (
        conversation_id  TEXT NOT NULL REFERENCES conversations(id),
        seq              INTEGER NOT NULL,
        faq_id           TEXT NOT NULL,
        outcome          TEXT NOT NULL,
        at               TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq, outcome)
    )""",
    """CREATE TABLE kb_proposals (
        id               TEXT PRIMARY KEY,
        conversation_id  TEXT NOT NULL REFERENCES conversations(id),
        agent_id         TEXT NOT NULL,
        kind             TEXT NOT NULL CHECK (kind IN ('entry', 'phrasing')),
        faq_id           TEXT,
        lang             TEXT NOT NULL,
        question         TEXT NOT NULL,
        answer           TEXT,
        status           TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
        note             TEXT,
        created_at       TEXT NOT NULL,
        decided_at       TEXT
    )""",
    "CREATE INDEX kb_proposals_status ON kb_proposals (status, created_at)",
)

_KB_TABLES_POSTGRES = (
    """CREATE TABLE kb_outcomes (
        conversation_id  text NOT NULL REFERENCES conversations(id),
        seq              integer NOT NULL,
        faq_id           text NOT NULL,
        outcome          text NOT NULL,
        at               timestamptz NOT NULL,
        PRIMARY KEY (conversation_id, seq, outcome)
    )""",
    """CREATE TABLE kb_proposals (
        id               text PRIMARY KEY,
        conversation_id  text NOT NULL REFERENCES conversations(id),
        agent_id         text NOT NULL,
        kind             text NOT NULL CHECK (kind IN ('entry', 'phrasing')),
        faq_id           text,
        lang             text NOT NULL,
        question         text NOT NULL,
        answer           text,
        status           text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
        note             text,
        created_at       timestamptz NOT NULL,
        decided_at       timestamptz
    )""",
    "CREATE INDEX kb_proposals_status ON kb_proposals (status, created_at)",
)

# One customer across channels (gateway/customers/). identities stay keyed by (channel, address),
# the channel's own lookup, and learn their `kind` (the channel's type: email, telegram, phone,
# webchat, ...; today's rows take their channel's name, which is the type unless the channel was
# renamed; the gateway sets the rest at start) and how they were learned (`source`). They are the
# verified identities; what a customer typed in is a claim, which never links. A merged customer
# keeps its row (merged_into), so the merge's audit row can be undone exactly.
_CUSTOMER_LINKS_SQLITE = (
    "ALTER TABLE customers ADD COLUMN merged_into TEXT",
    "ALTER TABLE identities ADD COLUMN kind TEXT",
    "ALTER TABLE identities ADD COLUMN source TEXT NOT NULL DEFAULT 'channel'",
    "ALTER TABLE identities ADD COLUMN created_at TEXT",
    "UPDATE identities SET kind = channel",
    "CREATE INDEX identities_kind ON identities (kind, address)",
    """CREATE TABLE identity_claims (
        customer_id  TEXT NOT NULL REFERENCES customers(id),
        kind         TEXT NOT NULL,
        address      TEXT NOT NULL,
        channel      TEXT,
        created_at   TEXT NOT NULL,
        PRIMARY KEY (customer_id, kind, address)
    )""",
    "CREATE INDEX identity_claims_address ON identity_claims (kind, address)",
    """CREATE TABLE customer_merges (
        id          TEXT PRIMARY KEY,
        target_id   TEXT NOT NULL REFERENCES customers(id),
        source_id   TEXT NOT NULL REFERENCES customers(id),
        merged_by   TEXT NOT NULL,
        merged_at   TEXT NOT NULL,
        moved       TEXT NOT NULL,
        undone_at   TEXT,
        undone_by   TEXT
    )""",
    "CREATE INDEX customer_merges_target ON customer_merges (target_id, merged_at)",
    "CREATE INDEX customer_merges_source ON customer_merges (source_id, merged_at)",
)

_CUSTOMER_LINKS_POSTGRES = (
    "ALTER TABLE customers ADD COLUMN merged_into text",
    "ALTER TABLE identities ADD COLUMN kind text",
    "ALTER TABLE identities ADD COLUMN source text NOT NULL DEFAULT 'channel'",
    "ALTER TABLE identities ADD COLUMN created_at timestamptz",
    "UPDATE identities SET kind = channel",
    "CREATE INDEX identities_kind ON identities (kind, address)",
    """CREATE TABLE identity_claims (
        customer_id  text NOT NULL REFERENCES customers(id),
        kind         text NOT NULL,
        address      text NOT NULL,
        channel      text,
        created_at   timestamptz NOT NULL,
        PRIMARY KEY (customer_id, kind, address)
    )""",
    "CREATE INDEX identity_claims_address ON identity_claims (kind, address)",
    """CREATE TABLE customer_merges (
        id          text PRIMARY KEY,
        target_id   text NOT NULL REFERENCES customers(id),
        source_id   text NOT NULL REFERENCES customers(id),
        merged_by   text NOT NULL,
        merged_at   timestamptz NOT NULL,
        moved       jsonb NOT NULL,
        undone_at   timestamptz,
        undone_by   text
    )""",
    "CREATE INDEX customer_merges_target ON customer_merges (target_id, merged_at)",
    "CREATE INDEX customer_merges_source ON customer_merges (source_id, merged_at)",
)

# Verification by code (gateway/customers/codes.py, store/codes.py): one row per code mailed, so a
# code typed after a restart, or on another gateway process, is still checked. Only its salted
# hash is kept. A row counts its conversation's codes until the conversation is closed and the
# code expired (then prune_codes deletes it).
def _codes_table(text: str, stamp: str, blob: str, integer: str) -> tuple[str, ...]:
    return (f"""CREATE TABLE verification_codes (
        id               {text} PRIMARY KEY,
        conversation_id  {text} NOT NULL REFERENCES conversations(id),
        kind             {text} NOT NULL,
        address          {text} NOT NULL,
        salt             {blob} NOT NULL,
        digest           {blob} NOT NULL,
        expires_at       {stamp} NOT NULL,
        tries_left       {integer} NOT NULL,
        created_at       {stamp} NOT NULL,
        used_at          {stamp}
    )""",
            "CREATE INDEX verification_codes_conversation ON verification_codes (conversation_id, created_at)",
            "CREATE INDEX verification_codes_expiry ON verification_codes (expires_at)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "customers, identities, conversations, events", _INITIAL_SQLITE, _INITIAL_POSTGRES),
    Migration(2, "PostgreSQL: append events in one round trip", (), _APPEND_FUNCTION_POSTGRES),
    # list_conversations(): newest first, keyset-paged on (created_at, id).
    Migration(3, "conversations listed newest first",
              ("CREATE INDEX conversations_recent ON conversations (created_at, id)",),
              ("CREATE INDEX conversations_recent ON conversations (created_at, id)",)),
    Migration(4, "attachments, channel references and the outbox", _CHANNEL_TABLES_SQLITE,
              _CHANNEL_TABLES_POSTGRES),
    # The supervisor board's charts: one row per (queue, minute); a second process sampling the
    # same minute writes nothing (INSERT ... ON CONFLICT DO NOTHING).
    Migration(5, "queue samples per minute for the supervisor board",
              ('''CREATE TABLE queue_samples (
                    queue          TEXT NOT NULL,
                    minute         TEXT NOT NULL,
                    service_level  REAL,
                    waiting        INTEGER NOT NULL,
                    PRIMARY KEY (queue, minute)
                )''',
               "CREATE INDEX queue_samples_minute ON queue_samples (minute)"),
              ('''CREATE TABLE queue_samples (
                    queue          text NOT NULL,
                    minute         timestamptz NOT NULL,
                    service_level  double precision,
                    waiting        integer NOT NULL,
                    PRIMARY KEY (queue, minute)
                )''',
               "CREATE INDEX queue_samples_minute ON queue_samples (minute)")),
    Migration(6, "knowledge base: answer outcomes per entry and agents' proposals", _KB_TABLES_SQLITE,
              _KB_TABLES_POSTGRES),
    Migration(7, "identities: kind, source and claims; customer merges (one customer across channels)",
              _CUSTOMER_LINKS_SQLITE, _CUSTOMER_LINKS_POSTGRES),
    Migration(8, "verification codes kept in the store (a restart keeps them)",
              _codes_table("TEXT", "TEXT", "BLOB", "INTEGER"), _codes_table("text", "timestamptz", "bytea", "integer")),
)

# Bookkeeping table; created before anything else, outside the versioned list.
SCHEMA_MIGRATIONS_DDL: dict[Dialect, str] = {
    "sqlite": """CREATE TABLE IF NOT EXISTS schema_migrations (
        version     INTEGER PRIMARY KEY,
        applied_at  TEXT NOT NULL
    )""",
    "postgres": """CREATE TABLE IF NOT EXISTS schema_migrations (
        version     integer PRIMARY KEY,
        applied_at  timestamptz NOT NULL DEFAULT now()
    )""",
}


def pending(applied: set[int]) -> list[Migration]:
    """Migrations not yet in ``applied``, in version order."""
    return [m for m in sorted(MIGRATIONS, key=lambda m: m.version) if m.version not in applied]


async def migrate_sqlite(db: aiosqlite.Connection) -> list[int]:
    """Apply pending migrations on an autocommit (``isolation_level=None``) connection.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so a second process opening the same
    file waits (busy_timeout) and then finds nothing left to do. SQLite DDL is transactional, so a
    failing migration leaves the file as it was.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(SCHEMA_MIGRATIONS_DDL["sqlite"])
        rows = await db.execute_fetchall("SELECT version FROM schema_migrations")
        todo = pending({int(r[0]) for r in rows})
        now = datetime.now(timezone.utc).isoformat()
        for m in todo:
            for stmt in m.sqlite:
                await db.execute(stmt)
            await db.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (m.version, now)
            )
        await db.execute("COMMIT")
    except BaseException:
        # Best effort: if the connection itself broke, the original error is the useful one.
        with contextlib.suppress(Exception):
            await db.execute("ROLLBACK")
        raise
    return [m.version for m in todo]


async def migrate_postgres(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations in one transaction.

    The transaction-scoped advisory lock serialises gateway processes starting together (even
    ``CREATE TABLE IF NOT EXISTS`` can fail when two sessions race on it); it is released by the
    commit or rollback.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PG_ADVISORY_LOCK_KEY)
        await conn.execute(SCHEMA_MIGRATIONS_DDL["postgres"])
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        todo = pending({int(r["version"]) for r in rows})
        for m in todo:
            for stmt in m.postgres:
                await conn.execute(stmt)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", m.version)
    return [m.version for m in todo]


def _check_order() -> None:
    # Fail at import time rather than half-way through a migration run.
    versions = [m.version for m in MIGRATIONS]
    if versions != sorted(set(versions)) or any(v <= 0 for v in versions):
        raise RuntimeError(f"migration versions must be positive, unique and ascending: {versions}")


_check_order()
