"""Scheduled workflows the scheduler tests run (loaded with -A tests/sched_flows.py).

Every scheduler process started on this file fires all of them; each test pauses the
ones it does not look at.
"""
from __future__ import annotations

import datetime as dt

from qflow import Fail, context, task, workflow


@task
def stamp(tag: str, fail_on: str = "") -> dict:
    """What a scheduled run's task sees: its logical time and parameters."""
    ctx = context()
    when = ctx.logical_time.replace(tzinfo=dt.timezone.utc).isoformat()
    if fail_on and when.startswith(fail_on):
        raise Fail(f"asked to fail on {fail_on}")
    return {"logical_time": when, "tag": tag}


# Catch-up on: a scheduler held up past a fire time (a loaded machine) still owes that
# time, so the HA test may demand that none is missing.
@workflow(schedule=dt.timedelta(seconds=2), catchup=True, max_active_runs=50)
def every_2s(tag: str = "ha"):
    stamp(tag)


@workflow(schedule=1, catchup=True, max_active_runs=100)
def catchup_1s(tag: str = "catchup"):
    stamp(tag)


@workflow(schedule=1, max_active_runs=100)
def latest_1s(tag: str = "latest"):
    stamp(tag)


@workflow(schedule="@daily", timezone="Europe/Paris", params={"tag": "nightly"})
def nightly(tag: str, fail_on: str = ""):
    stamp(tag, fail_on)


ALL = ("every_2s", "catchup_1s", "latest_1s", "nightly")
