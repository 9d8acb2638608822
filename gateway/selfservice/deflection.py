"""Deflection per KB entry: how often the bot answered with it, how often the customer said it
helped or not, and how often the conversation went to a person after it
(docs/selfservice.md#deflection-metrics). Counted in the store (``kb_outcomes``), so every
process and a restart report the same figures; ``GET /api/kb/stats`` and ``/metrics`` read them."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..store import Store
from ..store.kb import OUTCOMES
from . import SelfService


def kb_stats(counts: dict[tuple[str, str], int], selfservice: SelfService) -> dict[str, Any]:
    """Every entry of every KB (the default's first, then each of ``knowledge_bases``'), and any
    counted entry since removed, with its outcome counts and its deflection rate: answers not
    followed by a handoff, of its answers. Counted by entry id: an id that several KBs have
    counts once, over all of them (``kbs`` names them)."""
    questions: dict[str, str] = {}
    kbs: dict[str, list[str]] = {}
    for kb in (selfservice.default_kb, *selfservice.knowledge_bases):
        for entry in kb.index.entries if kb.index is not None else ():
            questions.setdefault(entry.id, entry.question)
            if kb.name not in kbs.setdefault(entry.id, []):
                kbs[entry.id].append(kb.name)
    ids = list(questions) + sorted({faq for faq, _ in counts} - set(questions))
    rows = []
    for faq_id in ids:
        row: dict[str, Any] = {"faq_id": faq_id, "question": questions.get(faq_id), "in_kb": faq_id in questions,
                               "kbs": kbs.get(faq_id, [])}
        row.update({outcome: counts.get((faq_id, outcome), 0) for outcome in OUTCOMES})
        row["deflected"] = round(1 - row["handed_off"] / row["answered"], 3) if row["answered"] else None
        rows.append(row)
    totals = {outcome: sum(n for (_, o), n in counts.items() if o == outcome) for outcome in OUTCOMES}
    return {"entries": rows, "totals": totals}


class DeflectionCollector(Collector):
    """``contactgate_kb_outcomes{faq_id, outcome}``; :meth:`refresh` reads the store before a scrape
    (a collector cannot await)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    async def refresh(self, store: Store) -> None:
        self.counts = await store.kb_outcome_counts()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("contactgate_kb_outcomes", "Outcomes of the bot's answers per KB entry "
                                     "(answered, helpful_yes, helpful_no, handed_off), all processes, from the store",
                                     labels=["faq_id", "outcome"])
        for (faq_id, outcome), n in sorted(self.counts.items()):
            family.add_metric([faq_id, outcome], n)
        yield family
