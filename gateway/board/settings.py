"""The ``board:`` section of config.yaml: the supervisor board's forecast, its list of
conversations about to breach, its push and its history (docs/configuration.md#board).
Applied live: a reload changes the next figures."""

from __future__ import annotations

from pydantic import Field

from routing.config import Strict


class BoardConfig(Strict):
    # Seconds ahead the forecast looks: a queue turns amber when its service level is forecast
    # to drop below its target within this time at the current answer rate.
    horizon: float = Field(default=300.0, gt=0, le=24 * 3600)
    # Seconds of recent answers the answer rate is measured over (at most the queue's window).
    rate_window: float = Field(default=900.0, gt=0, le=24 * 3600)
    # A waiting conversation is "about to breach" once its wait is past this share of its
    # queue's answer target (0.8: 16 s of a 20 s target), or past the target itself.
    breach_share: float = Field(default=0.8, gt=0, le=1)
    # Seconds between pushes when nothing changed (waits still grow); a change is pushed at
    # once, at most once a second.
    tick: float = Field(default=5.0, ge=1, le=300)
    # Hours of per-minute samples (service level, waiting) kept in the store for the charts;
    # older ones are pruned.
    history_hours: float = Field(default=8.0, gt=0, le=24 * 31)
