"""The statements behind `qflow status` and `qflow runs`, defined once, in SQLAlchemy Core.

Full processes (workers, the web server, the client) run them through SQLAlchemy. `qflow
status` runs the same statements as plain SQL through the DBAPI driver alone
(:mod:`qflow.store.plain`): importing SQLAlchemy costs more CPU than all the rest of the
command. That SQL is rendered from these statements into :mod:`qflow.store.rendered`, a
generated module: ``python -m qflow.store.queries`` rewrites it, and a test fails when
the checked-in text differs from what these statements render to.
"""
from __future__ import annotations

import pprint
import sys
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Select,
    String,
    bindparam,
    column,
    func,
    select,
    table,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from qflow.core import states as S
from qflow.store import mapcount
from qflow.store.models import (
    LOOK_TASK,
    OPEN_TASK,
    asset_consumed,
    asset_events,
    attempts,
    edges,
    one_of,
    runs,
    tasks,
    workers,
)
from qflow.store.status import RUN_FILTERS, runs_name

RUN_ID = bindparam("run_id")

# What a run's row shows: `status` and `runs` (see qflow.store.status.run_dict).
RUN_COLUMNS = (runs.c.id, runs.c.workflow, runs.c.state, runs.c.params, runs.c.created_at,
               runs.c.started_at, runs.c.finished_at, runs.c.logical_time,
               runs.c.tasks_total, runs.c.tasks_left, runs.c.late)

RUN = select(*RUN_COLUMNS).where(runs.c.id == RUN_ID)

# What a task's row shows (see qflow.store.status.task_rows).
TASK_COLUMNS = (tasks.c.node, tasks.c.state, tasks.c.attempts, tasks.c.started_at,
                tasks.c.finished_at, tasks.c.error, tasks.c.worker, tasks.c.celery_id,
                tasks.c.queue, tasks.c.late)

TASKS = select(*TASK_COLUMNS).where(tasks.c.run_id == RUN_ID).order_by(tasks.c.id)

# The traceback of each task's latest attempt, for the tasks whose has one.
TRACEBACKS = (select(tasks.c.node, attempts.c.traceback)
              .join(attempts, (attempts.c.task_id == tasks.c.id)
                    & (attempts.c.number == tasks.c.attempts))
              .where(tasks.c.run_id == RUN_ID, attempts.c.traceback.is_not(None)))

TRIGGERED_BY = (select(asset_events.c.asset, asset_events.c.run_id, asset_events.c.node,
                       asset_events.c.created_at)
                .join(asset_consumed, asset_consumed.c.event_id == asset_events.c.id)
                .where(asset_consumed.c.run_id == RUN_ID).order_by(asset_events.c.id))

# A map's thousands of edges into its mapped node, which never runs itself, stay in the DB.
_IDLE = select(tasks.c.node).where(tasks.c.run_id == RUN_ID,
                                   tasks.c.started_at.is_(None) | tasks.c.finished_at.is_(None))
TIMED_EDGES = select(edges.c.parent, edges.c.child).where(edges.c.run_id == RUN_ID,
                                                          edges.c.child.not_in(_IDLE))

# The DB's Alembic revision (see qflow.store.migrate).
REVISION = select(column("version_num")).select_from(table("alembic_version"))



# -- a run too big to list whole (qflow.store.overview) -------------------------------
class node_group(FunctionElement):
    """A node id up to its first ``[``: a map's elements ``name[i]`` give ``name``."""
    type = String()
    inherit_cache = True


@compiles(node_group, "postgresql")
def _node_group_pg(element: node_group, compiler: Any, **kw: Any) -> str:
    return f"split_part({compiler.process(element.clauses, **kw)}, '[', 1)"


@compiles(node_group, "sqlite")
def _node_group_sqlite(element: node_group, compiler: Any, **kw: Any) -> str:
    node = compiler.process(element.clauses, **kw)
    return f"substr({node}, 1, instr({node} || '[', '[') - 1)"      # one instr() a row


class in_map(FunctionElement):
    """Whether a node id has a ``[``: a map's element (see :class:`node_group`)."""
    type = Boolean()
    inherit_cache = True


@compiles(in_map, "postgresql")
def _in_map_pg(element: in_map, compiler: Any, **kw: Any) -> str:
    return f"(strpos({compiler.process(element.clauses, **kw)}, '[') > 0)"


@compiles(in_map, "sqlite")
def _in_map_sqlite(element: in_map, compiler: Any, **kw: Any) -> str:
    return f"(instr({compiler.process(element.clauses, **kw)}, '[') > 0)"


class duration(FunctionElement):
    """``end - start`` of two times, comparable (an interval on PostgreSQL, days on
    SQLite, whose julianday() reads milliseconds)."""
    inherit_cache = True


@compiles(duration, "postgresql")
def _duration_pg(element: duration, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"({end} - {start})"


@compiles(duration, "sqlite")
def _duration_sqlite(element: duration, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"(julianday({end}) - julianday({start}))"


class ago(FunctionElement):
    """The DB's clock, as naive UTC, so many seconds ago (the heartbeats' clock: see
    qflow.store.liveness.db_now)."""
    type = DateTime()
    inherit_cache = True


@compiles(ago, "postgresql")
def _ago_pg(element: ago, compiler: Any, **kw: Any) -> str:
    return (f"(timezone('UTC', now()) - {compiler.process(element.clauses, **kw)} "
            "* INTERVAL '1 second')")


@compiles(ago, "sqlite")
def _ago_sqlite(element: ago, compiler: Any, **kw: Any) -> str:
    return (f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || "
            f"{compiler.process(element.clauses, **kw)} || ' seconds')")


# How many of the run's tasks are in each state and queue, per node (a map's elements
# under their mapped node's id, told apart by the second column), with the first task's
# id. One pass over the run's rows gives the counts per state and node, and the waiting
# tasks per queue (qflow.store.overview.warnings).
_GROUP = node_group(tasks.c.node)
_ELEMENT = in_map(tasks.c.node)
NODE_COUNTS = (select(_GROUP, _ELEMENT, tasks.c.state, tasks.c.queue, func.count(),
                      func.min(tasks.c.id))
               .where(tasks.c.run_id == RUN_ID)
               .group_by(_GROUP, _ELEMENT, tasks.c.state, tasks.c.queue))

class listed(FunctionElement):
    """The values of a JSON list given as one parameter, as a subquery for IN: a list of
    any length in one statement, rendered once."""
    inherit_cache = True


@compiles(listed, "postgresql")
def _listed_pg(element: listed, compiler: Any, **kw: Any) -> str:
    return f"(SELECT json_array_elements_text(CAST({compiler.process(element.clauses, **kw)} " \
        "AS JSON)))"


@compiles(listed, "sqlite")
def _listed_sqlite(element: listed, compiler: Any, **kw: Any) -> str:
    return f"(SELECT value FROM json_each({compiler.process(element.clauses, **kw)}))"


# A run counted without a row per element of its big maps (qflow.store.overview.counts):
# its nodes that are not elements (index-only: the (run_id, node) entries), the rows of
# the nodes named in the JSON list ``:nodes`` (the unique index), the edges out of them
# (the primary key) and its moving tasks (ix_qflow_tasks_open).
NODE_NAMES = select(tasks.c.node).where(tasks.c.run_id == RUN_ID, tasks.c.node.not_like("%[%]"))
_NAMED = tasks.c.node.op("IN")(listed(bindparam("nodes", type_=String)))
NODE_ROWS = select(tasks.c.id, tasks.c.node, tasks.c.state, tasks.c.queue, tasks.c.expanded,
                   tasks.c.up_succeeded, tasks.c.up_failed,
                   tasks.c.up_skipped).where(tasks.c.run_id == RUN_ID, _NAMED)
EDGES_FROM = select(edges.c.parent, edges.c.child).where(
    edges.c.run_id == RUN_ID, edges.c.parent.op("IN")(listed(bindparam("nodes", type_=String))))
MOVING = select(tasks.c.id, tasks.c.node, tasks.c.state, tasks.c.queue).where(
    OPEN_TASK, one_of(tasks.c.state, mapcount.MOVING), tasks.c.run_id == RUN_ID)

# The first ``:limit`` of the run's tasks in the states worth a look (ix_qflow_tasks_look).
LOOK = (select(*TASK_COLUMNS).where(tasks.c.run_id == RUN_ID, LOOK_TASK)
        .order_by(tasks.c.id).limit(bindparam("limit")))

# The ``:limit`` tasks that ran longest, ties in creation order.
SLOWEST = (select(tasks.c.node, tasks.c.started_at, tasks.c.finished_at)
           .where(tasks.c.run_id == RUN_ID, tasks.c.started_at.is_not(None),
                  tasks.c.finished_at.is_not(None))
           .order_by(duration(tasks.c.started_at, tasks.c.finished_at).desc(), tasks.c.id)
           .limit(bindparam("limit")))

# -- why a run's waiting tasks may never start (qflow.store.overview.warnings) ---------
WAITING = (S.QUEUED, S.RETRYING, S.SENSING)     # each has a message (liveness.WAITING)
# The queues of the workers heard from in the last ``:timeout`` seconds.
LIVE_QUEUES = select(workers.c.queues).where(
    workers.c.queues.is_not(None),
    workers.c.last_seen >= ago(bindparam("timeout", type_=Float)))
# The run's waiting tasks by queue (NULL: the default), in order of their first task.
WAITING_QUEUES = (select(tasks.c.queue, func.count(), func.min(tasks.c.id))
                  .where(tasks.c.run_id == RUN_ID, one_of(tasks.c.state, WAITING))
                  .group_by(tasks.c.queue))
# The first ``:limit`` waiting tasks of queue ``:queue`` (or of none, with ``:unnamed``)
# from id ``:first`` on (the first of them: the rest of the run is not read).
WAITING_IN = (select(tasks.c.node)
              .where(tasks.c.run_id == RUN_ID, one_of(tasks.c.state, WAITING),
                     tasks.c.id >= bindparam("first"),
                     (tasks.c.queue == bindparam("queue"))
                     | (tasks.c.queue.is_(None) & bindparam("unnamed", type_=Boolean)))
              .order_by(tasks.c.id).limit(bindparam("limit")))
UNSIGNED = select(runs.c.unsigned).where(runs.c.id == RUN_ID)

# Each by the name qflow.store.status asks for.
STATEMENTS: dict[str, Select] = {
    "run": RUN, "tasks": TASKS, "tracebacks": TRACEBACKS, "triggered_by": TRIGGERED_BY,
    "timed_edges": TIMED_EDGES, "revision": REVISION, "node_counts": NODE_COUNTS,
    "node_names": NODE_NAMES, "node_rows": NODE_ROWS, "edges_from": EDGES_FROM,
    "moving": MOVING, "look": LOOK, "slowest": SLOWEST, "live_queues": LIVE_QUEUES,
    "waiting_queues": WAITING_QUEUES, "waiting_in": WAITING_IN, "unsigned": UNSIGNED}


def runs_list(filters: Iterable[str]) -> Select:
    """Most recent runs first, at most ``:limit``, with a condition per name in
    ``filters`` (see qflow.store.status.RUN_FILTERS): ``:workflow``, ``:state``, created
    at or after ``:since``, before ``:until``, and following run ``:before`` in this order
    (keyset paging: as fast on page 1000 as on page 1)."""
    stmt = (select(*RUN_COLUMNS).order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(bindparam("limit")))
    if "before" in filters:
        # (created_at, id) < the cursor's, spelt so the created_at indexes bound the range.
        before = bindparam("before")
        at = select(runs.c.created_at).where(runs.c.id == before).scalar_subquery()
        stmt = stmt.where(runs.c.created_at <= at, (runs.c.created_at < at) | (runs.c.id < before))
    if "workflow" in filters:
        stmt = stmt.where(runs.c.workflow == bindparam("workflow"))
    if "state" in filters:
        stmt = stmt.where(runs.c.state == bindparam("state"))
    if "since" in filters:
        stmt = stmt.where(runs.c.created_at >= bindparam("since"))
    if "until" in filters:
        stmt = stmt.where(runs.c.created_at < bindparam("until"))
    return stmt


@lru_cache(maxsize=None)
def statement(name: str) -> Select:
    """The statement called ``name``: one of STATEMENTS, or a list of runs (runs_name)."""
    if name in STATEMENTS:
        return STATEMENTS[name]
    kind, *filters = name.split("+")
    if kind != "runs" or runs_name(filters) != name:
        raise KeyError(name)
    return runs_list(filters)


# Rendered: STATEMENTS and every list of runs `qflow runs` may ask for (paging with
# ``before`` is the web console's).
RENDERED = [*STATEMENTS, *(runs_name(chosen) for n in range(len(RUN_FILTERS))
                           for chosen in combinations(RUN_FILTERS[1:], n))]

_DIALECTS = {"sqlite": sqlite.dialect(paramstyle="named"),
             "postgresql": postgresql.psycopg.dialect()}


def _conversions(stmt: Select) -> dict[int, str]:
    """The result columns (by position) that SQLite's driver returns in another form than
    SQLAlchemy does: a time as text, a boolean as an integer."""
    out = {}
    for i, c in enumerate(stmt.selected_columns):
        if isinstance(c.type, (DateTime, Boolean)):
            out[i] = "datetime" if isinstance(c.type, DateTime) else "boolean"
    return out


def _params(stmt: Select, dialect: str) -> dict[str, Any]:
    """The parameters that take a time (SQLite's driver is given them as SQLAlchemy
    writes them), and those whose value the statement holds (SQLite's ``OFFSET 0``)."""
    compiled = stmt.compile(dialect=_DIALECTS[dialect])
    return {f"{dialect}_times": sorted(name for name, bind in compiled.binds.items()
                                       if isinstance(bind.type, DateTime)),
            f"{dialect}_values": {name: value for name, value in compiled.params.items()
                                  if value is not None}}


def rendered() -> dict[str, dict]:
    """Each statement as each dialect's SQL (named parameters: ``:run_id`` for sqlite3,
    ``%(run_id)s`` for psycopg), the SQLite conversions of its result columns, and its
    parameters that take a time or have a value (see :func:`_params`)."""
    out = {}
    for name in RENDERED:
        stmt = statement(name)
        out[name] = {"sqlite_convert": _conversions(stmt), **_params(stmt, "sqlite"),
                     "postgresql_values": _params(stmt, "postgresql")["postgresql_values"],
                     **{d: str(stmt.compile(dialect=dialect))
                        for d, dialect in _DIALECTS.items()}}
    return out


def module_text() -> str:
    """The text of qflow/store/rendered.py."""
    lines = ['"""Generated by `python -m qflow.store.queries` from the statements in',
             'qflow/store/queries.py: do not edit (a test compares the two)."""', "",
             "STATEMENTS = {"]
    for name, entry in rendered().items():
        lines.append(f"    {name!r}: {{")
        lines += [f"        {key!r}: {_literal(value, 8 + len(repr(key)) + 2)},"
                  for key, value in entry.items()]
        lines.append("    },")
    return "\n".join([*lines, "}", ""])


def _literal(value: object, indent: int) -> str:
    return pprint.pformat(value, width=96 - indent).replace("\n", "\n" + " " * indent)


if __name__ == "__main__":
    target = Path(__file__).with_name("rendered.py")
    target.write_text(module_text())
    sys.stdout.write(f"wrote {target}\n")
