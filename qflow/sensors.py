"""Sensors: tasks that wait for something outside qflow, and ready-made ones.

``@task.sensor(poke_interval=30, timeout=3600)`` declares one: it is poked (called) until
it returns a truthy value, which becomes its result. Between pokes its state is
``sensing``: it holds no worker process (the next poke is a message sent with a
countdown) and no pool slot (the next poke takes it again). ``timeout`` seconds after its
first poke it fails with :class:`SensorTimeout`, and retries as any task.

The ready-made sensors below are such tasks (poked every 30 s for at most an hour); each
is also a plain function, so a sensor of your own with other intervals can call it::

    @task.sensor(poke_interval=5, timeout=600)
    def landed(path: str) -> list[str]:
        return file_exists(path)
"""
from __future__ import annotations

import datetime as dt
import glob
import urllib.error
import urllib.request
from typing import Any

from qflow.authoring import task
from qflow.context import context
from qflow.core import outcomes
from qflow.core.records import Outcome
from qflow.core.states import SENSING, SUCCEEDED
from qflow.errors import UserError

MODES = ("reschedule",)


class SensorTimeout(TimeoutError):
    """A sensor was not satisfied within its ``timeout``."""

    def __init__(self, timeout: float, waited: float):
        super().__init__(f"sensor not satisfied after {waited:.0f}s (its timeout is "
                         f"{timeout:g}s)")


def sensor_options(poke_interval: Any, timeout: Any, mode: Any) -> dict[str, Any]:
    """The ``sensor`` option a sensor's task rows carry; UserError if one is bad."""
    for name, value in (("poke_interval", poke_interval), ("timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UserError(f"@task.sensor: {name} must be a number of seconds > 0, "
                            f"got {value!r}")
    if mode not in MODES:
        raise UserError(f"@task.sensor: mode must be one of {', '.join(MODES)}, got "
                        f"{mode!r}")
    return {"poke_interval": poke_interval, "timeout": timeout, "mode": mode}


def poke_outcome(value: Any, options: dict, since: dt.datetime | None, now: dt.datetime,
                 tries: int, limit: int) -> Outcome:
    """What one poke that returned ``value`` comes to: success with a truthy value;
    else ``sensing`` until the next poke, or, past the timeout counted from ``since``
    (the first poke of this attempt; None: this is it), a SensorTimeout failure."""
    if value:
        return outcomes.success(value, limit)
    spec = options["sensor"]
    waited = (now - since).total_seconds() if since is not None else 0.0
    left = spec["timeout"] - waited
    if left <= 0:
        return outcomes.failure(SensorTimeout(spec["timeout"], waited), options, tries, None)
    return Outcome(SENSING, retry_in=min(float(spec["poke_interval"]), left))


# -- ready-made sensors ------------------------------------------------------------------
@task.sensor(poke_interval=30, timeout=3600)
def file_exists(pattern: str) -> list[str]:
    """The paths matching ``pattern`` (a path or a glob such as ``/data/*.csv``), once
    there is one."""
    return sorted(glob.glob(pattern))


@task.sensor(poke_interval=30, timeout=3600)
def sql_row(url: str, query: str, params: dict | None = None) -> dict | None:
    """The first row ``query`` returns on the database at ``url`` (an SQLAlchemy URL),
    as a dict of JSON-ready values, once it returns one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(text(query), params or {}).mappings().first()
    finally:
        engine.dispose()
    return None if row is None else {k: _plain(v) for k, v in row.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return str(value)


@task.sensor(poke_interval=30, timeout=3600)
def http_ok(url: str, timeout: float = 10.0) -> int | bool:
    """The status code once ``url`` answers a GET with 2xx (False until then, also
    while it cannot be reached)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:   # noqa: S310
            return answer.status if 200 <= answer.status < 300 else False
    except (urllib.error.URLError, OSError, ValueError):
        return False


@task.sensor(poke_interval=30, timeout=3600)
def run_succeeded(workflow: str, database_url: str | None = None) -> str | None:
    """The id of the run of ``workflow`` for this run's logical time, once it succeeded.
    ``database_url`` defaults to the worker's results DB (QFLOW_DATABASE_URL or the
    config file)."""
    from sqlalchemy import select

    from qflow.store.models import runs

    logical = context().logical_time
    if logical is None:
        raise UserError("run_succeeded needs a run with a logical time (a scheduled "
                        "or backfilled run)")
    store = _store(database_url)
    with store.read() as conn:
        return conn.execute(select(runs.c.id).where(
            runs.c.workflow == workflow, runs.c.state == SUCCEEDED,
            runs.c.superseded_by.is_(None),
            runs.c.logical_time == logical.astimezone(dt.timezone.utc).replace(tzinfo=None)
        )).scalar()


_STORES: dict[str, Any] = {}


def _store(url: str | None):
    from qflow.config import load_config
    from qflow.store import Store

    url = url or load_config().database_url
    if url not in _STORES:
        _STORES[url] = Store(url, pool_size=1)
    return _STORES[url]
