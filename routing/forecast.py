"""Will a queue's service level drop below its target within the next minutes, at the current
answer rate? The rule behind the supervisor board's amber (docs/pages.md, "Supervisor board").

The service level is ``answered within target / (answered + abandoned after target)`` over the
queue's window (routing/servicelevel.py). Looking ``horizon`` seconds ahead:

- the conversations waiting now are answered longest wait first, one every ``1 / answer_rate``
  seconds (the rate the queue's agents answered at recently): the k-th is answered ``k /
  answer_rate`` seconds from now, after waiting its wait so far plus that;
- one answered within the target, inside the horizon, is a **hit** (counted when answered);
- one that will not be answered before its wait passes the target is a **miss**, counted the
  moment it passes the target (answered late or given up after the target: either way it counts
  against the service level), if that moment is inside the horizon;
- customers who arrive later are left out (they wait behind everyone waiting now), and so are
  records that leave the window meanwhile.

The forecast is the **lowest** service level along the way: the figure after every hit and miss
up to the horizon, the current one included. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

__all__ = ["Colour", "lowest_service_level", "queue_colour", "about_to_breach"]

Colour = Literal["green", "amber", "red"]


def lowest_service_level(*, answered_within: int, offered: int, waits: Iterable[float], target_seconds: float,
                         answer_rate: float, horizon: float) -> float | None:
    """The lowest service level (percent) forecast from now to ``horizon`` seconds ahead, the
    current one included; None when there is no figure now and none is forecast (nothing in the
    window and nobody waiting who is answered or passes the target within the horizon).

    ``answered_within`` and ``offered`` are the window's counts (the fraction's top and bottom),
    ``waits`` the seconds each conversation waiting now has waited, ``answer_rate`` answers per
    second (0: nobody is answered within the horizon)."""
    if offered < 0 or not 0 <= answered_within <= offered:
        raise ValueError(f"need 0 <= answered_within ({answered_within}) <= offered ({offered})")
    if not math.isfinite(answer_rate) or answer_rate < 0 or horizon < 0 or target_seconds < 0:
        raise ValueError("answer_rate, horizon and target_seconds must be >= 0")
    changes: dict[float, list[int]] = {}  # seconds from now -> [hits, misses] at that moment
    for k, wait in enumerate(sorted(waits, reverse=True), start=1):
        answered_in = k / answer_rate if answer_rate > 0 else math.inf
        if answered_in <= horizon and wait + answered_in <= target_seconds:
            changes.setdefault(answered_in, [0, 0])[0] += 1
            continue
        late_in = max(0.0, target_seconds - wait)
        if late_in <= horizon:
            changes.setdefault(late_in, [0, 0])[1] += 1
    top, bottom = answered_within, offered
    lowest = top / bottom * 100.0 if bottom else None
    for moment in sorted(changes):
        hits, misses = changes[moment]
        top, bottom = top + hits, bottom + hits + misses
        level = top / bottom * 100.0
        lowest = level if lowest is None else min(lowest, level)
    return lowest


def queue_colour(service_level: float | None, lowest_forecast: float | None, target_percent: float) -> Colour:
    """Red: below the target now. Amber: at or above it now (or no figure yet), but forecast to go
    below it within the horizon. Green otherwise."""
    if service_level is not None and service_level < target_percent:
        return "red"
    if lowest_forecast is not None and lowest_forecast < target_percent:
        return "amber"
    return "green"


def about_to_breach(wait: float, target_seconds: float, share: float) -> bool:
    """Whether a conversation that has waited ``wait`` seconds is past ``share`` of its queue's
    answer target (e.g. 0.8: 16 s of a 20 s target), or past the target itself."""
    return wait >= share * target_seconds
