"""Cron evaluation through qflow's schedules: clock changes, cronsim's extensions, errors.

Expected times are wall-clock readings with their UTC offset, as a user would check them
on the schedule's clock. Several are the published expectations of cronsim's and
croniter's own test suites for the same expression, zone and start.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from itertools import islice, takewhile

import pytest

from qflow.core.cron import CronError, parse_cron
from qflow.core.schedule import from_options

UTC = dt.timezone.utc


def fires(expr: str, tz: str, *start: int, n: int = 3) -> list[str]:
    """The first ``n`` fire times after a wall-clock start in ``tz``, read on that clock."""
    zone = zoneinfo.ZoneInfo(tz)
    schedule = from_options({"schedule": expr, "timezone": tz})
    after = dt.datetime(*start, tzinfo=zone)
    return [t.astimezone(zone).isoformat() for t in islice(schedule.after(after), n)]


def fired_before(expr: str, tz: str, *start: int, n: int = 3) -> list[str]:
    """The ``n`` newest fire times before a wall-clock start in ``tz``, newest first."""
    zone = zoneinfo.ZoneInfo(tz)
    rule = parse_cron(expr)
    before = dt.datetime(*start, tzinfo=zone)
    return [t.astimezone(zone).isoformat() for t in islice(rule.before(before, zone), n)]


# -- the clock changes qflow's own cron got wrong ------------------------------------------
# Europe/Riga, 2021-03-28: 03:00 EET becomes 04:00 EEST.  2021-10-31: 04:00 EEST becomes
# 03:00 EET, so 03:00-03:59 happens twice.
def test_a_time_skipped_by_spring_forward_still_runs_next_to_its_neighbours():
    assert fires("30 1,2,3,4,5 * * *", "Europe/Riga", 2021, 3, 28, 1, 30, n=4) == [
        "2021-03-28T02:30:00+02:00", "2021-03-28T04:00:00+03:00",     # 03:30, at the jump
        "2021-03-28T04:30:00+03:00", "2021-03-28T05:30:00+03:00"]
    # 03:00 and 03:30 are both skipped: they run once, with 04:00, at the jump.
    assert fires("0,30 3,4 * * *", "Europe/Riga", 2021, 3, 28, 1, 30) == [
        "2021-03-28T04:00:00+03:00", "2021-03-28T04:30:00+03:00", "2021-03-29T03:00:00+03:00"]


def test_every_minute_of_a_repeated_hour_runs_in_both_passes():
    assert fires("* 1-6 * * *", "Europe/Riga", 2021, 10, 31, 3, 58) == [
        "2021-10-31T03:59:00+03:00", "2021-10-31T03:00:00+02:00", "2021-10-31T03:01:00+02:00"]
    night = fires("* 1-6 * * *", "Europe/Riga", 2021, 10, 31, 0, 59, n=500)
    assert len([t for t in night if t.startswith("2021-10-31")]) == 7 * 60   # 01:00-06:59


def test_a_stepped_hour_runs_in_both_passes_of_a_repeated_hour():
    assert fires("0 */3 * * *", "Europe/Riga", 2021, 10, 31, 1, 30) == [
        "2021-10-31T03:00:00+03:00", "2021-10-31T03:00:00+02:00", "2021-10-31T06:00:00+02:00"]


def test_a_skipped_fixed_time_runs_at_the_instant_the_clocks_jump_to():
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    assert fires("30 2 * * *", "America/New_York", 2026, 3, 7, 12) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]


@pytest.mark.parametrize("expr", ["2/ * * * *", "\u2075 * * * *", "0 \u00b2 * * *",
                                  "0 0 1 1 mon#\u0661"])
def test_a_step_without_a_number_or_a_non_ascii_digit_is_a_one_line_error(expr):
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert str(info.value).startswith(f"bad cron expression {expr!r}: ")
    assert "\n" not in str(info.value) and "is not valid" in str(info.value)


# -- cronsim's published expectations (Europe/Riga, 2021) --------------------------------
@pytest.mark.parametrize("expr, start, expected", [
    ("0 1,2,3,4,5 * * *", (2021, 3, 28, 1, 30),
     ["2021-03-28T02:00:00+02:00", "2021-03-28T04:00:00+03:00", "2021-03-28T05:00:00+03:00"]),
    ("30 1,2,3,4,5 * * *", (2021, 10, 31, 1, 30),
     ["2021-10-31T02:30:00+03:00", "2021-10-31T03:30:00+03:00", "2021-10-31T04:30:00+02:00"]),
    ("0 3 * * *", (2021, 3, 27, 1, 30),
     ["2021-03-27T03:00:00+02:00", "2021-03-28T04:00:00+03:00", "2021-03-29T03:00:00+03:00"]),
    ("0 4 * * *", (2021, 10, 30, 1, 30),
     ["2021-10-30T04:00:00+03:00", "2021-10-31T04:00:00+02:00", "2021-11-01T04:00:00+02:00"]),
    ("15 3 * * *", (2021, 10, 30, 0, 0),
     ["2021-10-30T03:15:00+03:00", "2021-10-31T03:15:00+03:00", "2021-11-01T03:15:00+02:00"]),
    ("0 1,3,5,7,9,11,13,15,17,19,21,23 * * *", (2021, 10, 31, 0, 30),
     ["2021-10-31T01:00:00+03:00", "2021-10-31T03:00:00+03:00", "2021-10-31T05:00:00+02:00"]),
    ("* * * * *", (2021, 3, 28, 2, 58),
     ["2021-03-28T02:59:00+02:00", "2021-03-28T04:00:00+03:00", "2021-03-28T04:01:00+03:00"]),
])
def test_cronsim_vectors_across_riga_clock_changes(expr, start, expected):
    assert fires(expr, "Europe/Riga", *start) == expected


@pytest.mark.parametrize("expr, expected", [
    ("1 1 L * *", ["2020-01-31", "2020-02-29", "2020-03-31"]),         # last day
    ("1 1 LW 5 *", ["2020-05-29", "2021-05-31", "2022-05-31"]),        # last weekday
    ("1 1 * * 5L", ["2020-01-31", "2020-02-28", "2020-03-27"]),        # last Friday
    ("1 1 * * 7L", ["2020-01-26", "2020-02-23", "2020-03-29"]),        # last Sunday
    ("1 1 * * 1#2", ["2020-01-13", "2020-02-10", "2020-03-09"]),       # second Monday
    ("1 1 1-7 * */7", ["2020-01-05", "2020-02-02", "2020-03-01"]),     # first Sunday
    ("1 1 */100,1-7 * MON", ["2020-01-06", "2020-02-03", "2020-03-02"]),  # first Monday
    ("1 1 * * */3", ["2020-01-01", "2020-01-04", "2020-01-05"]),       # Sun, Wed, Sat
])
def test_cronsim_vectors_for_last_weekday_and_nth_day(expr, expected):
    assert fires(expr, "UTC", 2020, 1, 1) == [f"{d}T01:01:00+00:00" for d in expected]


# -- croniter's published expectations ------------------------------------------------------
def test_croniter_vectors_a_skipped_minute_runs_at_the_jump_both_ways():
    # Paris, 2020-03-29: 02:00 CET becomes 03:00 CEST, so 02:01 does not exist.
    assert fires("1 2 * * *", "Europe/Paris", 2020, 3, 29, 1, 59, 55) == [
        "2020-03-29T03:00:00+02:00", "2020-03-30T02:01:00+02:00", "2020-03-31T02:01:00+02:00"]
    assert fired_before("1 2 * * *", "Europe/Paris", 2020, 3, 31, 2, 1) == [
        "2020-03-30T02:01:00+02:00", "2020-03-29T03:00:00+02:00", "2020-03-28T02:01:00+01:00"]


def test_croniter_vectors_midnight_skipped_or_repeated():
    # Hebron, 2022-03-27: midnight does not exist (00:00 becomes 01:00).
    assert fires("0 0 * * *", "Asia/Hebron", 2022, 3, 25) == [
        "2022-03-26T00:00:00+02:00", "2022-03-27T01:00:00+03:00", "2022-03-28T00:00:00+03:00"]
    # Sao Paulo, 2018-02-18: midnight becomes 23:00 of the 17th, which happens twice.
    assert fires("0 0 * * *", "America/Sao_Paulo", 2018, 2, 17, 23, 5, n=1) == [
        "2018-02-18T00:00:00-03:00"]
    assert fires("0 0 * * *", "America/Sao_Paulo", 2018, 2, 18, 0, 5, n=1) == [
        "2018-02-19T00:00:00-03:00"]


def test_croniter_vectors_hourly_and_daily_through_clock_changes():
    # Warsaw, 2017-10-29: 03:00 CEST becomes 02:00 CET; 2017-03-26: 02:00 becomes 03:00.
    assert fires("0 * * * *", "Europe/Warsaw", 2017, 10, 29, 1, 59, n=4) == [
        "2017-10-29T02:00:00+02:00", "2017-10-29T02:00:00+01:00",
        "2017-10-29T03:00:00+01:00", "2017-10-29T04:00:00+01:00"]
    assert fires("0 * * * *", "Europe/Warsaw", 2017, 3, 26, 1, n=1) == [
        "2017-03-26T03:00:00+02:00"]
    # London, 2025-03-30: 01:00 GMT becomes 02:00 BST.
    assert fires("7 * * * *", "Europe/London", 2025, 3, 30) == [
        "2025-03-30T00:07:00+00:00", "2025-03-30T02:07:00+01:00", "2025-03-30T03:07:00+01:00"]
    # Adelaide leaves summer time on 2020-04-05 (+10:30 becomes +09:30).
    assert fired_before("0 0 24 * *", "Australia/Adelaide", 2020, 4, 15, n=1) == [
        "2020-03-24T00:00:00+10:30"]
    assert fires("0 0 24 * *", "Australia/Adelaide", 2020, 4, 15, n=1) == [
        "2020-04-24T00:00:00+09:30"]


def test_croniter_vectors_new_york_fall_back_runs_a_fixed_time_once():
    # 2020-11-01: 02:00 EDT becomes 01:00 EST; 01:00 and 01:30 happen twice.
    assert fired_before("0 1 * * *", "America/New_York", 2020, 11, 3) == [
        "2020-11-02T01:00:00-05:00", "2020-11-01T01:00:00-04:00", "2020-10-31T01:00:00-04:00"]
    assert fired_before("30 2 * * *", "America/New_York", 2020, 11, 3) == [
        "2020-11-02T02:30:00-05:00", "2020-11-01T02:30:00-05:00", "2020-10-31T02:30:00-04:00"]


# -- forward and backward agree -----------------------------------------------------------
@pytest.mark.parametrize("expr", ["30 1,2,3,4,5 * * *", "* 1-6 * * *", "0 */3 * * *",
                                  "30 3 * * *", "0,30 3,4 * * *", "*/20 * * * *"])
@pytest.mark.parametrize("day", [(2021, 3, 28), (2021, 10, 31)])
def test_the_previous_fire_time_is_the_one_walked_past_going_forward(expr, day):
    """What the scheduler finds looking back (no catch-up) is what it saw going forward,
    from any instant of a clock-change night, the second pass of a repeated hour included."""
    riga = zoneinfo.ZoneInfo("Europe/Riga")
    schedule = from_options({"schedule": expr, "timezone": "Europe/Riga"})
    start = dt.datetime(*day, tzinfo=riga).astimezone(UTC) - dt.timedelta(hours=1)
    end = start + dt.timedelta(hours=8)
    forward = list(takewhile(lambda t: t <= end, schedule.after(start)))
    for minutes in range(0, 8 * 60, 7):
        now = start + dt.timedelta(minutes=minutes, seconds=30)
        if now >= forward[0]:
            assert schedule.last_at_or_before(now) == max(t for t in forward if t <= now)


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, message", [
    ("0 17 * *", "expected 5 fields"),
    ("0 0 * * * *", "expected 5 fields"),                       # no seconds field
    ("61 * * * *", "minute field '61' is not valid: 0-59"),
    ("0 17 * * xyz", "day-of-week field 'xyz' is not valid: 0-7 or sun-sat"),
    ("0 5-2 * * *", "hour field '5-2' is not valid"),
    ("*/0 * * * *", "minute field '\\*/0' is not valid"),
    ("0 0 1 13 *", "month field '13' is not valid: 1-12 or jan-dec"),
    ("0 0 * * mon#6", "day-of-week field 'mon#6' is not valid"),
    ("1" * 5000 + " * * * *", "minute field '1111"),          # too long for int()
    ("0 0 30 2 *", "never fires"),
    ("1 1 */100 * mon#4", "never fires"),                       # the 1st is not a 4th Monday
    ("@fortnightly", "unknown alias"),
])
def test_bad_cron_expressions_say_what_is_wrong_in_one_line(expr, message):
    with pytest.raises(CronError, match=message) as info:
        parse_cron(expr)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"bad cron expression {expr!r}: ")


def test_names_are_case_insensitive_and_aliases_keep_their_text():
    assert fires("0 9 * JAN Mon", "UTC", 2026, 1, 1, n=1) == ["2026-01-05T09:00:00+00:00"]
    rule = parse_cron(" @Daily ")
    assert rule.describe() == "@Daily" and rule.expr == "0 0 * * *"
