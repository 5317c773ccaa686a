"""The state-changing queries of a run's life: start, claim, finish, release, end.

Each function takes a connection inside a write transaction. Task states are written only
through :func:`qflow.store.records.transition` (checked, conditional).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterable

from sqlalchemy import (Connection, Select, Update, bindparam, exists, insert, select, true,
                        update)

from .. import states as S
from ..dag import Graph
from . import mapping, pools
from .db import bulk_insert
from .models import attempts, edges, runs, tasks
from .records import (Claimed, Dispatch, Finished, Outcome, _inputs,  # noqa: F401 - API
                      message_options, set_task_state, transition, transition_stmt, utcnow)


def insert_run(conn: Connection, run_id: str, graph: Graph, params: dict,
               logical_time: dt.datetime | None = None, max_map_size: int | None = None,
               limits: Limits | None = None) -> list[Dispatch]:
    """Record a run with all its task rows and edges; return the roots to publish.

    With ``max_active_runs`` reached the run is recorded but held: nothing is published
    until a run of the workflow ends.
    """
    now, limits = utcnow(), limits or Limits()
    if logical_time is not None and logical_time.tzinfo is not None:   # stored naive UTC
        logical_time = logical_time.astimezone(dt.timezone.utc).replace(tzinfo=None)
    n_parents: dict[str, int] = dict.fromkeys(graph.nodes, 0)
    children: dict[str, list[str]] = {n: [] for n in graph.nodes}
    ordered = sorted(graph.edges)
    for parent, child in ordered:
        n_parents[child] += 1
        children[parent].append(child)
    conn.execute(insert(runs).values(
        id=run_id, workflow=graph.workflow, state=S.QUEUED, params=json.dumps(params),
        created_at=now, logical_time=logical_time, tasks_total=len(graph.nodes),
        tasks_left=len(graph.nodes), tasks_failed=0, tasks_canceled=0))
    needed = limits.register(conn, graph)
    rows = []
    for node in graph.nodes.values():
        options = dict(node.options)
        if "map" in options:
            options["map"] = {**options["map"], "max": max_map_size}
        ready = S.decide(node.trigger_rule, S.Upstream(n_parents[node.id])) == S.RUN
        rows.append(dict(
            run_id=run_id, node=node.id, task=node.task,
            state=S.QUEUED if ready and "map" not in options else S.PENDING,
            trigger_rule=node.trigger_rule, queue=node.queue,
            call=json.dumps({"args": node.args, "kwargs": node.kwargs}),
            options=json.dumps(options) if options else None,
            pools=json.dumps(needed[node.id]) if node.id in needed else None,
            n_parents=n_parents[node.id], up_succeeded=0, up_failed=0, up_skipped=0,
            attempts=0, queued_at=now if ready else None,
            children=json.dumps(children[node.id])))
    bulk_insert(conn, tasks, rows)
    bulk_insert(conn, edges, [dict(run_id=run_id, parent=p, child=c) for p, c in ordered])
    if not pools.start_or_hold(conn, run_id, graph.workflow, limits.max_active_runs):
        return []
    return start_run(conn, run_id, graph.workflow, now)


@dataclass(frozen=True)
class Limits:
    """The concurrency limits a new run is subject to."""

    pools: dict[str, int] = field(default_factory=dict)     # from the config
    max_active_tasks: int | None = None
    max_active_runs: int | None = None

    def register(self, conn: Connection, graph: Graph) -> dict[str, list[str]]:
        """Make sure every pool exists; return the pools of each node that needs any."""
        pools.ensure(conn, self.pools, overwrite=False)
        shared = []
        if self.max_active_tasks is not None:
            shared = [pools.task_pool(graph.workflow)]
            pools.ensure(conn, {shared[0]: self.max_active_tasks}, overwrite=True)
        needed = {n.id: sorted({*shared, *([n.options["pool"]] if n.options.get("pool")
                                           else [])}) for n in graph.nodes.values()
                  if shared or n.options.get("pool")}
        pools.check_known(conn, {p for names in needed.values() for p in names})
        return needed


def start_run(conn: Connection, run_id: str, workflow: str, now: dt.datetime
              ) -> list[Dispatch]:
    """Publish a run's roots (taking pool slots) and expand its root maps."""
    out: list[Dispatch] = []
    ended: list[tuple[str, str]] = []
    for row in conn.execute(select(*_ROW).where(
            tasks.c.run_id == run_id, tasks.c.attempts == 0,
            (tasks.c.state == S.QUEUED) | ((tasks.c.state == S.PENDING)
                                           & (tasks.c.n_parents == 0)))).all():
        sent, done = (release(conn, run_id, workflow, row, now) if row.state == S.PENDING
                      else _queued(conn, run_id, workflow, row, now))
        out += sent
        ended += done
    if ended:
        out += propagate(conn, run_id, workflow, ended, now)[0]
    return out


_ROW = (tasks.c.id, tasks.c.node, tasks.c.state, tasks.c.queue, tasks.c.options,
        tasks.c.attempts, tasks.c.pools)


def claim(conn: Connection, run_id: str, node: str, attempt: int, worker: str,
          celery_id: str | None) -> Claimed | None:
    """Mark ``attempt`` of a queued task running; None if it is not ours to run."""
    now = utcnow()
    row = set_task_state(conn, run_id, node, S.RUNNING, expect=(S.QUEUED, S.RETRYING),
                         attempt=attempt - 1, attempts=attempt, started_at=now,
                         finished_at=None, worker=worker, celery_id=celery_id,
                         returning=_CLAIMED)
    return None if row is None else _claimed(conn, run_id, node, row, now)


def claim_in_doubt(conn: Connection, run_id: str, node: str, attempt: int, worker: str,
                   celery_id: str | None) -> Claimed | None:
    """:func:`claim` again after the connection dropped during the first try, which may
    have committed: a row already running this attempt for this worker and this message
    is ours. Only for that retry: a redelivered message keeps its Celery id."""
    found = claim(conn, run_id, node, attempt, worker, celery_id)
    if found is not None:
        return found
    row = conn.execute(select(*_CLAIMED).where(
        tasks.c.run_id == run_id, tasks.c.node == node, tasks.c.state == S.RUNNING,
        tasks.c.attempts == attempt, tasks.c.worker == worker,
        tasks.c.celery_id == celery_id)).first()
    return None if row is None else _claimed(conn, run_id, node, row, utcnow())


_CLAIMED = (tasks.c.id, tasks.c.task, tasks.c.call, tasks.c.options, tasks.c.children,
            tasks.c.pools)


def _claimed(conn: Connection, run_id: str, node: str, row, now: dt.datetime) -> Claimed:
    """What a worker needs to run a task row it claimed."""
    run = _RUNS.get(run_id)
    if run is None:                   # first task of this run in this process
        conn.execute(update(runs).where(runs.c.id == run_id, runs.c.state == S.QUEUED)
                     .values(state=S.RUNNING, started_at=now))
        run = _RUNS.put(run_id, conn.execute(
            select(runs.c.workflow, runs.c.params, runs.c.logical_time)
            .where(runs.c.id == run_id)).one())
    call, options = json.loads(row.call), json.loads(row.options or "{}")
    children = (tuple(sorted(_children(conn, run_id, node, row.children)))
                if options.get("branch") else None)
    return Claimed(row.id, row.task, call, options, run.workflow, json.loads(run.params),
                   run.logical_time, _inputs(conn, run_id, call),
                   alone=row.children == "[]" and not row.pools, children=children)


def finish_alone(claimed: Claimed, outcome: Outcome, fail_fast: bool) -> bool:
    """Whether :func:`finish` runs a single statement for this outcome (no children to
    count, no pool slots to give back, no fail_fast cancellation), so that it needs no
    transaction around it."""
    return claimed.alone and not (fail_fast and outcome.state == S.FAILED)


def finish(conn: Connection, run_id: str, node: str, attempt: int, outcome: Outcome,
           fail_fast: bool = False) -> Finished | None:
    """Record an attempt's outcome, release the children it makes ready and count what
    ended in the run.

    None when the report is stale (the task no longer runs this attempt), so a
    redelivered message or a presumed-dead worker's late report changes nothing. The
    task counts itself on its run's row in the outcome's own statement (PostgreSQL);
    tasks ended on the way (skipped, canceled) are counted last.
    """
    now = utcnow()
    found = _end_attempt(conn, run_id, node, attempt, outcome, now)
    if found is None:
        return None
    row, totals = found
    workflow = _workflow(conn, run_id)
    if outcome.state == S.RETRYING:
        again = Dispatch(run_id, node, attempt + 1, row.queue, workflow,
                         countdown=outcome.retry_in or 0.0,
                         **message_options(row.options))
        return Finished(workflow, [again])
    ended = [(node, outcome.state)]
    freed = _dispatch_rows(conn, pools.give_back(conn, row.id, json.loads(row.pools), now)
                           ) if row.holding else []
    if outcome.state == S.FAILED and fail_fast:
        canceled, admitted = cancel_open(conn, run_id, (S.PENDING, S.QUEUED, S.RETRYING), now)
        ended += canceled
        freed += admitted
    chosen = {node: set(outcome.chosen)} if outcome.chosen is not None else {}
    released, ended = cascade(conn, run_id, workflow, ended, now, chosen,
                              {node: row.children})
    if ended[1:]:                     # the task itself was counted with its outcome
        totals = count_ended(conn, run_id, ended[1:])
    return Finished(workflow, freed + released, totals)


def _end_attempt(conn: Connection, run_id: str, node: str, attempt: int, outcome: Outcome,
                 now: dt.datetime) -> tuple[Any, tuple[int, int] | None] | None:
    """Write the outcome on the task row (if it still runs ``attempt``) and the attempt's
    own row, written once when the attempt ends, and, unless it will be retried, count the
    task as ended in its run: one statement on PostgreSQL. Returns the task row and the
    run's totals if that count ended it (see :func:`count_ended`), or None for a stale
    report.
    """
    retrying = outcome.state == S.RETRYING
    count = not retrying
    due = {"queued_at": now + dt.timedelta(seconds=outcome.retry_in or 0)} if retrying else {}
    ended, params = transition_stmt(run_id, outcome.state, expect=(S.RUNNING,), node=node,
                                    attempt=attempt, finished_at=None if retrying else now,
                                    result=outcome.result, error=outcome.error, **due,
                                    returning=_ENDED)
    values = dict(number=attempt, state=S.FAILED if retrying else outcome.state,
                  finished_at=now, error_type=outcome.error_type, error=outcome.error,
                  traceback=outcome.traceback, log=outcome.log)
    if conn.dialect.name == "postgresql":
        params.update({f"a_{k}": v for k, v in values.items()})
        if count:
            params.update(_count_params(run_id, [(node, outcome.state)]))
        row = conn.execute(_with_attempt(ended, count), params).first()
        return None if row is None else (row, _totals(row) if count else None)
    row = conn.execute(ended, params).first()
    if row is None:
        return None
    conn.execute(insert(attempts).values(task_id=row.id, worker=row.worker,
                                         celery_id=row.celery_id, started_at=row.started_at,
                                         **values))
    return row, count_ended(conn, run_id, [(node, outcome.state)]) if count else None


@functools.lru_cache(maxsize=32)
def _with_attempt(ended: Update, count: bool) -> Select:
    """``ended`` (an UPDATE of one task row), the INSERT of its attempt's row and, with
    ``count``, the run's count as one statement (PostgreSQL's data-modifying WITH),
    built once per outcome state."""
    row = ended.cte("outcome")
    cols = {"task_id": row.c.id, "worker": row.c.worker, "celery_id": row.c.celery_id,
            "started_at": row.c.started_at,
            **{k: bindparam(f"a_{k}", type_=attempts.c[k].type) for k in _ATTEMPT}}
    write = insert(attempts).from_select(list(cols), select(*cols.values()))
    if not count:
        return select(row).add_cte(write.cte("attempt"))
    run = _COUNT_IN_RUN.where(exists(select(row.c.id))).cte("counted")
    return (select(row, *run.c).select_from(row.join(run, true()))
            .add_cte(write.cte("attempt")))


_ATTEMPT = ("number", "state", "finished_at", "error_type", "error", "traceback", "log")
_ENDED = (tasks.c.id, tasks.c.queue, tasks.c.options, tasks.c.pools, tasks.c.holding,
          tasks.c.children, tasks.c.started_at, tasks.c.worker, tasks.c.celery_id)


_COUNTER = {S.SUCCEEDED: "up_succeeded", S.FAILED: "up_failed",
            S.UPSTREAM_FAILED: "up_failed", S.SKIPPED: "up_skipped", S.CANCELED: "up_skipped"}


def propagate(conn: Connection, run_id: str, workflow: str, ended: list[tuple[str, str]],
              now: dt.datetime, chosen: dict[str, set[str]] | None = None
              ) -> tuple[list[Dispatch], str | None]:
    """:func:`cascade`, then :func:`settle` in the same transaction."""
    released, todo = cascade(conn, run_id, workflow, ended, now, chosen)
    final, admitted = settle(conn, run_id, workflow, todo)
    return released + admitted, final


def cascade(conn: Connection, run_id: str, workflow: str, ended: list[tuple[str, str]],
            now: dt.datetime, chosen: dict[str, set[str]] | None = None,
            known: dict[str, str | None] | None = None
            ) -> tuple[list[Dispatch], list[tuple[str, str]]]:
    """Count each ended task in its children; release or end the children it decides.

    The counter update is one statement per parent; its row locks serialise parents that
    end at the same moment, so exactly one of them sees the last count. A branch task's
    children outside its ``chosen`` set are skipped. Returns the released tasks and every
    task that ended (the given ones and those ended on the way). ``known`` maps nodes to
    their rows' ``children`` column where the caller has it at hand.
    """
    released: list[Dispatch] = []
    todo = list(ended)
    known = dict(known or {})
    for node, state in todo:                      # todo grows while we walk it
        counter = _COUNTER[state]
        children = _children(conn, run_id, node, known.get(node))
        if not children:
            continue
        rows = conn.execute(_COUNT_IN_CHILDREN[counter],
                            {"b_run_id": run_id, "b_nodes": children}).all()
        picked = (chosen or {}).get(node)
        for child in rows:
            known[child.node] = child.children
            if child.state != S.PENDING:
                continue
            if picked is not None and child.node not in picked:
                verdict = S.SKIPPED
            else:
                verdict = S.decide(child.trigger_rule, S.Upstream(
                    child.n_parents, child.up_succeeded, child.up_failed, child.up_skipped))
            if verdict == S.RUN:
                sent, ended_now = release(conn, run_id, workflow, child, now)
                released += sent
                todo += ended_now
            elif verdict == S.UPSTREAM and mapping.is_expanded(child.options):
                error = mapping.failed_elements(conn, run_id, child.node, child.options)
                if set_task_state(conn, run_id, child.node, S.FAILED, expect=(S.PENDING,),
                                  finished_at=now, error=error) is not None:
                    todo.append((child.node, S.FAILED))
            elif verdict != S.WAIT:
                if set_task_state(conn, run_id, child.node, verdict, expect=(S.PENDING,),
                                  finished_at=now) is not None:
                    todo.append((child.node, verdict))
    return released, todo


def _count_in_children(counter: str) -> Update:
    column = getattr(tasks.c, counter)
    return (update(tasks)
            .where(tasks.c.run_id == bindparam("b_run_id"),
                   tasks.c.node.in_(bindparam("b_nodes", expanding=True)))
            .values({counter: column + 1})
            .returning(tasks.c.node, tasks.c.state, tasks.c.trigger_rule, tasks.c.queue,
                       tasks.c.options, tasks.c.attempts, tasks.c.pools, tasks.c.n_parents,
                       tasks.c.up_succeeded, tasks.c.up_failed, tasks.c.up_skipped,
                       tasks.c.children))


_COUNT_IN_CHILDREN = {c: _count_in_children(c) for c in set(_COUNTER.values())}


def _children(conn: Connection, run_id: str, node: str, listed: str | None) -> list[str]:
    """A task's children: from its row's ``children`` column, else from qflow_edges (by
    its own index, not a subquery the planner might join against the whole run)."""
    if listed is not None:
        return json.loads(listed)
    return conn.execute(select(edges.c.child).where(
        edges.c.run_id == run_id, edges.c.parent == node)).scalars().all()


def settle(conn: Connection, run_id: str, workflow: str, ended: list[tuple[str, str]]
           ) -> tuple[str | None, list[Dispatch]]:
    """Count ended tasks in the run; returns its final state if this ended it, and the
    held run that may start in its place."""
    totals = count_ended(conn, run_id, ended)
    return end_run(conn, run_id, workflow, totals) if totals else (None, [])


def end_run(conn: Connection, run_id: str, workflow: str, totals: tuple[int, int]
            ) -> tuple[str | None, list[Dispatch]]:
    """Give a run whose tasks have all ended its final state, from its (failed, canceled)
    totals; returns that state if this call set it, and the held run that may start."""
    now = utcnow()
    final = S.run_state(*totals)
    done = conn.execute(update(runs)
                        .where(runs.c.id == run_id, runs.c.state.in_((S.QUEUED, S.RUNNING)))
                        .values(state=final, finished_at=now)).rowcount
    return (final, run_ended(conn, run_id, workflow, now)) if done else (None, [])


def run_ended(conn: Connection, run_id: str, workflow: str, now: dt.datetime
              ) -> list[Dispatch]:
    """A run ended: a run held back by max_active_runs may start."""
    held = conn.execute(select(runs.c.held).where(runs.c.id == run_id)).scalar_one()
    if held:
        conn.execute(update(runs).where(runs.c.id == run_id).values(held=False))
    admitted = pools.next_run(conn, workflow, was_held=held)
    return start_run(conn, admitted, workflow, now) if admitted else []


def cancel_open(conn: Connection, run_id: str, expect: Iterable[str], now: dt.datetime
                ) -> tuple[list[tuple[str, str]], list[Dispatch]]:
    """Cancel a run's tasks in ``expect`` states; returns (ended, tasks admitted to the
    pool slots they gave back)."""
    running = conn.execute(select(tasks.c.id, tasks.c.attempts, tasks.c.worker,
                                  tasks.c.celery_id, tasks.c.started_at).where(
        tasks.c.run_id == run_id, tasks.c.state == S.RUNNING)).all() \
        if S.RUNNING in expect else []
    rows = transition(conn, run_id, S.CANCELED, expect=tuple(expect), finished_at=now,
                      returning=(tasks.c.id, tasks.c.node, tasks.c.pools, tasks.c.holding))
    if running:                       # the attempts cut short end here, as canceled
        conn.execute(insert(attempts), [dict(
            task_id=r.id, number=r.attempts, state=S.CANCELED, worker=r.worker,
            celery_id=r.celery_id, started_at=r.started_at, finished_at=now,
            error_type="Canceled", error="canceled by `qflow cancel`") for r in running])
    pools.forget_waits(conn, [r.id for r in rows if r.pools and not r.holding])
    admitted = []
    for r in rows:
        if r.holding:
            admitted += pools.give_back(conn, r.id, json.loads(r.pools), now)
    return [(r.node, S.CANCELED) for r in rows], _dispatch_rows(conn, admitted)


def _dispatch_rows(conn: Connection, rows: list) -> list[Dispatch]:
    names = dict(conn.execute(select(runs.c.id, runs.c.workflow).where(
        runs.c.id.in_({r.run_id for r in rows}))).all()) if rows else {}
    return [dispatch_of(r.run_id, names[r.run_id], r) for r in rows]


def release(conn: Connection, run_id: str, workflow: str, row, now: dt.datetime
            ) -> tuple[list[Dispatch], list[tuple[str, str]]]:
    """Queue a pending task whose trigger rule is met; returns (to publish, ended).

    A mapped node expands into its elements instead, and once expanded collects them.
    """
    if mapping.is_mapped(row.options):
        if mapping.is_expanded(row.options):
            mapping.collect(conn, run_id, row.node, row.options, now)
            return [], [(row.node, S.SUCCEEDED)]
        ids, ended, _ = mapping.expand(conn, run_id, row.node, now, _inputs)
        options = {k: v for k, v in json.loads(row.options).items() if k != "map"}
        return ([Dispatch(run_id, eid, 1, row.queue, workflow, **message_options(options))
                 for eid in ids], [(row.node, ended)] if ended else [])
    queued = set_task_state(conn, run_id, row.node, S.QUEUED, expect=(S.PENDING,),
                            queued_at=now)
    if queued is None:
        return [], []
    return _queued(conn, run_id, workflow, SimpleNamespace(
        id=queued.id, node=row.node, queue=row.queue, options=row.options,
        attempts=row.attempts, pools=row.pools), now)


def _queued(conn: Connection, run_id: str, workflow: str, row, now: dt.datetime
            ) -> tuple[list[Dispatch], list[tuple[str, str]]]:
    """A queued task is published, unless it must first wait for a pool slot."""
    if row.pools and not pools.acquire(conn, row.id, json.loads(row.pools), now):
        return [], []
    return [dispatch_of(run_id, workflow, row)], []


def dispatch_of(run_id: str, workflow: str, row) -> Dispatch:
    """The message for a task row's next attempt."""
    return Dispatch(run_id, row.node, row.attempts + 1, row.queue, workflow,
                    **message_options(row.options))


class _RunCache:
    """What never changes about a run (workflow, params, logical time), per process."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()

    def get(self, run_id: str):
        found = self.items.get(run_id)
        if found is not None:
            self.items.move_to_end(run_id)
        return found

    def put(self, run_id: str, info):
        self.items[run_id] = info
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return info


_RUNS = _RunCache()


def _workflow(conn: Connection, run_id: str) -> str:
    cached = _RUNS.get(run_id)
    if cached is not None:
        return cached.workflow
    return conn.execute(select(runs.c.workflow).where(runs.c.id == run_id)).scalar_one()


def count_ended(conn: Connection, run_id: str, ended: list[tuple[str, str]]
                ) -> tuple[int, int] | None:
    """Decrement the run's open-task counter in one statement; the update that reaches 0
    ends the run: it returns the run's (failed, canceled) totals for :func:`end_run`.
    """
    return _totals(conn.execute(_COUNT_IN_RUN, _count_params(run_id, ended)).one())


def _count_params(run_id: str, ended: list[tuple[str, str]]) -> dict[str, Any]:
    return {"c_run_id": run_id, "c_ended": len(ended),
            "c_failed": sum(state in (S.FAILED, S.UPSTREAM_FAILED) for _, state in ended),
            "c_canceled": sum(state == S.CANCELED for _, state in ended)}


def _totals(row) -> tuple[int, int] | None:
    return (row.tasks_failed, row.tasks_canceled) if row.tasks_left == 0 else None


_COUNT_IN_RUN = (update(runs).where(runs.c.id == bindparam("c_run_id"))
                 .values(tasks_left=runs.c.tasks_left - bindparam("c_ended"),
                         tasks_failed=runs.c.tasks_failed + bindparam("c_failed"),
                         tasks_canceled=runs.c.tasks_canceled + bindparam("c_canceled"))
                 .returning(runs.c.tasks_left, runs.c.tasks_failed, runs.c.tasks_canceled))
