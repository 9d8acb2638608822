"""Service level over a sliding window and the estimated wait (routing/servicelevel.py)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.servicelevel import ServiceLevelSnapshot, ServiceLevelTracker, estimated_wait

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- figures ----------------------------------------------------------------------------------------

def test_no_data_gives_none_not_zero() -> None:
    tracker = ServiceLevelTracker()
    snap = tracker.snapshot("sales", at(0), target_seconds=20, target_percent=80)
    assert snap == ServiceLevelSnapshot("sales", 0, 0, 0, None, None, None, 20.0, 80.0)
    assert snap.meets_target is None
    assert tracker.average_handle("sales", at(0)) is None


def test_hand_made_sequence() -> None:
    tracker = ServiceLevelTracker()
    tracker.answered("sales", 5, at(10))
    tracker.answered("sales", 20, at(20))     # exactly the target: within
    tracker.answered("sales", 45, at(30))
    tracker.abandoned("sales", 3, at(40))     # left within the target: not counted against
    tracker.abandoned("sales", 60, at(50))    # left after the target: a failure
    tracker.handled("sales", 100, at(60))
    tracker.handled("sales", 200, at(70))
    tracker.answered("support", 1, at(15))    # another queue: not mixed in

    snap = tracker.snapshot("sales", at(100), target_seconds=20, target_percent=80)
    assert snap.queue == "sales"
    assert (snap.answered, snap.abandoned, snap.answered_within_target) == (3, 2, 2)
    assert snap.service_level == pytest.approx(2 / (3 + 1) * 100)   # 50 %
    assert snap.average_wait == pytest.approx((5 + 20 + 45) / 3)
    assert snap.average_handle == pytest.approx(150)
    assert (snap.target_seconds, snap.target_percent) == (20, 80)
    assert snap.meets_target is False

    # The target is the caller's: a looser one changes the figures over the same records.
    loose = tracker.snapshot("sales", at(100), target_seconds=60, target_percent=80)
    assert loose.answered_within_target == 3
    assert loose.service_level == pytest.approx(100.0)   # the 60 s abandon is within 60 s
    assert loose.meets_target is True

    support = tracker.snapshot("support", at(100), target_seconds=20, target_percent=80)
    assert (support.answered, support.service_level, support.average_handle) == (1, 100.0, None)


def test_only_early_abandons_means_no_service_level() -> None:
    tracker = ServiceLevelTracker()
    tracker.abandoned("q", 2, at(0))
    tracker.abandoned("q", 4, at(1))
    snap = tracker.snapshot("q", at(2), target_seconds=20, target_percent=80)
    assert (snap.answered, snap.abandoned, snap.service_level, snap.average_wait) == (0, 2, None, None)


def test_only_late_abandons_is_zero_percent() -> None:
    tracker = ServiceLevelTracker()
    tracker.abandoned("q", 30, at(0))
    assert tracker.snapshot("q", at(1), 20, 80).service_level == 0.0


# -- window -----------------------------------------------------------------------------------------

def test_records_fall_out_of_the_window() -> None:
    tracker = ServiceLevelTracker(window_seconds=60)
    tracker.answered("q", 5, at(0))
    tracker.abandoned("q", 50, at(30))
    tracker.handled("q", 120, at(30))
    snap = tracker.snapshot("q", at(59), 20, 80)
    assert (snap.answered, snap.abandoned, snap.service_level) == (1, 1, 50.0)
    # At t=60 the first record is exactly one window old: out.
    snap = tracker.snapshot("q", at(60), 20, 80)
    assert (snap.answered, snap.abandoned, snap.service_level) == (0, 1, 0.0)
    assert snap.average_handle == 120
    snap = tracker.snapshot("q", at(90), 20, 80)
    assert (snap.answered, snap.abandoned, snap.service_level, snap.average_handle) == (0, 0, None, None)
    assert tracker.average_handle("q", at(90)) is None


def test_pruned_on_write_so_memory_is_bounded_by_the_window() -> None:
    tracker = ServiceLevelTracker(window_seconds=10)
    for second in range(1000):
        tracker.answered("q", 1, at(second))
        tracker.handled("q", 30, at(second))
    records = tracker._queues["q"]
    assert len(records.answered.times) == 10 and len(records.handled.times) == 10
    assert tracker.average_handle("q", at(999)) == pytest.approx(30)
    # A read long after drops the idle queue entirely.
    tracker.snapshot("q", at(5000), 20, 80)
    assert "q" not in tracker._queues


def test_running_sums_do_not_drift() -> None:
    tracker = ServiceLevelTracker(window_seconds=5)
    for second in range(2000):
        tracker.handled("q", 0.1 * (second % 7), at(second))
    expected = sum(0.1 * (s % 7) for s in range(1996, 2000)) / 4   # records at 1996..1999
    assert tracker.average_handle("q", at(2000)) == pytest.approx(expected)


def test_set_window() -> None:
    tracker = ServiceLevelTracker(window_seconds=3600)
    tracker.answered("q", 1, at(0))
    tracker.answered("q", 1, at(1000))
    assert tracker.snapshot("q", at(1500), 20, 80).answered == 2
    tracker.set_window(600)
    assert tracker.window_seconds == 600
    assert tracker.snapshot("q", at(1500), 20, 80).answered == 1
    tracker.set_window(3600)   # what a shorter window dropped does not come back
    assert tracker.snapshot("q", at(1500), 20, 80).answered == 1
    with pytest.raises(ValueError):
        tracker.set_window(0)
    with pytest.raises(ValueError):
        ServiceLevelTracker(window_seconds=-1)


def test_late_records_are_placed_in_order() -> None:
    tracker = ServiceLevelTracker(window_seconds=100)
    tracker.answered("q", 1, at(50))
    tracker.answered("q", 30, at(10))     # reported late
    tracker.answered("q", 2, at(60))
    assert tracker.snapshot("q", at(100), 20, 80).answered == 3
    snap = tracker.snapshot("q", at(111), 20, 80)    # the t=10 record is out, the others in
    assert (snap.answered, snap.answered_within_target, snap.service_level) == (2, 2, 100.0)


def test_records_after_now_are_not_counted_yet() -> None:
    tracker = ServiceLevelTracker()
    tracker.answered("q", 1, at(10))
    tracker.answered("q", 100, at(20))
    snap = tracker.snapshot("q", at(15), 20, 80)
    assert (snap.answered, snap.service_level, snap.average_wait) == (1, 100.0, 1.0)


def test_bad_durations_are_refused() -> None:
    tracker = ServiceLevelTracker()
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError):
            tracker.answered("q", bad, at(0))
        with pytest.raises(ValueError):
            tracker.handled("q", bad, at(0))


# -- estimated wait ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("position", "average_handle", "agents", "expected"),
    [
        (0, 120.0, 2, 0.0),        # being offered now
        (-3, 120.0, 2, 0.0),
        (1, 120.0, 1, 120.0),
        (1, 120.0, 3, 120.0),      # next in line still waits one handle time
        (3, 120.0, 3, 120.0),
        (4, 120.0, 3, 240.0),
        (5, None, 2, 540.0),       # no history: the default 180 s
        (5, 0.0, 2, 540.0),
        (2, 60.0, 0, 120.0),       # no agents counted as one
        (2, 60.0, -4, 120.0),
    ],
)
def test_estimated_wait(position: int, average_handle: float | None, agents: int, expected: float) -> None:
    assert estimated_wait(position, average_handle, agents) == expected


def test_estimated_wait_default_handle_and_tracker_figure() -> None:
    assert estimated_wait(3, None, 1, default_handle=30.0) == 90.0
    tracker = ServiceLevelTracker()
    tracker.handled("q", 90, at(0))
    tracker.handled("q", 150, at(1))
    assert estimated_wait(5, tracker.average_handle("q", at(2)), 2) == 3 * 120.0


# -- properties -------------------------------------------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["answered", "abandoned", "handled"]), st.sampled_from(["a", "b"]),
              st.floats(0, 600, allow_nan=False), st.integers(0, 7200)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(0, 9000), st.floats(1, 120), st.integers(60, 3600))
def test_service_level_in_range_and_counts_match(
    recorded: list[tuple[str, str, float, int]], now_seconds: int, target: float, window: int,
) -> None:
    tracker = ServiceLevelTracker(window_seconds=window)
    recorded = sorted(recorded, key=lambda e: e[3])   # times arrive in order
    for kind, queue, seconds, when in recorded:
        getattr(tracker, kind)(queue, seconds, at(when))
    now = at(max([now_seconds, *(e[3] for e in recorded)]))
    for queue in ("a", "b"):
        snap = tracker.snapshot(queue, now, target, 80)
        live = [(k, s) for k, q, s, w in recorded
                if q == queue and now - timedelta(seconds=window) < at(w) <= now]
        answered = [s for k, s in live if k == "answered"]
        abandoned = [s for k, s in live if k == "abandoned"]
        handled = [s for k, s in live if k == "handled"]
        assert snap.answered == len(answered)
        assert snap.abandoned == len(abandoned)
        assert snap.answered_within_target == sum(1 for s in answered if s <= target)
        assert 0 <= snap.answered_within_target <= snap.answered
        offered = len(answered) + sum(1 for s in abandoned if s > target)
        if offered == 0:
            assert snap.service_level is None
        else:
            assert 0.0 <= snap.service_level <= 100.0
            assert snap.service_level == pytest.approx(snap.answered_within_target / offered * 100)
        assert (snap.average_wait is None) == (not answered)
        if answered:
            assert snap.average_wait == pytest.approx(sum(answered) / len(answered))
        assert (snap.average_handle is None) == (not handled)
        if handled:
            assert snap.average_handle == pytest.approx(sum(handled) / len(handled), abs=1e-9)


@given(st.integers(-5, 500), st.one_of(st.none(), st.floats(0, 3600)), st.integers(-2, 50))
def test_estimated_wait_grows_with_position(position: int, handle: float | None, agents: int) -> None:
    wait = estimated_wait(position, handle, agents)
    assert wait >= 0
    assert estimated_wait(position + 1, handle, agents) >= wait
    if position > 0:
        assert wait >= (handle or 180.0)


def test_each_queue_keeps_its_own_window() -> None:
    from routing.servicelevel import ServiceLevels

    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    levels = ServiceLevels({"short": 60, "long": 3600})
    for queue in ("short", "long"):
        levels.answered(queue, 5.0, now - timedelta(seconds=600))
        levels.answered(queue, 50.0, now - timedelta(seconds=10))
    assert levels.snapshot("short", now, 20, 80).answered == 1
    assert levels.snapshot("long", now, 20, 80).answered == 2
    levels.set_windows({"short": 3600, "long": 3600})
    assert levels.snapshot("short", now, 20, 80).answered == 1  # what a shorter window dropped stays dropped
    levels.answered("unknown", 1.0, now)  # a queue added by a reload later: the default window
    assert levels.snapshot("unknown", now, 20, 80).answered == 1
