"""Next-fire computation, pure: cron and intervals, time zones, DST, start and end dates.

Every "now" is passed in, so the clock is whatever the test says it is.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from itertools import pairwise

import pytest

from qflow import workflow
from qflow.authoring import OptionError
from qflow.core.schedule import due_times, from_options, parse_range, window_start
from qflow.errors import UserError

UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def at(*args, tz=UTC) -> dt.datetime:
    """An aware instant: ``at(2026, 3, 29, 2, 30, tz=PARIS)`` is wall time in ``tz``."""
    return dt.datetime(*args, tzinfo=tz)


def fires(options: dict, after: dt.datetime, n: int) -> list[dt.datetime]:
    schedule = from_options(options)
    it = schedule.after(after)
    return [next(it) for _ in range(n)]


def local(times: list[dt.datetime], tz=PARIS) -> list[str]:
    return [t.astimezone(tz).isoformat() for t in times]


# -- cron --------------------------------------------------------------------------------
def test_aliases_mean_their_five_field_forms():
    for alias, expr in [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"),
                        ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"),
                        ("@yearly", "0 0 1 1 *")]:
        start = at(2026, 5, 17, 13, 45)
        assert fires({"schedule": alias}, start, 3) == fires({"schedule": expr}, start, 3)


def test_daily_at_5pm_in_paris_follows_the_local_clock_across_the_seasons():
    got = fires({"schedule": "0 17 * * *", "timezone": "Europe/Paris"}, at(2026, 3, 27), 4)
    assert local(got) == ["2026-03-27T17:00:00+01:00", "2026-03-28T17:00:00+01:00",
                          "2026-03-29T17:00:00+02:00", "2026-03-30T17:00:00+02:00"]
    assert [t.hour for t in got] == [16, 16, 15, 15]            # in UTC


def test_steps_ranges_lists_and_names():
    got = fires({"schedule": "*/20 9-10 * jan mon-fri"}, at(2026, 1, 2, 10, 30), 4)
    assert [t.isoformat() for t in got] == [
        "2026-01-02T10:40:00+00:00", "2026-01-05T09:00:00+00:00",   # Fri, then Monday
        "2026-01-05T09:20:00+00:00", "2026-01-05T09:40:00+00:00"]
    assert fires({"schedule": "0 0 * * 7"}, at(2026, 1, 1), 1) == [at(2026, 1, 4)]  # Sunday


def test_day_of_month_and_day_of_week_both_given_match_either_like_cron():
    got = fires({"schedule": "0 0 13 * fri"}, at(2026, 2, 1), 4)
    assert [t.day for t in got] == [6, 13, 20, 27]        # Fridays, and Friday the 13th
    got = fires({"schedule": "0 0 13 3 fri"}, at(2026, 2, 1), 3)
    assert [t.day for t in got] == [6, 13, 20]            # March 13th is a Friday too


def test_a_leap_day_schedule_waits_for_the_next_leap_year():
    assert fires({"schedule": "0 12 29 2 *"}, at(2026, 1, 1), 2) == [
        at(2028, 2, 29, 12), at(2032, 2, 29, 12)]


# -- daylight saving time ----------------------------------------------------------------
def test_a_time_skipped_by_spring_forward_fires_once_when_the_clocks_jump():
    # Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    got = fires({"schedule": "30 2 * * *", "timezone": "Europe/Paris"}, at(2026, 3, 28), 3)
    assert local(got) == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
                          "2026-03-30T02:30:00+02:00"]


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence():
    # Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    got = fires({"schedule": "30 2 * * *", "timezone": "Europe/Paris"}, at(2026, 10, 24), 3)
    assert local(got) == ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00",
                          "2026-10-26T02:30:00+01:00"]


@pytest.mark.parametrize("tz, day, runs", [
    ("Europe/Paris", (2026, 3, 29), 23), ("Europe/Paris", (2026, 10, 25), 25),
    ("America/New_York", (2026, 3, 8), 23), ("America/New_York", (2026, 11, 1), 25),
])
def test_an_hourly_job_keeps_firing_every_real_hour_through_dst_changes(tz, day, runs):
    zone = zoneinfo.ZoneInfo(tz)
    start = at(*day, tz=zone) - dt.timedelta(microseconds=1)
    end = at(*day, tz=zone) + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    got = [t for t in fires({"schedule": "@hourly", "timezone": tz}, start, 30) if t <= end]
    assert len(got) == runs
    assert {b - a for a, b in pairwise(got)} == {dt.timedelta(hours=1)}


def test_new_york_spring_forward_and_fall_back_for_fixed_times():
    # 2026-03-08: 02:00 EST -> 03:00 EDT.  2026-11-01: 02:00 EDT -> 01:00 EST.
    spring = fires({"schedule": "15 2 * * *", "timezone": "America/New_York"},
                   at(2026, 3, 7, 12, tz=NEW_YORK), 2)
    assert local(spring, NEW_YORK) == ["2026-03-08T03:00:00-04:00",
                                       "2026-03-09T02:15:00-04:00"]
    fall = fires({"schedule": "30 1 * * *", "timezone": "America/New_York"},
                 at(2026, 10, 31, 12, tz=NEW_YORK), 2)
    assert local(fall, NEW_YORK) == ["2026-11-01T01:30:00-04:00",
                                     "2026-11-02T01:30:00-05:00"]


def test_the_previous_fire_time_walks_back_through_dst_exactly_as_forward():
    schedule = from_options({"schedule": "*/20 * * * *", "timezone": "America/New_York"})
    forward = fires({"schedule": "*/20 * * * *", "timezone": "America/New_York"},
                    at(2026, 11, 1, 0, 30, tz=NEW_YORK), 12)
    backward = [schedule.last_at_or_before(t - dt.timedelta(seconds=1)) for t in forward[1:]]
    assert backward == forward[:-1]
    assert schedule.last_at_or_before(forward[5]) == forward[5]        # "at or before"


# -- intervals, start and end ------------------------------------------------------------
def test_an_interval_counts_from_the_start_date_in_its_timezone():
    options = {"schedule": dt.timedelta(hours=6), "timezone": "Europe/Paris",
               "start_date": "2026-01-01"}
    got = fires(options, at(2025, 6, 1), 3)
    assert local(got) == ["2026-01-01T00:00:00+01:00", "2026-01-01T06:00:00+01:00",
                          "2026-01-01T12:00:00+01:00"]


def test_an_interval_in_seconds_is_aligned_so_every_scheduler_agrees():
    schedule = from_options({"schedule": 2})
    now = at(2026, 5, 1, 10, 0, 7, 250000)
    assert schedule.next_after(now) == at(2026, 5, 1, 10, 0, 8)
    assert schedule.last_at_or_before(now) == at(2026, 5, 1, 10, 0, 6)
    assert schedule.describe() == "every 2s"


def test_an_interval_is_a_fixed_duration_across_dst():
    options = {"schedule": dt.timedelta(days=1), "timezone": "Europe/Paris",
               "start_date": "2026-03-28T12:00"}
    got = fires(options, at(2026, 3, 1), 3)
    assert {b - a for a, b in pairwise(got)} == {dt.timedelta(days=1)}
    assert local(got)[-1] == "2026-03-30T13:00:00+02:00"


def test_start_and_end_dates_bound_the_fire_times_inclusively():
    options = {"schedule": "@daily", "timezone": "America/New_York",
               "start_date": dt.date(2026, 1, 1), "end_date": "2026-01-03"}
    schedule = from_options(options)
    got = list(schedule.after(at(2025, 1, 1)))
    assert local(got, NEW_YORK) == ["2026-01-01T00:00:00-05:00", "2026-01-02T00:00:00-05:00",
                                    "2026-01-03T00:00:00-05:00"]
    assert schedule.next_after(got[-1]) is None
    assert schedule.last_at_or_before(at(2025, 12, 31)) is None
    assert schedule.last_at_or_before(at(2027, 1, 1)) == got[-1]


def test_a_backfill_range_ending_on_a_date_includes_that_whole_day():
    schedule = from_options({"schedule": "0 17 * * *", "timezone": "Europe/Paris"})
    lo, hi = parse_range("2026-03-28", "2026-03-30", PARIS)
    assert local(schedule.between(lo, hi, 10)) == [
        "2026-03-28T17:00:00+01:00", "2026-03-29T17:00:00+02:00", "2026-03-30T17:00:00+02:00"]
    lo, hi = parse_range("2026-03-28T17:00", "2026-03-30T12:00+02:00", PARIS)
    assert len(schedule.between(lo, hi, 10)) == 2
    with pytest.raises(UserError, match="more than 1 logical times"):
        schedule.between(lo, hi, 1)
    with pytest.raises(UserError, match="--end is before --start"):
        parse_range("2026-03-30", "2026-03-28T12:00", PARIS)


# -- what a scheduler creates at "now" -----------------------------------------------------
EVERY_MINUTE = from_options({"schedule": "* * * * *"})
T0 = at(2026, 6, 1, 12, 0)


def minutes(*ns: int) -> list[dt.datetime]:
    return [T0 + dt.timedelta(minutes=n) for n in ns]


def test_catch_up_after_an_outage_creates_every_missed_time_oldest_first():
    after = window_start(EVERY_MINUTE, True, last_run=T0, registered=T0, unpaused=None)
    now = T0 + dt.timedelta(minutes=5, seconds=30)
    assert due_times(EVERY_MINUTE, now, after, True, limit=16) == minutes(1, 2, 3, 4, 5)
    assert due_times(EVERY_MINUTE, now, after, True, limit=2) == minutes(1, 2)


def test_without_catch_up_only_the_newest_missed_time_runs():
    after = window_start(EVERY_MINUTE, False, last_run=T0, registered=T0, unpaused=None)
    now = T0 + dt.timedelta(minutes=5, seconds=30)
    assert due_times(EVERY_MINUTE, now, after, False, limit=16) == minutes(5)
    assert due_times(EVERY_MINUTE, now, after, False, limit=0) == []


def test_a_new_workflow_does_not_fire_for_times_before_a_scheduler_saw_it():
    registered = T0 + dt.timedelta(seconds=30)
    after = window_start(EVERY_MINUTE, False, last_run=None, registered=registered,
                         unpaused=None)
    assert due_times(EVERY_MINUTE, registered, after, False, 16) == []
    assert due_times(EVERY_MINUTE, T0 + dt.timedelta(minutes=1), after, False, 16) == \
        minutes(1)


def test_catch_up_with_a_start_date_begins_at_the_start_date():
    schedule = from_options({"schedule": "@daily", "start_date": "2026-01-01",
                             "catchup": True})
    after = window_start(schedule, True, last_run=None, registered=at(2026, 1, 4, 9),
                         unpaused=None)
    assert due_times(schedule, at(2026, 1, 4, 9), after, True, 16) == [
        at(2026, 1, 1), at(2026, 1, 2), at(2026, 1, 3), at(2026, 1, 4)]


def test_unpausing_without_catch_up_skips_the_paused_period():
    unpaused = T0 + dt.timedelta(minutes=10, seconds=5)
    after = window_start(EVERY_MINUTE, False, last_run=T0, registered=T0, unpaused=unpaused)
    assert due_times(EVERY_MINUTE, unpaused, after, False, 16) == []
    assert window_start(EVERY_MINUTE, True, T0, T0, unpaused) == T0     # catch-up: all


# -- validation at decoration time ---------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"schedule": "0 17 * *"}, "expected 5 fields"),
    ({"schedule": "@daily", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
    ({"schedule": "@daily", "start_date": "yesterday"}, "start_date must be an ISO date"),
    ({"schedule": "@daily", "start_date": "2026-02-01", "end_date": "2026-01-01"},
     "end_date is before start_date"),
    ({"schedule": 0.5}, "at least 1 second"),
    ({"schedule": [1, 2]}, "schedule must be a cron string"),
    ({"schedule": "@daily", "catchup": "yes"}, "catchup must be True or False"),
    ({"schedule": "@daily", "max_active_runs": 0}, "max_active_runs must be an integer >= 1"),
    ({"max_active_tasks": "2"}, "max_active_tasks must be an integer >= 1"),
    ({"schedule": "@daily", "params": {"nope": 1}}, "unknown parameter 'nope'"),
    ({"schedule": "@daily", "params": {"day": "soon"}}, "expected an int"),
    ({"schedule": "@hourly", "params": {}}, "needs parameter 'day'"),
])
def test_bad_schedule_options_fail_at_decoration_with_one_line(registry, options, message):
    with pytest.raises(OptionError, match=message) as info:
        @workflow(name="report", **options)
        def report(day: int):
            pass
    assert str(info.value).startswith("@workflow on 'report': ")
    assert "\n" not in str(info.value)


def test_scheduled_params_fill_required_parameters(registry):
    @workflow(schedule="@daily", params={"day": "7"})
    def report(day: int):
        pass
    assert report.resolve_params(report.options["params"]) == {"day": 7}


def test_a_schedule_is_optional_and_its_options_are_checked_anyway(registry):
    @workflow(catchup=False)
    def manual():
        pass
    assert from_options(manual.options) is None
    with pytest.raises(UserError, match="unknown timezone"):
        @workflow(timezone="Nowhere/Land")
        def manual2():
            pass

