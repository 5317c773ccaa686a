"""Writing a new run's rows: its run row, task rows and edges.

A small run on PostgreSQL is one statement (data-modifying WITH, the task rows and edges
as arrays, unnested), which also returns the task rows that start the run: a trigger of
a four-node run is then one round trip to the DB inside its transaction, where the run
row, two COPYs and the read of its first tasks took about ten (bench/trigger_cost.py).
A bigger run goes by COPY (see :func:`~qflow.store.bulk.bulk_insert`), its rows never all
in memory, and its first tasks are read after.
"""
from __future__ import annotations

import functools
import json
from json.encoder import JSONEncoder, c_make_encoder, encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    cast,
    func,
    insert,
    select,
)

from qflow.core import states as S
from qflow.core.params import share_params
from qflow.store.bulk import bulk_insert
from qflow.store.mapping import EDGE, NEW_TASK
from qflow.store.models import edges, runs, tasks

if TYPE_CHECKING:
    from qflow.store.lifecycle import NewRun

# Rows (tasks and edges together) up to which a run is written in one statement: its
# arrays are built in memory, which COPY avoids for a big run.
AT_ONCE = 2000

# What a run's start needs of each task row that starts it (see RunWriter.start).
START = (tasks.c.id, tasks.c.node, tasks.c.state, tasks.c.queue, tasks.c.options,
         tasks.c.attempts, tasks.c.pools, tasks.c.expanded)


def startable(c) -> ColumnElement[bool]:
    """The task rows that start a run (``c``: the columns of qflow_tasks, or of rows
    being inserted into it): queued with a place in its window, or pending on no parent
    (a root map to expand; a root whose rule waits on nothing), not run before."""
    return and_(c.attempts == 0, c.held_back.is_(False),
                (c.state == S.QUEUED) | ((c.state == S.PENDING) & (c.n_parents == 0)))


def write(conn: Connection, run: dict[str, Any], task_rows: Iterable[Sequence],
          edge_rows: Iterable[Sequence], n_tasks: int, n_edges: int) -> list | None:
    """Insert the run row (``run``: its column values), its ``n_tasks`` task rows (in the
    order of :data:`~qflow.store.mapping.NEW_TASK`) and ``n_edges`` edges. Returns the
    rows that start it (the :data:`START` columns) when the write returned them, else None
    (read them)."""
    if conn.dialect.name == "postgresql" and n_tasks + n_edges <= AT_ONCE:
        edge_rows = list(edge_rows)
        columns = zip(NEW_TASK, zip(*task_rows, strict=True), strict=True)
        params = {f"r_{k}": v for k, v in run.items()}
        params.update({f"t_{name}": list(values) for name, values in columns})
        params.update({f"e_{name}": [e[i] for e in edge_rows] for i, name in enumerate(EDGE)})
        return conn.execute(_at_once(tuple(sorted(run))), params).all()
    conn.execute(insert(runs), run)
    bulk_insert(conn, tasks, NEW_TASK, task_rows)
    bulk_insert(conn, edges, EDGE, edge_rows)
    return None


def call_and_options(node, new: NewRun, big: dict[str, str], dumps: Callable[[Any], str]
                      ) -> tuple[str, str | None, float | None]:
    """A task row's ``call``, ``options`` and ``deadline_s``. The call keeps big parameters
    (``big``: see :func:`~qflow.core.params.share_params`) by reference, except a mapped
    node's, kept as it is (its input list is read where the node expands), whose options
    say how big it may grow. ``dumps``: json.dumps (see :func:`encoder`). The deadline is
    a float whatever number it was given as: a column's values go to PostgreSQL as one
    array in a small run's statement, which cannot mix ints and floats."""
    call = {"args": node.args, "kwargs": node.kwargs}
    options = node.options
    if "map" in options:
        options = {**options, "map": {**options["map"], "max": new.max_map_size,
                                      "result_max": new.result_max_bytes}}
    else:
        call = share_params(call, new.values, big)
    deadline = options.get("deadline")
    return (dumps(call), dumps(options) if options else None,
            None if deadline is None else float(deadline))


def encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its default options, for the million values of one run's rows:
    the same encoder, made once (json.dumps makes one for each call, about half the time
    it takes on a task's arguments). One per run: its check for cycles keeps state while
    it encodes, which threads must not share."""
    if c_make_encoder is None:            # no C accelerator: json.dumps itself
        return json.dumps
    encode = c_make_encoder({}, JSONEncoder().default, encode_basestring_ascii, None,
                            ": ", ", ", False, False, True)
    return lambda value: "".join(encode(value, 0))


def _unnested(table, names: Sequence[str], prefix: str) -> Select:
    """SELECT of rows given as one array parameter per column (``prefix`` + name)."""
    arrays = [cast(bindparam(prefix + name), ARRAY(table.c[name].type)) for name in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    return select(*rows.c)


@functools.lru_cache(maxsize=8)
def _at_once(run_keys: tuple[str, ...]) -> Select:
    """The run row, its task rows and edges as one statement, selecting the task rows
    that start the run; built once per set of run columns."""
    # Every column comes from the parameters or from the server's defaults: Python-side
    # defaults are not filled in for an INSERT inside a SELECT.
    one = select(*(bindparam(f"r_{k}", type_=runs.c[k].type) for k in run_keys))
    run = insert(runs).from_select(list(run_keys), one, include_defaults=False).cte("new_run")
    links = insert(edges).from_select(list(EDGE), _unnested(edges, EDGE, "e_"),
                                      include_defaults=False).cte("new_edges")
    written = (insert(tasks).from_select(list(NEW_TASK), _unnested(tasks, NEW_TASK, "t_"),
                                         include_defaults=False)
               .returning(*START, tasks.c.held_back, tasks.c.n_parents).cte("new_tasks"))
    return (select(*(written.c[c.name] for c in START)).where(startable(written.c))
            .add_cte(run, links))


@functools.lru_cache(maxsize=1024)
def runs_at_start(rule: str, n_parents: int) -> bool:
    """Whether a task with this trigger rule and ``n_parents`` parents, none of them
    ended, runs as its run starts: decided once per pair, not for each of a million
    tasks."""
    return S.decide(rule, S.Upstream(n_parents)) == S.RUN
