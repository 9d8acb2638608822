"""The board's charts: a sample per queue and minute (service level, waiting), kept in the store
for ``board.history_hours`` hours.

The gateway samples at start and then at the start of every minute; each sample is filed under
its minute, and the store keeps the first one of a (queue, minute) (a second gateway process on
the same database writes nothing for a minute already there). Older samples are pruned as new
ones are written. A store that cannot be reached costs that minute's sample, nothing more.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Sequence

from ..model import QueueSample
from ..pipeline import Pipeline
from ..reports import queue_report
from ..store import StoreError
from ..store.samples import minute_of

log = logging.getLogger("contactgate.board")


def point(sample: QueueSample) -> list[Any]:
    """A sample as the board's charts take it: [unix seconds of its minute, service level, waiting]."""
    return [int(sample.minute.timestamp()), sample.service_level, sample.waiting]


class QueueHistory:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.last_minute: datetime | None = None  # the minute sampled last by this process

    def due(self, now: datetime) -> bool:
        return self.last_minute is None or minute_of(now) > self.last_minute

    def samples(self, now: datetime) -> list[QueueSample]:
        """This minute's sample of every queue, from the figures of ``/api/queues``."""
        minute = minute_of(now)
        return [QueueSample(row["queue"], minute, row["service_level"], row["waiting"])
                for row in queue_report(self.pipeline, now)]

    async def sample(self, now: datetime) -> list[QueueSample]:
        """Store this minute's samples and prune those older than ``board.history_hours``.
        Returns the samples taken (also when another process had stored the minute first: the
        board shows what it measured); [] when the store failed (logged)."""
        samples = self.samples(now)
        self.last_minute = minute_of(now)
        store = self.pipeline.store
        try:
            await store.add_queue_samples(samples)
            await store.prune_queue_samples(now - timedelta(hours=self.pipeline.config.board.history_hours))
        except (StoreError, OSError) as exc:
            log.warning("board sample not stored", extra={"error": f"{type(exc).__name__}: {exc}"})
            return []
        return samples

    async def recent(self, now: datetime) -> dict[str, list[list[Any]]]:
        """The last ``board.history_hours`` hours per queue of the running config, oldest first."""
        since = now - timedelta(hours=self.pipeline.config.board.history_hours)
        found: Sequence[QueueSample] = await self.pipeline.store.queue_samples(since)
        queues: dict[str, list[list[Any]]] = {name: [] for name in self.pipeline.dispatcher.queues}
        for sample in found:
            if sample.queue in queues:
                queues[sample.queue].append(point(sample))
        return queues
