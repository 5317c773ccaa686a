"""The records the state-changing queries exchange, and the one function that writes task
states: :func:`transition` checks the transitions table and makes each write conditional
on the current state, so the row count says who won (DESIGN.md invariants 3 and 4).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import (Connection, Update, bindparam, func, literal_column, select,
                        update)

from .. import states as S
from ..dag import refs_in
from .models import tasks


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Dispatch:
    """A task instance to publish: the message carries ids only."""

    run_id: str
    node: str
    attempt: int
    queue: str | None
    workflow: str
    countdown: float = 0.0
    timeout: float | None = None
    priority: int | None = None          # 0-9, 9 first


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to execute one attempt."""

    task_id: int
    task: str
    call: dict
    options: dict
    workflow: str
    params: dict
    logical_time: dt.datetime | None
    inputs: dict[str, Any]
    # No children and no pool slots: recording its outcome touches its own rows only.
    alone: bool = False
    # A branch task's children (None for other tasks).
    children: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: succeeded, failed, or retrying after ``retry_in`` seconds."""

    state: str
    result: str | None = None        # JSON text
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    retry_in: float | None = None
    chosen: tuple[str, ...] | None = None     # a branch task's choice of children
    log: str | None = None           # what the attempt printed and logged (capped)


@dataclass(frozen=True)
class Finished:
    """What a recorded outcome set in motion, to act on after commit."""

    workflow: str
    released: list[Dispatch] = field(default_factory=list)
    totals: tuple[int, int] | None = None     # (failed, canceled) if the run's last task ended


def transition(conn: Connection, run_id: str, new: str, expect: Iterable[str] | None = None,
               node: str | None = None, attempt: int | None = None,
               returning: tuple = (tasks.c.id,), **values: Any) -> list:
    """Move tasks of a run to ``new`` if in an allowed (or the ``expect``ed) state.

    ``node`` narrows it to one task; ``attempt`` to that attempt number (fencing). Returns
    the ``returning`` columns of the rows this call changed.
    """
    stmt, params = transition_stmt(run_id, new, expect, node, attempt, returning, **values)
    return conn.execute(stmt, params).all()


def transition_stmt(run_id: str, new: str, expect: Iterable[str] | None = None,
                    node: str | None = None, attempt: int | None = None,
                    returning: tuple = (tasks.c.id,), **values: Any) -> tuple[Update, dict]:
    """The checked, conditional UPDATE :func:`transition` runs, and its parameters (for
    callers that embed it in a larger statement).

    The statement depends only on the shape of the call, so it is built (and checked
    against the transitions table) once per shape; SQLAlchemy's compiled cache and the
    server's prepared statements then serve every later call.
    """
    allowed = tuple(expect) if expect is not None else S.sources_of(new)
    stmt = _transition_shape(new, allowed, node is not None, attempt is not None,
                             tuple(returning), tuple(sorted(values)))
    params = {"t_run_id": run_id, **{f"v_{k}": v for k, v in values.items()}}
    if node is not None:
        params["t_node"] = node
    if attempt is not None:
        params["t_attempt"] = attempt
    return stmt, params


@functools.lru_cache(maxsize=256)
def _transition_shape(new: str, allowed: tuple[str, ...], by_node: bool, by_attempt: bool,
                      returning: tuple, keys: tuple[str, ...]) -> Update:
    for old in allowed:
        S.check_transition(old, new)
    cond = [tasks.c.run_id == bindparam("t_run_id"), _one_of(allowed)]
    if by_node:
        cond.append(tasks.c.node == bindparam("t_node"))
    if by_attempt:
        cond.append(tasks.c.attempts == bindparam("t_attempt"))
    values = {k: bindparam(f"v_{k}", type_=tasks.c[k].type) for k in keys}
    return update(tasks).where(*cond).values(state=new, **values).returning(*returning)


def _one_of(allowed: tuple[str, ...]):
    """``state IN ('a', 'b')`` with the states written into the SQL: they are fixed per
    shape, and an IN list of bound values is rebuilt by SQLAlchemy at every execution.
    Only for states :func:`_transition_shape` has checked against the transitions table
    (known names, so safe to inline)."""
    return tasks.c.state.in_([literal_column(f"'{state}'") for state in allowed])


def set_task_state(conn: Connection, run_id: str, node: str, new: str,
                   expect: Iterable[str] | None = None, **kwargs: Any) -> Any:
    """:func:`transition` for one task: its row, or None if this call did not change it."""
    rows = transition(conn, run_id, new, expect, node=node, **kwargs)
    return rows[0] if rows else None


def message_options(options: str | dict | None) -> dict[str, Any]:
    """The task options a message carries: its timeout and priority."""
    opts = json.loads(options) if isinstance(options, str) else (options or {})
    return {"timeout": opts.get("timeout"), "priority": opts.get("priority")}


def _inputs(conn: Connection, run_id: str, call: dict) -> dict[str, Any]:
    """The stored results of the data parents; None for a parent that did not succeed."""
    parents = refs_in(call)
    if not parents:
        return {}
    rows = conn.execute(_PARENTS, {"run_id": run_id, "nodes": sorted(parents)})
    return {r.node: json.loads(r.result) if r.state == S.SUCCEEDED and r.result else None
            for r in rows}


_PARENTS = select(tasks.c.node, tasks.c.state, tasks.c.result).where(
    tasks.c.run_id == bindparam("run_id"), tasks.c.node.in_(bindparam("nodes", expanding=True)))


def count_tasks(conn: Connection, run_id: str, *states: str) -> int:
    """How many of the run's tasks are in one of ``states``."""
    return conn.execute(select(func.count()).select_from(tasks).where(
        tasks.c.run_id == run_id, tasks.c.state.in_(states))).scalar_one()
