"""Business hours (routing/hours.py): fixed cases across zones, midnight and DST, and properties."""

from __future__ import annotations

import gc
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.config import DAYS, HoursConfig
from routing.hours import compiled, is_open, next_change, next_open, open_now

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
ZONES = ("Asia/Shanghai", "Europe/Paris", "America/New_York", "UTC")
WEEKDAYS = {d: "09:00-18:00" for d in DAYS[:5]}


def hours(timezone: str = "UTC", holidays: list[date] | None = None, **weekly: object) -> HoursConfig:
    return HoursConfig.model_validate({"timezone": timezone, "weekly": weekly, "holidays": holidays or []})


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- is_open ---------------------------------------------------------------------------------------

def test_start_inclusive_end_exclusive_in_utc() -> None:
    h = hours(**WEEKDAYS)
    # 2026-06-01 is a Monday.
    assert not is_open(h, utc(2026, 6, 1, 8, 59, 59))
    assert is_open(h, utc(2026, 6, 1, 9, 0))
    assert is_open(h, utc(2026, 6, 1, 17, 59, 59, 999999))
    assert not is_open(h, utc(2026, 6, 1, 18, 0))
    assert not is_open(h, utc(2026, 6, 6, 12, 0))   # Saturday: not listed, closed


def test_at_is_converted_to_the_zone() -> None:
    h = hours("Asia/Shanghai", **WEEKDAYS)
    # 01:30 UTC on Monday is 09:30 in Shanghai.
    assert is_open(h, utc(2026, 6, 1, 1, 30))
    assert is_open(h, datetime(2026, 6, 1, 3, 30, tzinfo=PARIS))   # the same instant seen from Paris
    assert not is_open(h, utc(2026, 6, 1, 10, 0))                  # 18:00 Shanghai
    # Sunday 23:30 in New York is Monday 11:30 in Shanghai.
    assert is_open(h, datetime(2026, 5, 31, 23, 30, tzinfo=NEW_YORK))


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(hours(**WEEKDAYS), datetime(2026, 6, 1, 10, 0))


def test_holidays_are_local_dates_closed_all_day() -> None:
    h = hours("Asia/Shanghai", holidays=[date(2026, 10, 1)],
              **{d: "00:00-24:00" for d in DAYS})
    assert is_open(h, utc(2026, 9, 30, 15, 59))        # 23:59 on Sep 30 in Shanghai
    assert not is_open(h, utc(2026, 9, 30, 16, 0))     # midnight: the holiday starts
    assert not is_open(h, utc(2026, 10, 1, 15, 59))
    assert is_open(h, utc(2026, 10, 1, 16, 0))         # Oct 2 local
    assert next_change(h, utc(2026, 9, 30, 12)) == datetime(2026, 10, 1, tzinfo=SHANGHAI)
    assert next_open(h, utc(2026, 10, 1, 3)) == datetime(2026, 10, 2, tzinfo=SHANGHAI)


def test_span_ending_at_24_00_runs_to_midnight_and_joins_the_next_day() -> None:
    h = hours("Asia/Shanghai", fri="20:00-24:00", sat=["00:00-02:00", "10:00-12:00"])
    friday_2130 = datetime(2026, 6, 5, 21, 30, tzinfo=SHANGHAI)
    assert is_open(h, datetime(2026, 6, 5, 23, 59, 59, tzinfo=SHANGHAI))
    assert is_open(h, datetime(2026, 6, 6, 0, 0, tzinfo=SHANGHAI))
    # No flip at midnight: open from Friday 20:00 until Saturday 02:00.
    assert next_change(h, friday_2130) == datetime(2026, 6, 6, 2, 0, tzinfo=SHANGHAI)
    assert next_open(h, datetime(2026, 6, 6, 2, 0, tzinfo=SHANGHAI)) == datetime(2026, 6, 6, 10, tzinfo=SHANGHAI)
    # A holiday on Saturday cuts Friday's evening at midnight.
    h2 = hours("Asia/Shanghai", holidays=[date(2026, 6, 6)], fri="20:00-24:00", sat="00:00-02:00")
    assert next_change(h2, friday_2130) == datetime(2026, 6, 6, 0, 0, tzinfo=SHANGHAI)


def test_several_spans_a_day_and_overlaps() -> None:
    h = hours(mon=["09:00-12:00", "11:00-13:00", "14:00-18:00"])
    monday = utc(2026, 6, 1, 8)
    flips = []
    at = monday
    for _ in range(4):
        at = next_change(h, at)
        flips.append(at.strftime("%a %H:%M"))
    assert flips == ["Mon 09:00", "Mon 13:00", "Mon 14:00", "Mon 18:00"]


def test_open_now() -> None:
    everyone = {
        "paris": hours("Europe/Paris", **WEEKDAYS),
        "new_york": hours("America/New_York", **WEEKDAYS),
        "shanghai": hours("Asia/Shanghai", **WEEKDAYS),
        "never": hours(),
    }
    # Monday 2026-06-01 14:00 UTC: 16:00 Paris, 10:00 New York, 22:00 Shanghai.
    assert open_now(everyone, utc(2026, 6, 1, 14)) == frozenset({"paris", "new_york"})
    # 02:00 UTC: 04:00 Paris, Sunday 22:00 New York, 10:00 Shanghai.
    assert open_now(everyone, utc(2026, 6, 1, 2)) == frozenset({"shanghai"})
    assert open_now({}, utc(2026, 6, 1, 2)) == frozenset()


def test_never_and_always_open() -> None:
    at = utc(2026, 6, 1, 12)
    never = hours("Europe/Paris")
    assert not is_open(never, at)
    assert next_open(never, at) is None
    assert next_change(never, at) is None
    always = hours("Europe/Paris", **{d: "00:00-24:00" for d in DAYS})
    assert next_open(always, at) == at
    assert next_change(always, at) is None
    # Across a DST change too: the wall clock jumps, the state does not.
    assert next_change(always, utc(2026, 3, 28)) is None


def test_next_open_returns_the_instant_in_the_hours_zone() -> None:
    h = hours("Europe/Paris", **WEEKDAYS)
    at = utc(2026, 6, 1, 10)            # 12:00 Paris, open
    assert next_open(h, at) == at
    assert next_open(h, at).tzinfo == PARIS
    opening = next_open(h, utc(2026, 6, 5, 17))   # Friday 19:00 Paris
    assert opening == datetime(2026, 6, 8, 9, 0, tzinfo=PARIS)
    assert opening.tzinfo == PARIS


def test_only_a_far_future_day_is_within_the_search() -> None:
    # Open only on Mondays, with every Monday of the next year but one a holiday.
    start = date(2026, 6, 1)
    mondays = [start + timedelta(weeks=k) for k in range(60)]
    h = hours(holidays=mondays[:51] + mondays[52:], mon="10:00-11:00")
    assert next_open(h, utc(2026, 6, 1)) == utc(2027, 5, 24, 10)   # mondays[51]


# -- DST -------------------------------------------------------------------------------------------

def test_paris_spring_forward_span_starting_in_the_gap_opens_at_03_00() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00 UTC; 02:00-02:59 never happen.
    h = hours("Europe/Paris", sun="02:30-05:00")
    opening = next_open(h, utc(2026, 3, 28, 12))
    assert opening == utc(2026, 3, 29, 1, 0)
    assert opening.replace(tzinfo=None) == datetime(2026, 3, 29, 3, 0)      # wall clock 03:00
    assert next_change(h, opening) == utc(2026, 3, 29, 3, 0)                # 05:00 CEST
    assert not is_open(h, utc(2026, 3, 29, 0, 59, 59))                      # 01:59:59 CET


def test_paris_spring_forward_span_ending_in_the_gap_closes_at_the_jump() -> None:
    h = hours("Europe/Paris", sun="01:00-02:30")
    assert next_open(h, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 0, 0)    # 01:00 CET
    assert next_change(h, utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 1, 0)
    # Open 1 hour that day, 1.5 hours a week later.
    assert next_change(h, utc(2026, 4, 5, 0)) == datetime(2026, 4, 5, 2, 30, tzinfo=PARIS)


def test_paris_spring_forward_day_is_23_hours_long() -> None:
    h = hours("Europe/Paris", sun="00:00-24:00")
    opening = next_open(h, utc(2026, 3, 28, 12))
    closing = next_change(h, opening)
    assert opening == datetime(2026, 3, 29, 0, 0, tzinfo=PARIS)
    assert closing == datetime(2026, 3, 30, 0, 0, tzinfo=PARIS)
    # Same-zone subtraction is wall-clock arithmetic in Python: measure elapsed time in UTC.
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=23)


def test_paris_fall_back_repeated_hour_is_judged_by_the_wall_clock() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00 UTC; 02:00-02:59 happen twice.
    h = hours("Europe/Paris", sun="02:15-03:30")
    flips = []
    at = utc(2026, 10, 24, 12)
    for _ in range(4):
        at = next_change(h, at)
        flips.append((at.astimezone(UTC).strftime("%H:%M"), at.strftime("%H:%M%z"), is_open(h, at)))
    assert flips == [
        ("00:15", "02:15+0200", True),
        ("01:00", "02:00+0100", False),   # the jump back to 02:00 leaves the span
        ("01:15", "02:15+0100", True),    # and 02:15 comes round again
        ("02:30", "03:30+0100", False),
    ]


def test_paris_fall_back_day_is_25_hours_long() -> None:
    h = hours("Europe/Paris", sun="00:00-24:00")
    opening = next_open(h, utc(2026, 10, 24, 12))
    closing = next_change(h, opening)
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=25)
    assert closing == datetime(2026, 10, 26, 0, 0, tzinfo=PARIS)


def test_paris_span_inside_the_repeated_hour_opens_twice() -> None:
    h = hours("Europe/Paris", sun="02:10-02:20")
    # An ambiguous local time never compares equal (==) to another zone's datetime (PEP 495),
    # so compare in UTC.
    first = next_open(h, utc(2026, 10, 24, 12))
    assert first.astimezone(UTC) == utc(2026, 10, 25, 0, 10)
    assert next_change(h, first).astimezone(UTC) == utc(2026, 10, 25, 0, 20)
    second = next_open(h, utc(2026, 10, 25, 0, 20))
    assert second.astimezone(UTC) == utc(2026, 10, 25, 1, 10)
    assert second.fold == 1 and second.strftime("%H:%M%z") == "02:10+0100"


def test_new_york_opening_hour_is_local_on_both_sides_of_dst() -> None:
    h = hours("America/New_York", **WEEKDAYS)
    # DST starts Sunday 2026-03-08: Friday opens at 14:00 UTC, Monday at 13:00 UTC.
    assert next_open(h, utc(2026, 3, 5, 23)) == utc(2026, 3, 6, 14)
    assert next_open(h, utc(2026, 3, 6, 23)) == utc(2026, 3, 9, 13)
    assert next_open(h, utc(2026, 3, 6, 23)) == datetime(2026, 3, 9, 9, tzinfo=NEW_YORK)
    # DST ends Sunday 2026-11-01: back to 14:00 UTC.
    assert next_open(h, utc(2026, 10, 30, 23)) == utc(2026, 11, 2, 14)
    assert not is_open(h, utc(2026, 11, 2, 13, 30))


def test_new_york_evening_span_over_the_spring_gap() -> None:
    # Saturday night to Sunday morning across 2026-03-08 02:00 -> 03:00.
    h = hours("America/New_York", sat="22:00-24:00", sun="00:00-06:00")
    opening = next_open(h, utc(2026, 3, 7, 12))
    closing = next_change(h, opening)
    assert opening == datetime(2026, 3, 7, 22, tzinfo=NEW_YORK)
    assert closing == datetime(2026, 3, 8, 6, tzinfo=NEW_YORK)
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=7)


# -- compilation cache ------------------------------------------------------------------------------

def test_compiled_once_per_config_object_and_dropped_with_it() -> None:
    from routing import hours as module

    h = hours("Europe/Paris", **WEEKDAYS)
    assert compiled(h) is compiled(h)
    same = hours("Europe/Paris", **WEEKDAYS)
    assert compiled(same) is not compiled(h)
    key = id(same)
    del same
    gc.collect()
    assert key not in module._cache or module._cache[key][0]() is not None


# -- properties ------------------------------------------------------------------------------------

def _span(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(start + 1, 24 * 60))
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


# Instants around the DST changes of the test zones, and one ordinary week.
FOCUS = [utc(2026, 3, 8, 7), utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2026, 11, 1, 6),
         utc(2026, 6, 3, 12), utc(2026, 12, 31, 16)]


@st.composite
def schedules(draw: st.DrawFn) -> HoursConfig:
    weekly = {}
    for day in DAYS:
        if draw(st.booleans()):
            weekly[day] = [_span(draw) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()) and weekly:
        weekly[draw(st.sampled_from(sorted(weekly)))] = ["00:00-24:00"]
    holidays = draw(st.lists(st.dates(date(2026, 3, 1), date(2027, 1, 10)), max_size=3))
    return hours(draw(st.sampled_from(ZONES)), holidays=holidays, **weekly)


instants = st.builds(lambda base, seconds: base + timedelta(seconds=seconds),
                     st.sampled_from(FOCUS), st.integers(-4 * 86400, 4 * 86400))

SCAN = timedelta(days=3)   # bounded minute-by-minute check
MINUTE = timedelta(minutes=1)
TINY = timedelta(microseconds=1)


def _oracle(h: HoursConfig, at: datetime) -> bool:
    """is_open written the slow, obvious way."""
    local = at.astimezone(ZoneInfo(h.timezone))
    if local.date() in h.holidays:
        return False
    now = f"{local.hour:02d}:{local.minute:02d}"
    for span in h.weekly.get(DAYS[local.weekday()], []):
        start, end = span.split("-")
        if start <= now < end:
            return True
    return False


def _minutes(start: datetime, stop: datetime) -> list[datetime]:
    out, at = [], start
    while at < stop and at < start + SCAN:
        out.append(at)
        at += MINUTE
    return out


@settings(max_examples=200, deadline=None)
@given(schedules(), instants)
def test_is_open_matches_the_obvious_reading(h: HoursConfig, at: datetime) -> None:
    for k in range(0, 180, 7):
        t = at + k * MINUTE
        assert is_open(h, t) == _oracle(h, t)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), instants)
def test_next_open_is_open_and_nothing_before_it_is(h: HoursConfig, at: datetime) -> None:
    opening = next_open(h, at)
    if opening is not None:
        assert opening.tzinfo == ZoneInfo(h.timezone)
        opening = opening.astimezone(UTC)   # arithmetic and == on instants, not wall clocks
    if opening is None:
        assert not any(h.weekly.values())
        assert not any(is_open(h, t) for t in _minutes(at, at + SCAN))
        return
    assert opening >= at
    assert is_open(h, opening)
    if opening > at:
        assert (opening.second, opening.microsecond) == (0, 0)
        assert not is_open(h, opening - TINY)
        assert not any(is_open(h, t) for t in _minutes(at, opening))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), instants)
def test_next_change_is_the_first_flip(h: HoursConfig, at: datetime) -> None:
    state = is_open(h, at)
    change = next_change(h, at)
    change = change.astimezone(UTC) if change is not None else None
    stop = change if change is not None else at + SCAN
    assert all(is_open(h, t) == state for t in _minutes(at, stop))
    if change is None:
        return
    assert change > at
    assert is_open(h, change) != state
    assert is_open(h, change - TINY) == state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), instants)
def test_chained_next_change_finds_every_flip_a_minute_scan_sees(h: HoursConfig, at: datetime) -> None:
    horizon = at + timedelta(days=2)
    flips, t = [], at
    while (t := next_change(h, t)) is not None and t < horizon:
        flips.append(t.astimezone(UTC))
    scan = _minutes(at, horizon)
    # Spans and these zones' offsets are whole minutes, so flips are at least a minute apart and
    # each lies in exactly one scan step (previous, current] where the state differs.
    steps = [(prev, cur) for prev, cur in zip(scan, scan[1:]) if is_open(h, prev) != is_open(h, cur)]
    in_scan = [f for f in flips if f <= scan[-1]]
    assert len(in_scan) == len(steps)
    for flip, (prev, cur) in zip(in_scan, steps):
        assert prev < flip <= cur
