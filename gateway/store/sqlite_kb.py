"""The knowledge base's tables on the embedded engine (gateway/store/kb.py), through the
store's one connection, like ``sqlite_channels.py``."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import AsyncContextManager, Callable, Sequence

import aiosqlite

from ..model import utcnow
from .base import NotFound
from .kb import KbProposal, ProposalKind, ProposalStatus, check_outcome
from .records import new_id, optional_text
from .sqlite_rows import execute, fetchone, parse_ts, ts
from .text import cannot_hold, storable

_PROPOSAL_COLS = ("id, conversation_id, agent_id, kind, faq_id, lang, question, answer, status, note, "
                  "created_at, decided_at")


def _proposal(row: sqlite3.Row) -> KbProposal:
    return KbProposal(id=row["id"], conversation_id=row["conversation_id"], agent_id=row["agent_id"],
                      kind=row["kind"], faq_id=row["faq_id"], lang=row["lang"], question=row["question"],
                      answer=row["answer"], status=row["status"], note=row["note"],
                      created_at=datetime.fromisoformat(row["created_at"]), decided_at=parse_ts(row["decided_at"]))


class SQLiteKbTables:
    # Provided by SQLiteStore.
    _session: Callable[[], AsyncContextManager[aiosqlite.Connection]]
    _transaction: Callable[[], AsyncContextManager[aiosqlite.Connection]]

    async def add_kb_outcome(self, conversation_id: str, seq: int, faq_id: str, outcome: str) -> bool:
        check_outcome(outcome)
        async with self._transaction() as db:
            added = await execute(
                db, "INSERT INTO kb_outcomes (conversation_id, seq, faq_id, outcome, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (conversation_id, seq, outcome) DO NOTHING",
                (conversation_id, seq, storable(faq_id), outcome, ts(utcnow())))
        return added == 1

    async def kb_outcome_counts(self) -> dict[tuple[str, str], int]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT faq_id, outcome, COUNT(*) AS n FROM kb_outcomes GROUP BY faq_id, outcome")
        return {(row["faq_id"], row["outcome"]): row["n"] for row in rows}

    async def add_kb_proposal(self, *, conversation_id: str, agent_id: str, kind: ProposalKind,
                              faq_id: str | None, lang: str, question: str, answer: str | None) -> KbProposal:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        proposal = KbProposal(new_id(), conversation_id, storable(agent_id), kind, optional_text(faq_id),
                              storable(lang), storable(question), optional_text(answer), "pending", None,
                              utcnow(), None)
        async with self._transaction() as db:
            if await fetchone(db, "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)) is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            await execute(db, f"INSERT INTO kb_proposals ({_PROPOSAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (proposal.id, conversation_id, proposal.agent_id, kind, proposal.faq_id, proposal.lang,
                           proposal.question, proposal.answer, "pending", None, ts(proposal.created_at), None))
        return proposal

    async def kb_proposals(self, status: ProposalStatus | None = None, limit: int = 100) -> Sequence[KbProposal]:
        sql, params = f"SELECT {_PROPOSAL_COLS} FROM kb_proposals", ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        async with self._session() as db:
            rows = await db.execute_fetchall(sql + " ORDER BY created_at, id LIMIT ?", (*params, limit))
        return [_proposal(row) for row in rows]

    async def get_kb_proposal(self, proposal_id: str) -> KbProposal:
        if cannot_hold(proposal_id):
            raise NotFound(f"proposal {proposal_id!r} not found")
        async with self._session() as db:
            row = await fetchone(db, f"SELECT {_PROPOSAL_COLS} FROM kb_proposals WHERE id = ?", (proposal_id,))
        if row is None:
            raise NotFound(f"proposal {proposal_id!r} not found")
        return _proposal(row)

    async def decide_kb_proposal(self, proposal_id: str, status: ProposalStatus, note: str | None = None
                                 ) -> KbProposal | None:
        if status == "pending":
            raise ValueError("a decision is approved or rejected")
        await self.get_kb_proposal(proposal_id)  # NotFound
        async with self._transaction() as db:
            changed = await execute(
                db, "UPDATE kb_proposals SET status = ?, note = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                (status, optional_text(note), ts(utcnow()), proposal_id))
        return await self.get_kb_proposal(proposal_id) if changed else None
