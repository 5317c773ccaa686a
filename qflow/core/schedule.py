"""When a workflow's schedule fires: cron or interval rules in a time zone (pure).

Every time here is an aware datetime; the functions return them in UTC. A run's logical
time is the instant its schedule fired for (``0 17 * * *`` in Europe/Paris: 17:00 local
each day, 16:00 or 15:00 UTC depending on the season). How cron handles clock changes is
told in :mod:`qflow.core.cron`.

An interval is a fixed duration counted from ``start_date`` (or from 1970-01-01 00:00 in
the time zone), so a 1-day interval stays on the same UTC time across DST; use cron for
"17:00 local every day".
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol

from qflow.core.cron import UTC, CronRule, parse_cron
from qflow.errors import UserError

_ONE_DAY = dt.timedelta(days=1)
_TICK = dt.timedelta(microseconds=1)
DEFAULT_MAX_ACTIVE_RUNS = 16


class Rule(Protocol):
    """Fire times of a schedule, without its start and end bounds."""

    def after(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        """Fire times strictly after ``t``, oldest first."""

    def before(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        """Fire times strictly before ``t``, newest first."""

    def describe(self) -> str:
        """The rule as a user would write it."""


@dataclass(frozen=True)
class IntervalRule:
    """Every ``every``, counted from ``anchor``."""

    every: dt.timedelta
    anchor: dt.datetime

    def after(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        k = 0 if t < self.anchor else (t - self.anchor) // self.every + 1
        while True:
            yield self.anchor + k * self.every
            k += 1

    def before(self, t: dt.datetime, tz: zoneinfo.ZoneInfo) -> Iterator[dt.datetime]:
        if t <= self.anchor:
            return
        k = (t - self.anchor) // self.every
        if self.anchor + k * self.every >= t:
            k -= 1
        for n in range(k, -1, -1):
            yield self.anchor + n * self.every

    def describe(self) -> str:
        return "every " + human_duration(self.every)


def human_duration(delta: dt.timedelta) -> str:
    """``1d2h``, ``90s`` -> ``1m30s``, ``2s``."""
    if delta.total_seconds() != int(delta.total_seconds()):
        return f"{delta.total_seconds():g}s"
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or f"{delta.total_seconds()}s"


@dataclass(frozen=True)
class Schedule:
    """A rule in a time zone, between an optional start and end (both inclusive)."""

    rule: Rule
    tz: zoneinfo.ZoneInfo
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def describe(self) -> str:
        return self.rule.describe()

    def after(self, t: dt.datetime) -> Iterator[dt.datetime]:
        """Fire times strictly after ``t`` within the start and end dates, oldest first."""
        if self.start is not None and t < self.start:
            t = self.start - _TICK
        for when in self.rule.after(t, self.tz):
            if self.end is not None and when > self.end:
                return
            yield when

    def next_after(self, t: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after ``t``, or None after the end date."""
        return next(self.after(t), None)

    def last_at_or_before(self, t: dt.datetime) -> dt.datetime | None:
        """The newest fire time at or before ``t``, or None before the start date."""
        if self.end is not None and t > self.end:
            t = self.end
        when = next(self.rule.before(t + _TICK, self.tz), None)
        if when is None or (self.start is not None and when < self.start):
            return None
        return when

    def between(self, lo: dt.datetime, hi: dt.datetime, limit: int) -> list[dt.datetime]:
        """Fire times in ``[lo, hi]`` ignoring start and end dates (for backfills).

        Raises UserError when there are more than ``limit``.
        """
        out: list[dt.datetime] = []
        for when in self.rule.after(lo - _TICK, self.tz):
            if when > hi:
                break
            if len(out) == limit:
                raise UserError(f"more than {limit} logical times between {lo.isoformat()} "
                                f"and {hi.isoformat()}; use a shorter range")
            out.append(when)
        return out

    def local(self, t: dt.datetime) -> dt.datetime:
        """``t`` on the schedule's wall clock."""
        return t.astimezone(self.tz)


# -- what a scheduler creates ---------------------------------------------------------
def window_start(schedule: Schedule, catchup: bool, last_run: dt.datetime | None,
                 registered: dt.datetime, unpaused: dt.datetime | None) -> dt.datetime:
    """Fire times after the returned instant are due (up to now).

    ``last_run`` is the newest logical time that has a run, ``registered`` when a
    scheduler first saw the workflow, ``unpaused`` when it was last unpaused. With
    catch-up everything since the last run is due (since ``start_date`` for the first
    one, pauses included); without it nothing from before the last run, registration or
    unpause is.
    """
    if catchup:
        if last_run is not None:
            return last_run
        return schedule.start - _TICK if schedule.start is not None else registered
    return max(t for t in (last_run, registered, unpaused) if t is not None)


def due_times(schedule: Schedule, now: dt.datetime, after: dt.datetime, catchup: bool,
              limit: int) -> list[dt.datetime]:
    """Logical times to create at ``now``: fire times in ``(after, now]``, oldest first,
    at most ``limit``; without catch-up only the newest of them."""
    if not catchup:
        newest = schedule.last_at_or_before(now)
        return [newest] if newest is not None and newest > after and limit > 0 else []
    out: list[dt.datetime] = []
    for when in schedule.after(after):
        if when > now or len(out) >= limit:
            break
        out.append(when)
    return out


# -- reading @workflow options ----------------------------------------------------------
def time_zone(name: Any) -> zoneinfo.ZoneInfo:
    """A ``zoneinfo`` zone from its IANA name (``Europe/Paris``); UserError if unknown."""
    if isinstance(name, zoneinfo.ZoneInfo):
        return name
    if not isinstance(name, str) or not name:
        raise UserError(f"timezone must be an IANA name such as 'Europe/Paris', got {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UserError(f"unknown timezone {name!r} (an IANA name such as "
                        "'Europe/Paris' or 'UTC')") from None


def parse_time(value: Any, tz: zoneinfo.ZoneInfo, what: str) -> dt.datetime:
    """A date, datetime or ISO string as an aware UTC instant; naive ones are in ``tz``."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise UserError(f"{what} must be an ISO date or datetime (2026-01-31 or "
                            f"2026-01-31T17:00), got {value!r}") from None
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise UserError(f"{what} must be a date, datetime or ISO string, got {value!r}")
    if value.tzinfo is None:
        return _wall_instant(value, tz)
    return value.astimezone(UTC)


def _wall_instant(wall: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The UTC instant of a naive wall-clock time in ``tz``: its first occurrence if the
    clocks went back, read with the offset from before the jump if they skipped it."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def parse_range(start: str, end: str, tz: zoneinfo.ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """A backfill's ``--start``/``--end`` (both included; an end date means that whole day)."""
    lo, hi = parse_time(start, tz, "--start"), parse_time(end, tz, "--end")
    try:
        day = dt.date.fromisoformat(end.strip())
    except ValueError:
        day = None
    # Fire times are searched from a day before the start to a day after the end: the
    # first and last years a datetime holds are out of reach.
    if lo.year < 2 or hi.year > 9998:
        raise UserError("--start and --end must be between 0002-01-01 and 9998-12-31")
    if day is not None:
        hi = parse_time(day + _ONE_DAY, tz, "--end") - _TICK
    if hi < lo:
        raise UserError("--end is before --start")
    return lo, hi


def parse_rule(value: Any, tz: zoneinfo.ZoneInfo,
               start: dt.datetime | None) -> CronRule | IntervalRule:
    """A cron string or ``@alias``, or an interval (timedelta or seconds)."""
    if isinstance(value, str):
        return parse_cron(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = dt.timedelta(seconds=value)
    if not isinstance(value, dt.timedelta):
        raise UserError(f"schedule must be a cron string, an @alias, a timedelta or a "
                        f"number of seconds, got {value!r}")
    if value < dt.timedelta(seconds=1):
        raise UserError(f"an interval schedule must be at least 1 second, got {value}")
    anchor = start if start is not None else _wall_instant(dt.datetime(1970, 1, 1), tz)
    return IntervalRule(value, anchor)


def from_options(options: Mapping[str, Any]) -> Schedule | None:
    """The schedule described by ``@workflow`` options, or None without ``schedule``."""
    if options.get("schedule") is None:
        return None
    tz = time_zone(options.get("timezone") or "UTC")
    start, end = (parse_time(options[k], tz, k) if options.get(k) is not None else None
                  for k in ("start_date", "end_date"))
    if start is not None and end is not None and end < start:
        raise UserError("end_date is before start_date")
    return Schedule(parse_rule(options["schedule"], tz, start), tz, start, end)


def max_active_runs(options: Mapping[str, Any]) -> int:
    """How many queued or running runs the scheduler lets a workflow have."""
    value = options.get("max_active_runs")
    return DEFAULT_MAX_ACTIVE_RUNS if value is None else value


def check_options(options: Mapping[str, Any]) -> Schedule | None:
    """Validate the scheduling options of ``@workflow``; return the schedule, if any."""
    if not isinstance(options.get("catchup", False), bool):
        raise UserError(f"catchup must be True or False, got {options['catchup']!r}")
    for name in ("max_active_runs", "max_active_tasks"):
        limit = options.get(name)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise UserError(f"{name} must be an integer >= 1, got {limit!r}")
    if not isinstance(options.get("params") or {}, dict):
        raise UserError(f"params must be a dict of parameter values, got "
                        f"{options['params']!r}")
    if options.get("schedule") is None:         # still check what would be used later
        from_options({**options, "schedule": 60})
        return None
    return from_options(options)
