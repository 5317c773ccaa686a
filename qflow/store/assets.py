"""Queries behind assets: record updates, find the updates an asset-scheduled workflow has
not consumed yet, consume them for a new run, and say what triggered a run.

An update is a row of ``qflow_asset_events``. A workflow consumes an update by one row of
``qflow_asset_consumed``, whose primary key (workflow, update) lets each update start at
most one run of each workflow, whichever scheduler tries.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from sqlalchemy import Connection, exists, func, insert, select

from qflow.store.db import query
from qflow.store.models import asset_consumed, asset_events
from qflow.store.read import iso

# How far before the newest update a workflow consumed the next look starts: an update
# committed a little after a later one (PostgreSQL hands out ids before commit) is still
# found, and the look never reads the whole history.
SKEW = dt.timedelta(minutes=10)


def record_updates(conn: Connection, names: Iterable[str], run_id: str | None,
                   node: str | None, now: dt.datetime) -> list[int]:
    """One update of each asset in ``names``, by ``node`` of ``run_id`` (None: from
    outside); returns their ids."""
    rows = [dict(asset=name, run_id=run_id, node=node, created_at=now) for name in names]
    if not rows:
        return []
    return list(conn.execute(insert(asset_events).returning(asset_events.c.id),
                             rows).scalars())


@query()
def touch(conn: Connection, name: str, now: dt.datetime) -> dict[str, Any]:
    """An update of ``name`` from outside (no run); returns it as the API shows it."""
    event_id = record_updates(conn, [name], None, None, now)[0]
    return {"asset": name, "update_id": event_id, "at": iso(now)}


def unconsumed(conn: Connection, workflow: str, names: Iterable[str],
               since: dt.datetime) -> dict[str, list[int]]:
    """The ids of the updates of each asset in ``names`` that ``workflow`` has not
    consumed, made at or after ``since`` (when a scheduler first saw the workflow)."""
    newest = conn.execute(
        select(asset_events.c.created_at).where(asset_events.c.id == select(
            func.max(asset_consumed.c.event_id)).where(
                asset_consumed.c.workflow == workflow).scalar_subquery())).scalar()
    floor = since if newest is None else max(since, newest - SKEW)
    taken = exists().where(asset_consumed.c.workflow == workflow,
                           asset_consumed.c.event_id == asset_events.c.id)
    rows = conn.execute(select(asset_events.c.id, asset_events.c.asset).where(
        asset_events.c.asset.in_(list(names)), asset_events.c.created_at >= floor, ~taken
    ).order_by(asset_events.c.id))
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.asset, []).append(row.id)
    return out


def all_updated(found: dict[str, list[int]], names: Iterable[str]) -> bool:
    """Whether every asset in ``names`` has an update in ``found``."""
    return all(found.get(name) for name in names)


def consume(conn: Connection, workflow: str, run_id: str, found: dict[str, list[int]]
            ) -> None:
    """Record that run ``run_id`` of ``workflow`` consumed these updates; an update
    another run consumed already raises IntegrityError (the transaction is lost)."""
    conn.execute(insert(asset_consumed), [
        dict(workflow=workflow, event_id=event_id, run_id=run_id)
        for ids in found.values() for event_id in ids])


def is_known(conn: Connection, name: str) -> bool:
    """Whether ``name`` was ever updated."""
    return conn.execute(select(asset_events.c.id).where(asset_events.c.asset == name)
                        .limit(1)).first() is not None


def last_updates(conn: Connection) -> dict[str, dict[str, Any]]:
    """Each updated asset's newest update and how many it has had."""
    latest = (select(asset_events.c.asset, func.max(asset_events.c.id).label("id"),
                     func.count().label("updates"))
              .group_by(asset_events.c.asset).subquery())
    rows = conn.execute(
        select(latest.c.asset, latest.c.updates, asset_events.c.run_id, asset_events.c.node,
               asset_events.c.created_at)
        .join(asset_events, asset_events.c.id == latest.c.id))
    return {r.asset: {"at": iso(r.created_at), "run_id": r.run_id, "node": r.node,
                      "updates": r.updates} for r in rows}
