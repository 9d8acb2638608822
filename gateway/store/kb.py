"""What the store keeps for the knowledge base (migration 6): the outcomes of the bot's answers
per entry, counted for the deflection figures, and the entries and phrasings agents propose
(knowledge capture). Both engines implement :class:`KbTables` (``sqlite_kb.py``,
``postgres_kb.py``) and pass one suite (tests/test_kb_store.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, Sequence

ProposalKind = Literal["entry", "phrasing"]
ProposalStatus = Literal["pending", "approved", "rejected"]
OUTCOMES = ("answered", "helpful_yes", "helpful_no", "handed_off")


@dataclass(frozen=True, slots=True)
class KbProposal:
    id: str
    conversation_id: str
    agent_id: str
    kind: ProposalKind           # a new entry, or a new phrasing (alt) of the entry faq_id
    faq_id: str | None
    lang: str
    question: str
    answer: str | None           # a new entry's answer (None for a phrasing)
    status: ProposalStatus
    note: str | None             # why it was rejected, or what approving it wrote
    created_at: datetime
    decided_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "conversation_id": self.conversation_id, "agent_id": self.agent_id,
                "kind": self.kind, "faq_id": self.faq_id, "lang": self.lang, "question": self.question,
                "answer": self.answer, "status": self.status, "note": self.note,
                "created_at": self.created_at.isoformat(),
                "decided_at": self.decided_at.isoformat() if self.decided_at else None}


class KbTables(Protocol):
    async def add_kb_outcome(self, conversation_id: str, seq: int, faq_id: str, outcome: str) -> bool:
        """Count one outcome of the bot message ``seq``; a second write of the same (conversation,
        seq, outcome) changes nothing (False). ValueError for an outcome not in OUTCOMES."""

    async def kb_outcome_counts(self) -> dict[tuple[str, str], int]:
        """(faq id, outcome) -> how many, over every conversation."""

    async def add_kb_proposal(self, *, conversation_id: str, agent_id: str, kind: ProposalKind,
                              faq_id: str | None, lang: str, question: str, answer: str | None) -> KbProposal:
        """A new pending proposal. Raise NotFound for an unknown conversation."""

    async def kb_proposals(self, status: ProposalStatus | None = None, limit: int = 100) -> Sequence[KbProposal]:
        """Oldest first."""

    async def get_kb_proposal(self, proposal_id: str) -> KbProposal:
        """Raise NotFound when absent."""

    async def decide_kb_proposal(self, proposal_id: str, status: ProposalStatus, note: str | None = None
                                 ) -> KbProposal | None:
        """Approve or reject a pending proposal; None when it is not pending any more (another
        decision came first). Raise NotFound when absent."""


def check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; one of {OUTCOMES}")
