"""Cron expressions: five fields or an ``@alias``, and when they fire in a time zone.

Evaluation is the ``cronsim`` library's, which follows Debian cron. Fields are
``minute hour day-of-month month day-of-week`` with ``*``, lists (``1,15``), ranges
(``1-5``), steps (``*/15``, ``8-18/2``, ``5/10``), names (``jan``-``dec``,
``sun``-``sat``; day 7 is Sunday too), ``L`` and ``LW`` in day-of-month (last day, last
weekday of the month), ``5L`` (last Friday) and ``1#2`` (second Monday) in day-of-week.
When both day fields are restricted (neither starts with ``*``) a day matches either.

An expression is matched on the wall clock of its time zone. When clocks change, as in
Debian cron:

- a fixed-time expression (neither its minute nor its hour field starts with ``*``:
  ``30 2 * * *``, ``0 1-5 * * *``) runs a time skipped when clocks go forward once, at
  the instant they jump to (02:30 on New York's spring-forward night runs at 03:00
  EDT), and a time repeated when they go back once, at its first occurrence;
- any other expression (``*/15 * * * *``, ``* 1-6 * * *``, ``0 */3 * * *``) follows real
  time: a skipped wall time does not fire, a repeated one fires at both occurrences.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Iterator

from cronsim import CronSim, CronSimError

from qflow.errors import UserError

UTC = dt.timezone.utc
ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_VALUES = {"minute": "0-59", "hour": "0-23", "day-of-month": "1-31, L or LW",
           "month": "1-12 or jan-dec",
           "day-of-week": "0-7 or sun-sat, 5L (last Friday) or 1#2 (second Monday)"}
_PROBE = dt.datetime(2000, 1, 1)        # any start: a valid expression fires within 50 years


class CronError(UserError):
    """A cron expression that cannot be parsed or can never fire."""


@dataclass(frozen=True)
class CronRule:
    """A cron expression evaluated on the wall clock of the schedule's time zone."""

    text: str                            # as written
    expr: str                            # its five fields (an alias spelled out)

    @property
    def fixed_time(self) -> bool:
        """Whether clock changes get Debian cron's fixed-time handling (module doc)."""
        minute, hour = self.expr.split()[:2]
        return not minute.startswith("*") and not hour.startswith("*")

    def after(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        """Fire times strictly after ``t``, oldest first, in UTC."""
        t = t.astimezone(UTC)
        # A fixed-time walk starts from t's wall reading; in the second pass of a
        # repeated hour, first-pass times after that reading are already past.
        for when in CronSim(self.expr, t.astimezone(tz)):
            when = when.astimezone(UTC)
            if when > t:
                yield when

    def before(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        """Fire times strictly before ``t``, newest first, in UTC."""
        t = t.astimezone(UTC)
        start = t.astimezone(tz)
        if self.fixed_time:
            # On the wall clock, a ``t`` in the second pass of a repeated hour reads
            # earlier than first-pass fire times that came before it: start from the
            # reading with the first pass's offset instead.
            start = (t + start.replace(fold=0).utcoffset()).replace(tzinfo=tz)
        for when in CronSim(self.expr, start, reverse=True):
            when = when.astimezone(UTC)
            if when < t:
                yield when

    def describe(self) -> str:
        """The expression as written."""
        return self.text


def parse_cron(text: str) -> CronRule:
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
    if not _fires(expr):
        raise CronError(f"bad cron expression {text!r}: {_reason(parts)}")
    return CronRule(source, expr)


def _fires(expr: str) -> bool:
    """Whether cronsim accepts ``expr`` and finds a time it fires at."""
    try:
        return next(CronSim(expr, _PROBE), None) is not None
    except (CronSimError, ValueError):      # ValueError: a number too long for int()
        return False


def _reason(parts: list[str]) -> str:
    """Why five fields that cronsim rejects are wrong: the first bad field, if any."""
    for i, (name, values) in enumerate(_VALUES.items()):
        alone = ["0", "0", "*", "*", "*"]
        alone[i] = parts[i]
        if not _fires(" ".join(alone)):
            return (f"{name} field {parts[i]!r} is not valid: {values}, with *, "
                    "a-b, a,b and /step")
    return "never fires (no date matches its day and month fields)"
