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

from sqlalchemy import Boolean, DateTime, Select, bindparam, column, select, table
from sqlalchemy.dialects import postgresql, sqlite

from qflow.store.models import asset_consumed, asset_events, attempts, edges, runs, tasks
from qflow.store.status import RUN_FILTERS, runs_name

RUN_ID = bindparam("run_id")

# What a run's row shows: `status` and `runs` (see qflow.store.status.run_dict).
RUN_COLUMNS = (runs.c.id, runs.c.workflow, runs.c.state, runs.c.params, runs.c.created_at,
               runs.c.started_at, runs.c.finished_at, runs.c.logical_time,
               runs.c.tasks_total, runs.c.tasks_left, runs.c.late)

RUN = select(*RUN_COLUMNS).where(runs.c.id == RUN_ID)

TASKS = (select(tasks.c.node, tasks.c.state, tasks.c.attempts, tasks.c.started_at,
                tasks.c.finished_at, tasks.c.error, tasks.c.worker, tasks.c.celery_id,
                tasks.c.queue, tasks.c.late)
         .where(tasks.c.run_id == RUN_ID).order_by(tasks.c.id))

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

# Each by the name qflow.store.status asks for.
STATEMENTS: dict[str, Select] = {
    "run": RUN, "tasks": TASKS, "tracebacks": TRACEBACKS, "triggered_by": TRIGGERED_BY,
    "timed_edges": TIMED_EDGES, "revision": REVISION}


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
