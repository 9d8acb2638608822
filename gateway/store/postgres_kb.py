"""The knowledge base's tables on the production engine (gateway/store/kb.py), one statement
each through the pool, like ``postgres_channels.py``."""

from __future__ import annotations

from typing import AsyncContextManager, Callable, Sequence

import asyncpg
from asyncpg import exceptions as pgexc

from ..model import utcnow
from .base import NotFound
from .kb import KbProposal, ProposalKind, ProposalStatus, check_outcome
from .records import new_id, optional_text
from .text import cannot_hold, storable

_PROPOSAL_COLS = ("id, conversation_id, agent_id, kind, faq_id, lang, question, answer, status, note, "
                  "created_at, decided_at")


def _proposal(row: asyncpg.Record) -> KbProposal:
    return KbProposal(id=row["id"], conversation_id=row["conversation_id"], agent_id=row["agent_id"],
                      kind=row["kind"], faq_id=row["faq_id"], lang=row["lang"], question=row["question"],
                      answer=row["answer"], status=row["status"], note=row["note"],
                      created_at=row["created_at"], decided_at=row["decided_at"])


class PostgresKbTables:
    # Provided by PostgresStore.
    _conn: Callable[[], AsyncContextManager[asyncpg.Connection]]

    async def add_kb_outcome(self, conversation_id: str, seq: int, faq_id: str, outcome: str) -> bool:
        check_outcome(outcome)
        async with self._conn() as conn:
            status = await conn.execute(
                "INSERT INTO kb_outcomes (conversation_id, seq, faq_id, outcome, at) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (conversation_id, seq, outcome) DO NOTHING",
                conversation_id, seq, storable(faq_id), outcome, utcnow())
        return status.endswith(" 1")

    async def kb_outcome_counts(self) -> dict[tuple[str, str], int]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT faq_id, outcome, COUNT(*) AS n FROM kb_outcomes GROUP BY faq_id, outcome")
        return {(row["faq_id"], row["outcome"]): row["n"] for row in rows}

    async def add_kb_proposal(self, *, conversation_id: str, agent_id: str, kind: ProposalKind,
                              faq_id: str | None, lang: str, question: str, answer: str | None) -> KbProposal:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._conn() as conn:
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO kb_proposals ({_PROPOSAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', "
                    f"NULL, $9, NULL) RETURNING {_PROPOSAL_COLS}",
                    new_id(), conversation_id, storable(agent_id), kind, optional_text(faq_id), storable(lang),
                    storable(question), optional_text(answer), utcnow())
            except pgexc.ForeignKeyViolationError:
                raise NotFound(f"conversation {conversation_id!r} not found") from None
        return _proposal(row)

    async def kb_proposals(self, status: ProposalStatus | None = None, limit: int = 100) -> Sequence[KbProposal]:
        async with self._conn() as conn:
            if status is None:
                rows = await conn.fetch(f"SELECT {_PROPOSAL_COLS} FROM kb_proposals ORDER BY created_at, id LIMIT $1",
                                        limit)
            else:
                rows = await conn.fetch(f"SELECT {_PROPOSAL_COLS} FROM kb_proposals WHERE status = $1 "
                                        "ORDER BY created_at, id LIMIT $2", status, limit)
        return [_proposal(row) for row in rows]

    async def get_kb_proposal(self, proposal_id: str) -> KbProposal:
        if cannot_hold(proposal_id):
            raise NotFound(f"proposal {proposal_id!r} not found")
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_PROPOSAL_COLS} FROM kb_proposals WHERE id = $1", proposal_id)
        if row is None:
            raise NotFound(f"proposal {proposal_id!r} not found")
        return _proposal(row)

    async def decide_kb_proposal(self, proposal_id: str, status: ProposalStatus, note: str | None = None
                                 ) -> KbProposal | None:
        if status == "pending":
            raise ValueError("a decision is approved or rejected")
        await self.get_kb_proposal(proposal_id)  # NotFound
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE kb_proposals SET status = $1, note = $2, decided_at = $3 WHERE id = $4 AND status = 'pending' "
                f"RETURNING {_PROPOSAL_COLS}", status, optional_text(note), utcnow(), proposal_id)
        return None if row is None else _proposal(row)
