"""A run's life in the store: insert it, start it, release and end its tasks, end it.

Every step takes a connection inside a write transaction. Task states are written only
through :func:`qflow.store.transitions.transition`, run states only through
:func:`qflow.store.transitions.set_run_state` (both checked and conditional). The steps
of one run share a :class:`RunWriter`; what each step set in motion comes back as a named
record, to act on after commit.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterable

from sqlalchemy import Connection, insert, select, update

from qflow.core import states as S
from qflow.core.dag import Graph, collection_paused
from qflow.core.params import big_params
from qflow.core.records import Dispatch, message_options
from qflow.store import mapping, newrun, outbox, pools
from qflow.store.children import (
    children_of,
    count_in_children,
    followed,
    plain_child,
    verdict_on,
)
from qflow.store.counts import Ended, count_ended
from qflow.store.db import query
from qflow.store.mapping import NEW_COUNTS
from qflow.store.models import attempts, runs, tasks
from qflow.store.pools import Limits
from qflow.store.transitions import read_inputs, set_task_state, transition, utcnow
from qflow.store.window import Room, Window, placed_at_start, priority_of


@dataclass(frozen=True)
class NewRun:
    """A validated, expanded run about to be inserted."""

    run_id: str
    graph: Graph
    values: dict[str, Any]
    logical_time: dt.datetime | None = None
    max_map_size: int | None = None
    limits: Limits = field(default_factory=Limits)
    result_max_bytes: int | None = None     # a mapped node's collected list, too
    signed: bool = True                     # its creator signs messages (see qflow_runs)
    deadline: float | None = None           # seconds: late if not ended by logical time + it
    window: int | None = None               # dispatch_window (see qflow.store.window)
    window_queues: str | None = None        # sized from their workers (qflow.store.sizing)

    @property
    def workflow(self) -> str:
        return self.graph.workflow


@dataclass(frozen=True)
class Progress:
    """What a step set in motion: tasks to publish after commit, and the run's final state
    if the step ended the run (``None`` while it goes on)."""

    to_publish: list[Dispatch] = field(default_factory=list)
    final: str | None = None


@dataclass(frozen=True)
class Released:
    """Tasks to publish, and every task that ended on the way (given ones included)."""

    to_publish: list[Dispatch] = field(default_factory=list)
    ended: Ended = field(default_factory=list)


@query()
def insert_run(conn: Connection, new: NewRun) -> Progress:
    """Record a run with all its task rows and edges, and start it.

    With ``max_active_runs`` reached the run is recorded but held: nothing is published
    until a run of the workflow ends.
    """
    now = utcnow()
    with collection_paused():     # see there: a million tasks' worth of objects
        started, first = _insert_rows(conn, new, now)
    if not started:
        return Progress()
    return RunWriter(conn, new.run_id, new.workflow, now).start(rows=first)


def written_at_once(new: NewRun) -> bool:
    """Whether :func:`insert_run` writes ``new`` in one statement on PostgreSQL (and reads
    at most the live workers): a small run (see qflow.store.newrun.AT_ONCE) that no
    limit, pool or map adds a statement to. It may then commit on its own."""
    graph, limits = new.graph, new.limits
    return (len(graph.nodes) + len(graph.edges) <= newrun.AT_ONCE and not limits.pools
            and limits.max_active_tasks is None and limits.max_active_runs is None
            and not any("pool" in n.options or mapping.is_mapped(n.options)
                        for n in graph.nodes.values()))


def _insert_rows(conn: Connection, new: NewRun, now: dt.datetime) -> tuple[bool, list | None]:
    """The run's row, its task rows and edges; whether it starts now (not held), and the
    rows that start it if the write returned them (see qflow.store.newrun)."""
    graph, run_id = new.graph, new.run_id
    logical_time = new.logical_time
    if logical_time is not None and logical_time.tzinfo is not None:   # stored naive UTC
        logical_time = logical_time.astimezone(dt.timezone.utc).replace(tzinfo=None)
    n_parents: dict[str, int] = dict.fromkeys(graph.nodes, 0)
    children: dict[str, list[str]] = {}
    for parent, child in graph.in_order():
        n_parents[child] += 1
        children.setdefault(parent, []).append(child)
    for kids in children.values():
        kids.sort()
    ready = {n.id: priority_of(n.options) for n in graph.nodes.values()
             if "map" not in n.options and newrun.runs_at_start(n.trigger_rule, n_parents[n.id])}
    placed = placed_at_start(ready, new.window)          # None: every ready task
    held = 0 if placed is None else len(ready) - len(placed)
    needed = new.limits.register(conn, graph)
    plain = {parent for parent, kids in children.items()
             if all(plain_child(graph.nodes[kid], needed) for kid in kids)}
    started = pools.take_run_place(conn, graph.workflow, new.limits.max_active_runs)
    run = dict(
        id=run_id, workflow=graph.workflow, state=S.QUEUED, params=json.dumps(new.values),
        created_at=now, logical_time=logical_time, tasks_total=len(graph.nodes),
        tasks_left=len(graph.nodes), tasks_failed=0, tasks_canceled=0, held=not started,
        unsigned=not new.signed, deadline_at=None if new.deadline is None
        else (logical_time or now) + dt.timedelta(seconds=new.deadline),
        dispatch_window=new.window, window_queues=new.window_queues, backlog=held,
        in_flight=0 if new.window is None else len(ready) - held)
    # A big run's rows go to the DB as they are made (COPY), never all in memory.
    dumps, big = newrun.encoder(), big_params(new.values)
    rows = ((run_id, node.id, node.task, S.QUEUED if node.id in ready else S.PENDING,
             node.trigger_rule, node.queue, *newrun.call_and_options(node, new, big, dumps),
             dumps(needed[node.id]) if node.id in needed else None,
             n_parents[node.id], now if node.id in ready and started else None,  # start()
             dumps(children[node.id]) if node.id in children else "[]",
             placed is not None and node.id in ready and node.id not in placed,
             priority_of(node.options), *NEW_COUNTS, node.id in plain)
            for node in graph.nodes.values())
    # The edges in the order their parents were made, not the graph's (a set's, by hash):
    # consecutive rows then go next to each other in the primary key, whose pages stay in
    # memory, instead of each to a page of its own (2.5 times the server's work).
    links = ((run_id, parent, child) for parent in graph.nodes
             for child in children.get(parent, ()))
    return started, newrun.write(conn, run, rows, links, len(graph.nodes), len(graph.edges))


@query()
def end_run(conn: Connection, run_id: str, workflow: str, totals: tuple[int, int]
            ) -> Progress:
    """:meth:`RunWriter.end` in a transaction of its own."""
    return RunWriter(conn, run_id, workflow).end(totals)


@query(autocommit=True)
def end_alone(conn: Connection, run_id: str, workflow: str, totals: tuple[int, int]
              ) -> Progress | None:
    """:func:`end_run` as one statement committed on its own, where the end is all there
    is to it (PostgreSQL; the usual run): its workflow has no max_active_runs (no place
    to give back, no held run to admit) and no alert of it goes to the outbox. None
    where it is not so, or the run had ended: :func:`end_run` then."""
    final = S.run_state(*totals)
    if conn.dialect.name != "postgresql" or outbox.wanted(conn, f"run_{final}"):
        return None
    ended = pools.end_unlimited(conn, run_id, workflow, final, utcnow())
    return None if ended is None else Progress([], final)


@query()
def top_up(conn: Connection, run_id: str, workflow: str) -> list[Dispatch]:
    """:meth:`RunWriter.top_up` in a transaction of its own, for a run whose outcome was
    recorded without one (see qflow.store.attempts.finish_one), or whose top-up was lost."""
    writer = RunWriter(conn, run_id, workflow)
    return writer.top_up() if writer.window.room.stalled else []


class RunWriter:
    """The state changes of one run inside one transaction, all at the same ``now``."""

    def __init__(self, conn: Connection, run_id: str, workflow: str,
                 now: dt.datetime | None = None, room: Room | None = None):
        self.conn = conn
        self.run_id = run_id
        self.workflow = workflow
        self.now = now or utcnow()
        self.window = Window(conn, run_id, room)     # ``room``: read with the run's row

    def start(self, was_held: bool = False, rows: list | None = None) -> Progress:
        """The run is admitted: its roots are published (taking pool slots) and its root
        maps expand; it runs once a worker claims its first task. An empty root map may
        end the run at once. ``rows``: the rows that start it, if the caller has them
        (see qflow.store.newrun.startable); held-back tasks wait for places to free up."""
        out: list[Dispatch] = []
        ended: Ended = []
        if was_held:        # its roots were stored without queued_at, so that the
            # reconciler, which re-sends what has been queued too long, left them alone.
            self.conn.execute(update(tasks).where(
                tasks.c.run_id == self.run_id, tasks.c.state == S.QUEUED,
                tasks.c.attempts == 0).values(queued_at=self.now))
        if rows is None:
            rows = self.conn.execute(select(*newrun.START).where(
                tasks.c.run_id == self.run_id, newrun.startable(tasks.c))).all()
        for row in rows:
            step = self.release(row) if row.state == S.PENDING else self._queued(row)
            out += step.to_publish
            ended += step.ended
        if not ended:
            return Progress(out + self.top_up())
        after = self.propagate(ended)
        return Progress(out + after.to_publish, after.final)

    def release(self, row) -> Released:
        """Queue a pending task whose trigger rule is met. A mapped node expands into its
        elements instead, and once expanded collects them."""
        if mapping.is_mapped(row.options):
            if mapping.is_expanded(row):
                state = mapping.collect(self.conn, self.run_id, row.node, row.expanded,
                                        row.options, self.now)
                return Released([], [(row.node, state)])
            ids, ended, _ = mapping.expand(self.conn, self.run_id, row.node, self.now,
                                           read_inputs, self.window.room)
            sent = message_options({k: v for k, v in json.loads(row.options).items()
                                    if k != "map"})      # the same for every element
            return Released([Dispatch(self.run_id, eid, 1, row.queue, self.workflow, **sent)
                             for eid in ids], [(row.node, ended)] if ended else [])
        released = self.window.release(row.node, self.now)
        if released is None or released[1]:            # lost the race, or held back
            return Released()
        return self._placed(row, released[0].id)

    def _placed(self, row, task_id: int) -> Released:
        """A task just released with a place in the window (``row``: its pending row as
        counted, ``task_id`` its id): published, or waiting for its pools."""
        return self._queued(SimpleNamespace(
            id=task_id, node=row.node, queue=row.queue, options=row.options,
            attempts=row.attempts, pools=row.pools))

    def _queued(self, row) -> Released:
        """A queued task is published, unless it must first wait for a pool slot."""
        if row.pools and not pools.acquire(self.conn, row.id, json.loads(row.pools),
                                           self.now):
            return Released()
        return Released([dispatch_of(self.run_id, self.workflow, row)])

    def top_up(self) -> list[Dispatch]:
        """Held-back tasks take the places free in the run's window (see
        qflow.store.window); nothing to do unless this transaction freed some."""
        if not self.window.stalled:
            return []
        return [d for row in self.window.take_held(self.now) for d in self._queued(row).to_publish]

    def cascade(self, ended: Ended, chosen: dict[str, set[str]] | None = None,
                known: dict[str, str | None] | None = None,
                counted: dict[str, list] | None = None) -> Released:
        """Count each ended task in its children; release or end the children it decides.

        The counter update is one statement per parent (``counted``: nodes counted in
        their children already, with the children's rows: see children.counting_in_children);
        its row locks serialise parents that end at the same moment, so exactly one of
        them sees the last count. Each count is decided on at once, so a child ends as
        soon as its trigger rule settles it; one that ended is never decided again. A
        branch task's children it does not follow are skipped. ``known`` maps nodes to
        their rows' ``children`` column where the caller has it at hand."""
        released: list[Dispatch] = []
        todo = list(ended)
        known = dict(known or {})
        for node, state in todo:                      # todo grows while we walk it
            children = children_of(self.conn, self.run_id, node, known.get(node))
            if not children:
                continue
            rows = (counted or {}).get(node)
            if rows is None:
                rows = count_in_children(self.conn, self.run_id, state, children)
            picked = (chosen or {}).get(node)
            if picked is not None:
                picked = followed(self.conn, self.run_id, picked, children)
            ready = []                                # plain tasks to queue, together
            for child in rows:
                known[child.node] = child.children
                if child.state != S.PENDING:
                    continue
                verdict = verdict_on(child, picked)
                if verdict == S.RUN and not mapping.is_mapped(child.options):
                    ready.append(child)
                    continue
                step = self._decide(child, verdict)
                released += step.to_publish
                todo += step.ended
            released += self._release_ready(ready)
        return Released(released, todo)

    def _release_ready(self, ready: list) -> list[Dispatch]:
        """Queue the plain children a parent's end made ready: one by one as a release
        always was when there is one, in a few statements when there are many."""
        if len(ready) <= 1:
            return [d for child in ready for d in self.release(child).to_publish]
        by_node = {child.node: child for child in ready}
        return [d for row, held in self.window.release_many(list(by_node), self.now)
                if not held for d in self._placed(by_node[row.node], row.id).to_publish]

    def _decide(self, child, verdict: str) -> Released:
        """Release or end one pending child whose parents' counts just changed."""
        if verdict == S.RUN:
            return self.release(child)
        if verdict == S.WAIT:
            return Released()
        values: dict[str, Any] = {"finished_at": self.now}
        if verdict == S.UPSTREAM and mapping.is_expanded(child):
            verdict = S.FAILED          # the map itself failed: say which elements did
            values["error"] = mapping.failed_elements(self.conn, self.run_id, child.node,
                                                      child.expanded)
        if set_task_state(self.conn, self.run_id, child.node, verdict, expect=(S.PENDING,),
                          **values) is None:
            return Released()
        return Released([], [(child.node, verdict)])

    def propagate(self, ended: Ended, chosen: dict[str, set[str]] | None = None
                  ) -> Progress:
        """:meth:`cascade`, then :meth:`settle`."""
        step = self.cascade(ended, chosen)
        after = self.settle(step.ended)
        return Progress(step.to_publish + after.to_publish, after.final)

    def settle(self, ended: Ended) -> Progress:
        """Count ended tasks in the run; if that ended it, :meth:`end` it."""
        totals = count_ended(self.conn, self.run_id, ended)
        return self.end(totals) if totals else Progress()

    def end(self, totals: tuple[int, int]) -> Progress:
        """Give a run whose tasks have all ended its final state, from its (failed,
        canceled) totals. ``final`` is set only if this call ended it; ``to_publish``
        holds the first tasks of a held run that may start in its place."""
        final = S.run_state(*totals)
        ended, room = pools.end_run(self.conn, self.run_id, self.workflow, final, self.now)
        if ended is None:
            return Progress()
        if final in (S.SUCCEEDED, S.FAILED):
            failed = outbox.failed_tasks(self.conn, self.run_id) if final == S.FAILED else []
            first = failed[0] if failed else {}
            outbox.record(self.conn, f"run_{final}", self.run_id, node=first.get("node"),
                          state=final, error=first.get("error"), failed=failed)
        return Progress(self._admit_next(ended.held, room), final)

    def _admit_next(self, held: bool, room: object = pools.ASK) -> list[Dispatch]:
        """This run ended (``held``: before it took a place; ``room``: see next_run): a
        run of its workflow held back by max_active_runs may start."""
        conn = self.conn
        if held:
            conn.execute(update(runs).where(runs.c.id == self.run_id).values(held=False))
        admitted = pools.next_run(conn, self.workflow, was_held=held, room=room)
        return RunWriter(conn, admitted, self.workflow, self.now).start(
            was_held=True).to_publish if admitted else []

    def cancel_open(self, expect: Iterable[str]) -> Released:
        """Cancel the run's tasks in ``expect`` states. Returns the tasks of any run
        admitted to the pool slots they gave back, and the tasks canceled."""
        conn, now = self.conn, self.now
        running = conn.execute(select(tasks.c.id, tasks.c.attempts, tasks.c.worker,
                                      tasks.c.celery_id, tasks.c.started_at).where(
            tasks.c.run_id == self.run_id, tasks.c.state == S.RUNNING)).all() \
            if S.RUNNING in expect else []
        rows = transition(conn, self.run_id, S.CANCELED, expect=tuple(expect),
                          finished_at=now,
                          returning=(tasks.c.id, tasks.c.node, tasks.c.pools, tasks.c.holding))
        if running:                       # the attempts cut short end here, as canceled
            conn.execute(insert(attempts), [dict(
                task_id=r.id, number=r.attempts, state=S.CANCELED, worker=r.worker,
                celery_id=r.celery_id, started_at=r.started_at, finished_at=now,
                error_type="Canceled", error="canceled by `qflow cancel`") for r in running])
        pools.forget_waits(conn, [r.id for r in rows if r.pools and not r.holding])
        self.window.forget_canceled()
        admitted = []
        for r in rows:
            if r.holding:
                admitted += pools.give_back(conn, r.id, json.loads(r.pools), now)
        return Released(dispatch_rows(conn, admitted), [(r.node, S.CANCELED) for r in rows])


def dispatch_rows(conn: Connection, rows: list) -> list[Dispatch]:
    """Messages for task rows of any runs (e.g. admitted to freed pool slots)."""
    names = dict(conn.execute(select(runs.c.id, runs.c.workflow).where(
        runs.c.id.in_({r.run_id for r in rows}))).all()) if rows else {}
    return [dispatch_of(r.run_id, names[r.run_id], r) for r in rows]


def dispatch_of(run_id: str, workflow: str, row) -> Dispatch:
    """The message for a task row's next attempt."""
    return Dispatch(run_id, row.node, row.attempts + 1, row.queue, workflow,
                    **message_options(row.options))
