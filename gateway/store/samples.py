"""What both engines share for the supervisor board's queue samples (one row per queue and
minute): the minute a sample is filed under, checked the same way on both."""

from __future__ import annotations

from datetime import datetime, timezone

from ..model import QueueSample
from .records import aware
from .text import storable


def minute_of(at: datetime) -> datetime:
    """``at`` cut to its minute, in UTC (ValueError when it has no time zone)."""
    return aware(at, "a sample's minute").astimezone(timezone.utc).replace(second=0, microsecond=0)


def filed(sample: QueueSample) -> QueueSample:
    """The sample as it is stored: its minute cut to the minute, its queue name storable, its
    service level a finite percent or None."""
    level = sample.service_level
    if level is not None and not 0.0 <= float(level) <= 100.0:
        raise ValueError(f"a service level is a percent from 0 to 100, got {level!r}")
    if sample.waiting < 0:
        raise ValueError(f"waiting must be >= 0, got {sample.waiting!r}")
    return QueueSample(storable(sample.queue), minute_of(sample.minute),
                       None if level is None else float(level), int(sample.waiting))
