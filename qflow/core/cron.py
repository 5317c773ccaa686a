"""Cron expressions: five fields or an ``@alias``, and when they fire in a time zone.

Pure standard library. Fields are ``minute hour day-of-month month day-of-week`` with
``*``, lists (``1,15``), ranges (``1-5``), steps (``*/15``, ``8-18/2``, ``5/10``) and
names (``jan``-``dec``, ``sun``-``sat``; day 7 is Sunday too). As in Vixie cron, when
both day fields are restricted (neither starts with ``*``) a day matches either of them.

An expression is matched on the wall clock of its time zone. When clocks change:

- a wall time skipped when clocks go forward fires once, at the instant the clocks jump
  to (02:30 on the spring-forward night in Paris fires at 03:30 CEST);
- a wall time that happens twice when clocks go back fires once, at its first
  occurrence, unless the expression matches every hour, in which case it fires at both
  (an hourly job keeps running hourly).
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Iterator

from qflow.errors import UserError

UTC = dt.timezone.utc
_ONE_DAY = dt.timedelta(days=1)
_DAYS_SEARCHED = 366 * 9              # Feb 29 on a Monday: up to 8 years apart

ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# Longest month lengths, leap years included: "0 0 30 2 *" can never fire.
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
               11: 30, 12: 31}


class CronError(UserError):
    """A cron expression that cannot be parsed or can never fire."""


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int]


_FIELDS = (_Field("minute", 0, 59, {}), _Field("hour", 0, 23, {}),
           _Field("day-of-month", 1, 31, {}), _Field("month", 1, 12, _MONTHS),
           _Field("day-of-week", 0, 7, _WEEKDAYS))


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression."""

    text: str
    times: tuple[tuple[int, int], ...]       # every matching (hour, minute), sorted
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]                  # 0 = Sunday
    day_or: bool                              # both day fields restricted: either matches

    @property
    def every_hour(self) -> bool:
        """True when every hour of the day matches (e.g. ``@hourly``, ``*/5 * * * *``)."""
        return len({h for h, _ in self.times}) == 24

    def matches_day(self, day: dt.date) -> bool:
        """Whether the expression fires on this calendar date (at some time of it)."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays
        return (by_date or by_weekday) if self.day_or else (by_date and by_weekday)


def parse_cron(text: str) -> Cron:
    """Parse five cron fields or an ``@alias``; raise CronError with the reason."""
    source = text.strip()
    expr = ALIASES.get(source.lower(), source)
    if expr.startswith("@"):
        raise CronError(f"bad cron expression {text!r}: unknown alias "
                        f"(one of: {', '.join(ALIASES)})")
    parts = expr.split()
    if len(parts) != 5:
        raise CronError(f"bad cron expression {text!r}: expected 5 fields "
                        "(minute hour day-of-month month day-of-week), got "
                        f"{len(parts)}")
    minutes, hours, days, months, weekdays = (
        _parse_field(part, field, text) for part, field in zip(parts, _FIELDS, strict=True))
    cron = Cron(source, tuple((h, m) for h in sorted(hours) for m in sorted(minutes)),
                days, months, frozenset(d % 7 for d in weekdays),
                day_or=not parts[2].startswith("*") and not parts[4].startswith("*"))
    _check_can_fire(cron, text)
    return cron


def _parse_field(part: str, field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        values.update(_parse_item(item, field, text))
    return frozenset(values)


def _parse_item(item: str, field: _Field, text: str) -> range:
    span, _, step_text = item.partition("/")
    step = _number(step_text, field, text, "step") if step_text else 1
    if step < 1:
        raise CronError(f"bad cron expression {text!r}: {field.name} step must be >= 1")
    if span == "*":
        lo, hi = field.lo, field.hi
    elif "-" in span:
        first, _, last = span.partition("-")
        lo, hi = _value(first, field, text), _value(last, field, text)
        if lo > hi:
            raise CronError(f"bad cron expression {text!r}: {field.name} range {span!r} "
                            "goes backwards")
    else:
        lo = _value(span, field, text)
        hi = field.hi if step_text else lo
    return range(lo, hi + 1, step)


def _value(token: str, field: _Field, text: str) -> int:
    named = field.names.get(token.lower())
    value = named if named is not None else _number(token, field, text, "value")
    if not field.lo <= value <= field.hi:
        raise CronError(f"bad cron expression {text!r}: {field.name} {token!r} is out of "
                        f"range {field.lo}-{field.hi}")
    return value


def _number(token: str, field: _Field, text: str, what: str) -> int:
    if not token.isdigit():
        raise CronError(f"bad cron expression {text!r}: {field.name} {what} {token!r} "
                        "is not a number" + (" or a name" if field.names else ""))
    return int(token)


def _check_can_fire(cron: Cron, text: str) -> None:
    if cron.day_or or any(d <= _MONTH_DAYS[m] for m in cron.months for d in cron.days):
        return
    raise CronError(f"bad cron expression {text!r}: never fires (no such day in the "
                    "given months)")


# -- firing in a time zone ---------------------------------------------------------------
@dataclass(frozen=True)
class CronRule:
    """A cron expression evaluated on the wall clock of the schedule's time zone."""

    cron: Cron

    def after(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        for day in _days(t.astimezone(tz).date() - _ONE_DAY, +1):
            for instant in self._instants(day, tz):
                if instant > t:
                    yield instant

    def before(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        for day in _days(t.astimezone(tz).date() + _ONE_DAY, -1):
            for instant in reversed(self._instants(day, tz)):
                if instant < t:
                    yield instant

    def describe(self) -> str:
        return self.cron.text

    def _instants(self, day: dt.date, tz: zoneinfo.ZoneInfo) -> list[dt.datetime]:
        """The UTC instants the expression fires at on ``day`` (local), sorted."""
        if not self.cron.matches_day(day):
            return []
        offset = _uniform_offset(day, tz)
        walls = (dt.datetime.combine(day, dt.time(h, m)) for h, m in self.cron.times)
        if offset is not None:               # no clock change that day: the common case
            return [(w - offset).replace(tzinfo=UTC) for w in walls]
        found = {i for w in walls for i in wall_instants(w, tz, self.cron.every_hour)}
        return sorted(found)


def _days(first: dt.date, step: int) -> Iterator[dt.date]:
    day = first
    for _ in range(_DAYS_SEARCHED):
        yield day
        if not dt.date.min + _ONE_DAY < day < dt.date.max - _ONE_DAY:
            return
        day += step * _ONE_DAY


def _uniform_offset(day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.timedelta | None:
    """The zone's UTC offset on ``day`` if it does not change during that day."""
    start = dt.datetime.combine(day, dt.time())
    offsets = {start.replace(tzinfo=tz, fold=0).utcoffset(),
               start.replace(tzinfo=tz, fold=1).utcoffset(),
               (start + _ONE_DAY).replace(tzinfo=tz, fold=0).utcoffset()}
    return offsets.pop() if len(offsets) == 1 else None


def wall_instants(wall: dt.datetime, tz: zoneinfo.ZoneInfo,
                  both_folds: bool = False) -> list[dt.datetime]:
    """The UTC instants a naive wall-clock time in ``tz`` stands for (see module doc)."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    happens_twice = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
    if happens_twice and both_folds:
        return [first.astimezone(UTC), second.astimezone(UTC)]
    # Happening twice, fold=0 is the first occurrence. Skipped, fold=0 reads the wall
    # time with the offset from before the jump: the instant the clocks jump to.
    return [first.astimezone(UTC)]
