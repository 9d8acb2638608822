"""Per-queue service-level figures over a sliding time window, and the estimated wait.

Service level (percent)::

    service_level = answered_within_target / (answered + abandoned_after_target) * 100

- ``answered_within_target``: conversations an agent took after waiting at most ``target_seconds``
  (a wait of exactly the target counts as within it);
- ``abandoned_after_target``: customers who gave up after waiting more than ``target_seconds``.
  Abandons within the target are left out of both sides: a customer who leaves after 5 s was not
  failed by the queue.
- ``None`` when the denominator is 0 (no data in the window), never a made-up 0 % or 100 %.

``average_wait`` is the average speed of answer: the mean wait of the *answered* conversations.
``average_handle`` is the mean time from assignment to close of the conversations closed in the
window. A record belongs to the window while ``now - window < at``; older ones are dropped on every
write and read, so memory is bounded by the traffic of one window.

Pure: every method takes the instant it is about (``at`` / ``now``); nothing reads the clock.
Times are expected to arrive roughly in order; a late record is still placed in order.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping

__all__ = ["ServiceLevelSnapshot", "ServiceLevelTracker", "estimated_wait"]


@dataclass(frozen=True, slots=True)
class ServiceLevelSnapshot:
    queue: str
    answered: int
    abandoned: int                     # every abandon in the window, within the target or not
    answered_within_target: int
    service_level: float | None        # percent; None when no data in the window
    average_wait: float | None         # seconds, over answered conversations
    average_handle: float | None       # seconds, over conversations closed in the window
    target_seconds: float
    target_percent: float
    offered: int = 0                   # the fraction's bottom: answered + abandoned after the target

    @property
    def meets_target(self) -> bool | None:
        return None if self.service_level is None else self.service_level >= self.target_percent


@dataclass(slots=True)
class _Series:
    """(at, seconds) records in time order, with a running sum for the mean."""

    times: deque[datetime] = field(default_factory=deque)
    values: deque[float] = field(default_factory=deque)
    total: float = 0.0

    def add(self, at: datetime, value: float) -> None:
        if not self.times or at >= self.times[-1]:
            self.times.append(at)
            self.values.append(value)
        else:   # late arrival: keep the deque sorted so pruning from the left stays correct
            index = bisect.bisect_right(self.times, at)
            self.times.insert(index, at)
            self.values.insert(index, value)
        self.total += value

    def prune(self, cutoff: datetime) -> None:
        """Drop records at or before ``cutoff``."""
        times, values = self.times, self.values
        while times and times[0] <= cutoff:
            times.popleft()
            self.total -= values.popleft()
        if not times:
            self.total = 0.0   # no float drift survives an empty window

    def in_window(self, now: datetime) -> list[float]:
        # Normally everything left after pruning; records dated after `now` are not yet counted.
        if not self.times or self.times[-1] <= now:
            return list(self.values)
        return [v for t, v in zip(self.times, self.values) if t <= now]

    def mean(self, now: datetime) -> float | None:
        if not self.times:
            return None
        if self.times[-1] <= now:
            return self.total / len(self.times)
        values = self.in_window(now)
        return sum(values) / len(values) if values else None


@dataclass(slots=True)
class _QueueRecords:
    answered: _Series = field(default_factory=_Series)
    abandoned: _Series = field(default_factory=_Series)
    handled: _Series = field(default_factory=_Series)

    def prune(self, cutoff: datetime) -> None:
        self.answered.prune(cutoff)
        self.abandoned.prune(cutoff)
        self.handled.prune(cutoff)


def _seconds(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return value


class ServiceLevelTracker:
    """Answered, abandoned and handled conversations per queue over the last ``window_seconds``."""

    def __init__(self, window_seconds: float = 3600.0) -> None:
        self._window = timedelta(seconds=self._check_window(window_seconds))
        self._queues: dict[str, _QueueRecords] = {}

    @staticmethod
    def _check_window(seconds: float) -> float:
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"the service-level window must be a positive number of seconds, got {seconds!r}")
        return seconds

    @property
    def window_seconds(self) -> float:
        return self._window.total_seconds()

    def set_window(self, seconds: float) -> None:
        """Change the window; records already dropped by a shorter window do not come back."""
        self._window = timedelta(seconds=self._check_window(seconds))

    # -- writes --------------------------------------------------------------------------------

    def _record(self, queue: str, series: str, at: datetime, value: float) -> None:
        records = self._queues.get(queue)
        if records is None:
            records = self._queues[queue] = _QueueRecords()
        getattr(records, series).add(at, value)
        newest = max((s.times[-1] for s in (records.answered, records.abandoned, records.handled) if s.times))
        records.prune(newest - self._window)

    def answered(self, queue: str, waited: float, at: datetime) -> None:
        """An agent took a conversation of ``queue`` at ``at`` after it waited ``waited`` seconds."""
        self._record(queue, "answered", at, _seconds("waited", waited))

    def abandoned(self, queue: str, waited: float, at: datetime) -> None:
        """A customer left ``queue`` at ``at`` after waiting ``waited`` seconds, unanswered."""
        self._record(queue, "abandoned", at, _seconds("waited", waited))

    def handled(self, queue: str, handle_seconds: float, at: datetime) -> None:
        """A conversation of ``queue`` closed at ``at``, ``handle_seconds`` after its assignment."""
        self._record(queue, "handled", at, _seconds("handle_seconds", handle_seconds))

    # -- reads ---------------------------------------------------------------------------------

    def _current(self, queue: str, now: datetime) -> _QueueRecords | None:
        records = self._queues.get(queue)
        if records is None:
            return None
        records.prune(now - self._window)
        if not (records.answered.times or records.abandoned.times or records.handled.times):
            del self._queues[queue]   # an idle queue costs nothing
            return None
        return records

    def average_handle(self, queue: str, now: datetime) -> float | None:
        records = self._current(queue, now)
        return records.handled.mean(now) if records else None

    def snapshot(self, queue: str, now: datetime, target_seconds: float, target_percent: float
                 ) -> ServiceLevelSnapshot:
        target = _seconds("target_seconds", target_seconds)
        records = self._current(queue, now)
        if records is None:
            return ServiceLevelSnapshot(queue, 0, 0, 0, None, None, None, target, float(target_percent))
        answered = records.answered.in_window(now)
        abandoned = records.abandoned.in_window(now)
        within = sum(1 for waited in answered if waited <= target)
        abandoned_late = sum(1 for waited in abandoned if waited > target)
        offered = len(answered) + abandoned_late
        return ServiceLevelSnapshot(
            queue=queue,
            answered=len(answered),
            abandoned=len(abandoned),
            answered_within_target=within,
            service_level=within / offered * 100.0 if offered else None,
            average_wait=sum(answered) / len(answered) if answered else None,
            average_handle=records.handled.mean(now),
            target_seconds=target,
            target_percent=float(target_percent),
            offered=offered,
        )

    def answered_since(self, queue: str, since: datetime, now: datetime) -> int:
        """Conversations of ``queue`` answered after ``since`` and at or before ``now`` (within the
        window): the recent answer rate the board's forecast uses."""
        records = self._current(queue, now)
        if records is None:
            return 0
        times = records.answered.times
        return bisect.bisect_right(times, now) - bisect.bisect_right(times, since)


def estimated_wait(position: int, average_handle: float | None, agents: int,
                   default_handle: float = 180.0) -> float:
    """Seconds until a conversation at ``position`` (1 = next) is likely answered.

    ``ceil(position / max(agents, 1)) * (average_handle or default_handle)``: each agent frees up
    once per average handle time, so the queue drains ``agents`` conversations per round. 0 when
    ``position <= 0`` (already being offered).
    """
    if position <= 0:
        return 0.0
    rounds = -(-position // max(agents, 1))
    return float(rounds * (average_handle or default_handle))


class ServiceLevels:
    """One tracker per queue, each over its own queue's ``service_level.window``; the same
    methods as :class:`ServiceLevelTracker`."""

    def __init__(self, windows: Mapping[str, float], default_window: float = 3600.0) -> None:
        self._default = default_window
        self._trackers: dict[str, ServiceLevelTracker] = {}
        self.set_windows(windows)

    def set_windows(self, windows: Mapping[str, float]) -> None:
        self._windows = dict(windows)
        for queue, tracker in self._trackers.items():
            tracker.set_window(self._windows.get(queue, self._default))

    def _tracker(self, queue: str) -> ServiceLevelTracker:
        tracker = self._trackers.get(queue)
        if tracker is None:
            tracker = self._trackers[queue] = ServiceLevelTracker(self._windows.get(queue, self._default))
        return tracker

    def answered(self, queue: str, waited: float, at: datetime) -> None:
        self._tracker(queue).answered(queue, waited, at)

    def abandoned(self, queue: str, waited: float, at: datetime) -> None:
        self._tracker(queue).abandoned(queue, waited, at)

    def handled(self, queue: str, handle_seconds: float, at: datetime) -> None:
        self._tracker(queue).handled(queue, handle_seconds, at)

    def average_handle(self, queue: str, now: datetime) -> float | None:
        return self._tracker(queue).average_handle(queue, now)

    def answered_since(self, queue: str, since: datetime, now: datetime) -> int:
        return self._tracker(queue).answered_since(queue, since, now)

    def window(self, queue: str) -> float:
        return self._tracker(queue).window_seconds

    def snapshot(self, queue: str, now: datetime, target_seconds: float, target_percent: float) -> ServiceLevelSnapshot:
        return self._tracker(queue).snapshot(queue, now, target_seconds, target_percent)
