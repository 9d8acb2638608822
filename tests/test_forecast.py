"""The board's forecast (routing/forecast.py): will a queue's service level drop below its target
within the horizon at the current answer rate? Examples a supervisor can check by hand, then
properties over any queue."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from routing.forecast import about_to_breach, lowest_service_level, queue_colour


def lowest(**kwargs: float) -> float | None:
    base = dict(answered_within=0, offered=0, waits=[], target_seconds=20.0, answer_rate=0.0, horizon=300.0)
    return lowest_service_level(**{**base, **kwargs})


def test_nobody_waiting_keeps_the_current_level() -> None:
    assert lowest(answered_within=9, offered=10) == 90.0
    assert lowest() is None  # no data now, nothing forecast: no made-up figure


def test_a_customer_who_will_wait_past_the_target_drags_the_level_down() -> None:
    # 9 of 10 within 20 s; one customer waiting 15 s and nobody answering: in 5 s it is a miss.
    assert lowest(answered_within=9, offered=10, waits=[15.0]) == pytest.approx(9 / 11 * 100)
    # Answered within its 5 s left (one answer every 2 s): a hit instead.
    assert lowest(answered_within=9, offered=10, waits=[15.0], answer_rate=0.5) == pytest.approx(90.0)
    # Its miss comes in 5 s: a horizon of 4 s does not see it.
    assert lowest(answered_within=9, offered=10, waits=[15.0], horizon=4.0) == 90.0


def test_the_longest_wait_is_answered_first_and_the_queue_behind_it_misses() -> None:
    # One answer every 10 s: the 12 s wait is answered at 22 s (miss, at 8 s), the 5 s wait at
    # 25 s (miss, at 15 s), the 1 s wait at 31 s (miss, at 19 s): 8/13 at the lowest.
    assert lowest(answered_within=8, offered=10, waits=[1.0, 12.0, 5.0], answer_rate=0.1) == pytest.approx(8 / 13 * 100)
    # Twice as fast: 12 s -> answered at 17 s (hit), 5 s -> 15 s (hit), 1 s -> 16 s (hit).
    assert lowest(answered_within=8, offered=10, waits=[1.0, 12.0, 5.0], answer_rate=0.2) == pytest.approx(80.0)


def test_a_queue_with_no_figure_yet_is_forecast_from_its_first_miss() -> None:
    assert lowest(waits=[10.0]) == 0.0
    assert lowest(waits=[10.0], answer_rate=1.0) == 100.0


def test_colours() -> None:
    assert queue_colour(79.9, 79.9, 80) == "red"
    assert queue_colour(85.0, 79.0, 80) == "amber"
    assert queue_colour(None, 0.0, 80) == "amber"
    assert queue_colour(80.0, 80.0, 80) == "green"   # exactly the target meets it
    assert queue_colour(None, None, 80) == "green"


def test_about_to_breach_is_past_the_share_of_the_target() -> None:
    assert not about_to_breach(15.9, 20.0, 0.8)
    assert about_to_breach(16.0, 20.0, 0.8) and about_to_breach(25.0, 20.0, 0.8)


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        lowest(answered_within=3, offered=2)
    with pytest.raises(ValueError):
        lowest(answer_rate=-1.0)
    with pytest.raises(ValueError):
        lowest(answer_rate=math.nan)


# -- properties -------------------------------------------------------------------------------------

counts = st.integers(0, 50).flatmap(lambda offered: st.tuples(st.integers(0, offered), st.just(offered)))
waits = st.lists(st.floats(0, 200, allow_nan=False), max_size=12)
rates = st.floats(0, 2, allow_nan=False)
horizons = st.floats(0, 600, allow_nan=False)
targets = st.floats(1, 120, allow_nan=False)


def forecast(count: tuple[int, int], waits: list[float], target: float, rate: float, horizon: float) -> float | None:
    return lowest_service_level(answered_within=count[0], offered=count[1], waits=waits, target_seconds=target,
                                answer_rate=rate, horizon=horizon)


def at_most(a: float | None, b: float | None) -> bool:
    """a <= b, where None (no figure: nothing to fall below a target) counts as 100%, as
    queue_colour reads it. Answering faster can turn "no figure" into 100% (one hit inside the
    horizon where, answering slower, nobody was answered or passed the target in it)."""
    return (100.0 if a is None else a) <= (100.0 if b is None else b) + 1e-9


@settings(max_examples=100, deadline=None)
@given(counts, waits, targets, rates, horizons)
def test_the_forecast_is_a_percent_never_above_the_current_level(count, waits, target, rate, horizon) -> None:
    found = forecast(count, waits, target, rate, horizon)
    current = count[0] / count[1] * 100 if count[1] else None
    assert found is None or 0.0 <= found <= 100.0
    assert at_most(found, current) if current is not None else True
    if not waits:
        assert found == current


@settings(max_examples=100, deadline=None)
@given(counts, waits, targets, rates, rates, horizons)
@example((0, 0), [0.0], 1.0, 0.0, 2.0, 0.5)  # no figure answering slower, 100% answering faster
def test_answering_faster_never_makes_the_forecast_worse(count, waits, target, rate, other, horizon) -> None:
    slow, fast = sorted((rate, other))
    assert at_most(forecast(count, waits, target, slow, horizon), forecast(count, waits, target, fast, horizon))


@settings(max_examples=100, deadline=None)
@given(counts, waits, st.lists(st.floats(0, 100, allow_nan=False), min_size=12, max_size=12), targets, rates, horizons)
def test_longer_waits_never_make_the_forecast_better(count, waits, more, target, rate, horizon) -> None:
    longer = [w + extra for w, extra in zip(waits, more)]
    assert at_most(forecast(count, longer, target, rate, horizon), forecast(count, waits, target, rate, horizon))


@settings(max_examples=100, deadline=None)
@given(counts, waits, targets, rates, horizons, horizons)
def test_looking_further_ahead_never_makes_the_forecast_better(count, waits, target, rate, horizon, other) -> None:
    near, far = sorted((horizon, other))
    assert at_most(forecast(count, waits, target, rate, far), forecast(count, waits, target, rate, near))


@settings(max_examples=100, deadline=None)
@given(counts, waits, targets, rates, horizons, st.floats(0, 200, allow_nan=False))
def test_one_more_customer_waiting_never_makes_the_forecast_better(count, waits, target, rate, horizon, extra) -> None:
    assert at_most(forecast(count, [*waits, extra], target, rate, horizon), forecast(count, waits, target, rate, horizon))
