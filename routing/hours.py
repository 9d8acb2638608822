"""Business hours: is a queue open at an instant, and when does it open or close next.

Spans in ``HoursConfig.weekly`` are local wall-clock times in ``HoursConfig.timezone``: an instant
is open when its local time falls in one of its local weekday's spans (start inclusive, end
exclusive, "24:00" meaning the end of the day) and its local date is not a holiday. Judging by the
wall clock keeps the answer right across DST changes:

- spring forward (Europe/Paris 2026-03-29, 02:00 -> 03:00): wall times in the gap never occur, so
  a span "02:30-05:00" opens at 03:00 CEST, the first instant whose wall time is past 02:30;
- fall back (2026-10-25, 03:00 -> 02:00): wall times 02:00-02:59 occur twice and are open (or
  closed) both times, so a "00:00-24:00" Sunday is open 25 hours.

Every state change therefore happens where the wall clock reaches a span boundary or midnight, or
where the wall clock jumps (a UTC-offset transition); ``next_change`` walks those candidate instants
in order instead of sampling time. The spans are compiled once per ``HoursConfig`` object into a
7 x 1440 minute table, so ``is_open`` is one zone conversion and two lookups.

Results are aware datetimes in the hours' zone, with ``fold`` set for a repeated hour. Python
compares and subtracts two datetimes of the *same* zone by wall clock, and an ambiguous local time
never ``==`` a datetime of another zone (PEP 495): measure durations and test equality of instants
after ``.astimezone(timezone.utc)``.

Pure: nothing here reads the clock; the caller passes ``at`` (timezone-aware; naive is refused).
"""

from __future__ import annotations

import heapq
import weakref
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterator, Mapping
from zoneinfo import ZoneInfo

from .config import DAYS, HoursConfig

__all__ = ["CompiledHours", "compiled", "is_open", "next_open", "next_change", "open_now", "SEARCH_DAYS"]

SEARCH_DAYS = 366          # how far next_open / next_change look ahead
_MINUTES = 24 * 60
_DAY = timedelta(days=1)
_UTC = timezone.utc


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        # A naive datetime would be read as the server's local time: a hidden clock/zone dependency.
        raise ValueError(f"business hours need a timezone-aware datetime, got naive {at.isoformat()}")
    return at


@dataclass(frozen=True, slots=True, eq=False)
class CompiledHours:
    """One ``HoursConfig`` parsed for fast questions; build it with :func:`compiled`."""

    zone: ZoneInfo
    table: bytes                              # 7 * 1440 flags: weekday * 1440 + minute of day
    boundaries: tuple[tuple[int, ...], ...]   # per weekday: minutes where the state may change
    holidays: frozenset[date]
    never_open: bool
    always_open: bool                         # every minute of every day and no holidays

    @classmethod
    def build(cls, hours: HoursConfig) -> "CompiledHours":
        table = bytearray(7 * _MINUTES)
        boundaries: list[tuple[int, ...]] = []
        for weekday, day in enumerate(DAYS):
            marks = {0}
            for span in hours.weekly.get(day, []):
                first, last = (_minute(part) for part in str(span).replace(" ", "").split("-"))
                table[weekday * _MINUTES + first: weekday * _MINUTES + last] = b"\x01" * (last - first)
                marks.update(m for m in (first, last) if m < _MINUTES)   # 24:00 is tomorrow's 00:00
            boundaries.append(tuple(sorted(marks)))
        holidays = frozenset(hours.holidays)
        return cls(
            zone=ZoneInfo(hours.timezone),
            table=bytes(table),
            boundaries=tuple(boundaries),
            holidays=holidays,
            never_open=not any(table),
            always_open=all(table) and not holidays,
        )

    # -- questions -----------------------------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        local = _aware(at).astimezone(self.zone)
        return (self.table[local.weekday() * _MINUTES + local.hour * 60 + local.minute] == 1
                and local.date() not in self.holidays)

    def next_open(self, at: datetime) -> datetime | None:
        if self.is_open(at):
            return at.astimezone(self.zone)
        return self.next_change(at)     # from closed, the next change is an opening

    def next_change(self, at: datetime) -> datetime | None:
        state = self.is_open(at)
        if self.never_open or self.always_open:
            return None
        start = at.astimezone(_UTC)
        try:
            until = start + timedelta(days=SEARCH_DAYS)
        except OverflowError:
            until = datetime.max.replace(tzinfo=_UTC) - 2 * _DAY
        for candidate in self._candidates(start, until):
            if self.is_open(candidate) != state:
                return candidate.astimezone(self.zone)
        return None

    # -- candidate instants --------------------------------------------------------------------

    def _candidates(self, start: datetime, until: datetime) -> Iterator[datetime]:
        """Instants in (start, until], ascending (UTC), where the open/closed state may change.

        Local days are generated one by one, but a DST change can make a late wall time of one
        day later than an early one of the next, so instants wait in a heap until no later day
        can produce an earlier one: a UTC offset is under 24 h, so every instant of local date D
        or after is later than D 00:00 (read as UTC) minus one day.
        """
        day = start.astimezone(self.zone).date() - _DAY
        heap: list[datetime] = []
        last: datetime | None = None
        while True:
            floor = datetime(day.year, day.month, day.day, tzinfo=_UTC) - _DAY
            while heap and heap[0] < floor:
                instant = heapq.heappop(heap)
                if instant <= start or instant == last:
                    continue
                if instant > until:
                    return
                last = instant
                yield instant
            for instant in self._day_boundaries(day):
                heapq.heappush(heap, instant)
            day += _DAY

    def _day_boundaries(self, day: date) -> Iterator[datetime]:
        for minute in self.boundaries[day.weekday()]:
            wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60)
            early = wall.replace(tzinfo=self.zone).astimezone(_UTC)
            late = wall.replace(tzinfo=self.zone, fold=1).astimezone(_UTC)
            if early == late:
                yield early
                continue
            # Ambiguous (fall back: both occur) or missing (spring forward: neither occurs). Yield
            # the real occurrences, and the offset change between them: the wall clock jumps
            # there, so the state can flip there without the wall clock showing a boundary.
            for instant in (early, late):
                if instant.astimezone(self.zone).replace(tzinfo=None) == wall:
                    yield instant
            yield self._transition(min(early, late), max(early, late))

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The first instant in (before, after] with ``after``'s UTC offset (to the second)."""
        offset = before.astimezone(self.zone).utcoffset()
        low, high = int(before.timestamp()), int(after.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.zone).utcoffset() == offset:
                low = middle
            else:
                high = middle
        return datetime.fromtimestamp(high, _UTC)


# Compiled once per HoursConfig object. The config is a frozen model but holds a dict, so it is
# not hashable: key by id, and let a weak reference drop the entry when the config goes away
# (a reloaded config builds new objects; the old ones must not pin memory or be confused by id).
_cache: dict[int, tuple["weakref.ref[HoursConfig]", CompiledHours]] = {}


def compiled(hours: HoursConfig) -> CompiledHours:
    key = id(hours)
    entry = _cache.get(key)
    if entry is not None and entry[0]() is hours:
        return entry[1]
    result = CompiledHours.build(hours)

    def forget(ref: "weakref.ref[HoursConfig]", key: int = key) -> None:
        current = _cache.get(key)
        if current is not None and current[0] is ref:
            del _cache[key]

    _cache[key] = (weakref.ref(hours, forget), result)
    return result


def is_open(hours: HoursConfig, at: datetime) -> bool:
    """Whether ``at`` (timezone-aware) is within the business hours."""
    return compiled(hours).is_open(at)


def next_open(hours: HoursConfig, at: datetime) -> datetime | None:
    """``at`` if open, else the next opening instant, in the hours' zone; None if none within
    ``SEARCH_DAYS`` days."""
    return compiled(hours).next_open(at)


def next_change(hours: HoursConfig, at: datetime) -> datetime | None:
    """The first instant after ``at`` whose open/closed state differs from ``at``'s, in the hours'
    zone; None if the state never flips within ``SEARCH_DAYS`` days."""
    return compiled(hours).next_change(at)


def open_now(all_hours: Mapping[str, HoursConfig], at: datetime) -> frozenset[str]:
    """The names in ``all_hours`` that are open at ``at``."""
    return frozenset(name for name, hours in all_hours.items() if is_open(hours, at))
