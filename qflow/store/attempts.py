"""One attempt's writes: claim a queued task for a worker, then record how it ended and
what that released. The hot path of every task, so each is as few statements as it can
be (one for a claim, one for an outcome without children on PostgreSQL)."""
from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Select,
    Text,
    Update,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    true,
    union_all,
)

from qflow.core import states as S
from qflow.core.dag import REF_KEY, refs_in
from qflow.core.records import Claimed, Dispatch, Finished, Outcome, message_options
from qflow.store import assets, outbox, pools, runinfo
from qflow.store.children import FOLDED, counted_children, counting_in_children
from qflow.store.counts import COUNT_IN_RUN, count_ended, count_params, totals_of
from qflow.store.db import query
from qflow.store.lifecycle import RunWriter, children_of, dispatch_of, dispatch_rows
from qflow.store.models import attempts, edges, runs, tasks
from qflow.store.transitions import (
    inputs_of,
    read_inputs,
    run_transition_stmt,
    set_run_state,
    set_task_state,
    transition_stmt,
    utcnow,
)
from qflow.store.window import Room, hand_back, hand_over, note_waiting, waiting


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
    return None if row is None else _claimed(conn, run_id, node, row)


# By default the claim does not wait for the disk (a flush per task; see claim_durably):
# if a PostgreSQL crash loses it, the task is queued again, its outcome report redoes the
# claim (see _lost_claim), and only a re-send in between can run it twice.
@query(durable=False, autocommit=True, in_doubt=claim_in_doubt)
def claim(conn: Connection, run_id: str, node: str, attempt: int, worker: str,
          celery_id: str | None) -> Claimed | None:
    """Mark ``attempt`` of a queued task running, and its run running if this is its
    first task to start; None if it is not ours to run. On PostgreSQL it also notes
    whether the run's tasks wait for places (qflow.store.window.note_waiting).

    Only an admitted task is claimed (see :func:`_admitted`): a stray, duplicate or
    forged message cannot start a held run, pass a pool or cut a retry delay short.
    """
    now = utcnow()
    stmt, params = transition_stmt(run_id, S.RUNNING, expect=_CLAIMABLE, node=node,
                                   attempt=attempt - 1, attempts=attempt, started_at=now,
                                   finished_at=None, worker=worker, celery_id=celery_id,
                                   returning=_CLAIMED)
    stmt = _admitted(stmt)
    params["c_due"] = now + EARLY
    if conn.dialect.name == "postgresql":    # one statement: claim, run, inputs
        params.update(r_run_id=run_id, r_started_at=now)
        rows = conn.execute(_with_run(stmt), params).all()
        claimed = next((r for r in rows if r.id is not None), None)
        if claimed is None:
            return None
        # Whether the run's tasks wait for places, known before its outcome: a run
        # without a backlog needs no hand-over statement then (see finish).
        note_waiting(run_id, claimed.backlog > 0)
        return _claimed(conn, run_id, node, claimed, claimed,
                        inputs_of(r for r in rows if r.id is None))
    row = conn.execute(stmt, params).first()
    if row is None:
        return None
    set_run_state(conn, run_id, S.RUNNING, expect=(S.QUEUED,), started_at=now)
    return _claimed(conn, run_id, node, row)


@query(durable=True, autocommit=True, in_doubt=claim_in_doubt)
def claim_durably(conn: Connection, run_id: str, node: str, attempt: int, worker: str,
                  celery_id: str | None) -> Claimed | None:
    """:func:`claim`, acknowledged only once it is on disk (``durable_claims = true``): a
    PostgreSQL crash after it returned cannot lose it, so no message can run the attempt
    again while it runs (see README, "Claims and crashes"). Costs a WAL flush per task."""
    return claim(conn, run_id, node, attempt, worker, celery_id)


# A sensor's poke is claimed as its attempt was (see qflow.store.sensing.poke_later).
_CLAIMABLE = (S.QUEUED, S.RETRYING, S.SENSING)
# How early a retry's message may be claimed before its delay is over (Celery's countdown
# and the stored due time come from the same clock; this absorbs rounding).
EARLY = dt.timedelta(seconds=1)


@functools.lru_cache(maxsize=4)
def _admitted(claim_stmt: Update) -> Update:
    """The claim, only for a task that may start now: it holds its pool slots (or needs
    none), it is not held back by its run's dispatch window nor its run by
    max_active_runs, and its retry delay is over."""
    held = exists().where(runs.c.id == tasks.c.run_id, runs.c.held.is_(True))
    return claim_stmt.where(tasks.c.pools.is_(None) | tasks.c.holding.is_(True), ~held,
                            tasks.c.held_back.is_(False),
                            tasks.c.queued_at.is_(None) | (tasks.c.queued_at <= bindparam(
                                "c_due", type_=tasks.c.queued_at.type)))


@functools.lru_cache(maxsize=4)
def _with_run(claim_stmt: Update) -> CompoundSelect:
    """The claim, the run's move to running (if it was queued), the run's workflow,
    params, logical time and backlog, and the task's inputs as one statement (PostgreSQL's
    data-modifying WITH): the claimed row with the run's (its ``id`` set), then a row
    per parent whose value the call takes (``id`` NULL; node, state, result,
    result_ref as qflow.store.transitions.read_inputs reads them). A parent only ordered
    before it is not read, and the claimed row is sent once, not once per parent."""
    row = claim_stmt.cte("claimed")
    started = (run_transition_stmt(S.RUNNING, (S.QUEUED,), ("started_at",))
               .where(exists(select(row.c.id))).cte("started"))
    parent = tasks.alias("parent")
    # The call's JSON is searched as text for the reference as json.dumps writes it, not
    # parsed (a literal NaN in a call, which json.dumps writes, is no JSON to PostgreSQL),
    # and only a short call: a search per parent through a long one (a join of a thousand
    # parents) took a second. A reference not found so (a long call, a node id json.dumps
    # escapes) is read by _inputs as before.
    takes = (func.length(row.c.call) <= _SEARCHED) & (func.strpos(
        row.c.call, _REFERS + cast(func.to_json(edges.c.parent), Text)) > 0)
    link = and_(edges.c.run_id == bindparam("r_run_id"), edges.c.child == bindparam("t_node"),
                takes)
    claim = [*row.c, runs.c.workflow, runs.c.params, runs.c.logical_time, runs.c.backlog,
             runs.c.dispatch_window]
    inputs = [parent.c.node, parent.c.state, parent.c.result, parent.c.result_ref]
    return union_all(
        select(*claim, *_nulls(inputs))
        .select_from(row.join(runs, runs.c.id == bindparam("r_run_id"))),
        select(*_nulls(claim), *inputs)
        .select_from(row.join(edges, link).join(parent, and_(
            parent.c.run_id == edges.c.run_id, parent.c.node == edges.c.parent)))
    ).add_cte(started)


def _nulls(columns: list) -> list:
    """NULLs standing for ``columns`` in the other rows of a UNION."""
    return [null().cast(c.type).label(c.name) for c in columns]


# How a reference to a parent starts in a call's JSON (see qflow.core.dag.refs_in).
_REFERS = literal(json.dumps({REF_KEY: ""})[1:-3], Text)
_SEARCHED = literal_column("2000")      # characters of a call searched for references


_CLAIMED = (tasks.c.id, tasks.c.task, tasks.c.call, tasks.c.options, tasks.c.children,
            tasks.c.pools, tasks.c.first_attempt, tasks.c.plain_children)


def _claimed(conn: Connection, run_id: str, node: str, row, run=None,
             inputs: dict | None = None) -> Claimed:
    """What a worker needs to run a task row it claimed (``run``: the run's info, and
    ``inputs`` its parents' values, when the claim read them already; only then is it
    known whether its run has a window, else it is taken to have one)."""
    unbounded = run is not None and run.dispatch_window is None
    if run is None:
        run = runinfo.of(conn, run_id)
    else:                               # read by the claim: the outcome need not read it
        runinfo.keep(run_id, run)
    call, options = json.loads(row.call), json.loads(row.options or "{}")
    children = (tuple(sorted(children_of(conn, run_id, node, row.children)))
                if options.get("branch") else None)
    listed = None if row.children is None else tuple(json.loads(row.children))
    own = not row.pools and "outlets" not in options
    return Claimed(row.id, row.task, call, options, run.workflow, json.loads(run.params),
                   run.logical_time, _inputs(conn, run_id, call, inputs),
                   alone=listed == () and own, children=children, listed=listed,
                   first_attempt=row.first_attempt or 1,
                   releases=bool(listed) and len(listed) <= FOLDED and own and unbounded
                   and row.plain_children and not options.get("branch"))


def _inputs(conn: Connection, run_id: str, call: dict, found: dict | None) -> dict:
    """The values of the parents ``call`` takes: ``found`` by the claim, unless some are
    missing there (a map's element takes values of nodes it has no edge from)."""
    if found is not None and refs_in(call) <= found.keys():
        return found
    return read_inputs(conn, run_id, call)


def finishes_alone(claimed: Claimed, outcome: Outcome, fail_fast: bool,
                   outboxed: frozenset[str] = frozenset()) -> bool:
    """Whether recording this outcome is a single statement (no children to count, or a
    success that releases its children in that statement, see :func:`finish`; no pool
    slots to give back, no fail_fast cancellation, no alert to write with it in
    ``outboxed``): then :func:`finish_one`, which needs no transaction, records it."""
    return ((claimed.alone or releasing(claimed, outcome))
            and not (fail_fast and outcome.state == S.FAILED)
            and _EVENT[outcome.state] not in outboxed)


def releasing(claimed: Claimed | None, outcome: Outcome) -> bool:
    """Whether this outcome's own statement releases the children it makes ready."""
    return claimed is not None and claimed.releases and outcome.state == S.SUCCEEDED \
        and outcome.chosen is None


_EVENT = {S.SUCCEEDED: "task_succeeded", S.FAILED: "task_failed", S.RETRYING: "task_retry"}


@query(patient=True)
def finish(conn: Connection, run_id: str, node: str, attempt: int, outcome: Outcome,
           fail_fast: bool = False, top_up: bool = True, hand_on: bool = False,
           children: tuple[str, ...] | None = None, release: bool = False
           ) -> Finished | None:
    """Record an attempt's outcome, release the children it makes ready and count what
    ended in the run.

    None when the report is stale (the task no longer runs this attempt), so a
    redelivered message or a presumed-dead worker's late report changes nothing. The
    task counts itself on its run's row in the outcome's own statement (PostgreSQL);
    tasks ended on the way (skipped, canceled) are counted last. The place it held in
    its run's dispatch window goes to a held-back task here, or, without ``top_up``
    (outside a transaction), in :func:`~qflow.store.lifecycle.top_up` after it. With
    ``hand_on`` (a worker that runs the task it is handed itself, see
    qflow.engine.dispatch.Follow) the place goes at once to the next held-back task,
    taken first so that the run's row stays locked for as short a time as before.
    ``children``: the children its row lists (Claimed.listed), counted by the outcome's
    own statement on PostgreSQL if there are few (see _end_attempt), which with
    ``release`` (see :func:`releasing`) also queues those its success makes ready: then
    the outcome is that one statement, nothing else to write.
    """
    now = utcnow()
    handed = hand_over(conn, run_id, now) if hand_on and outcome.state != S.RETRYING \
        and waiting(run_id) is not False else None
    # Unless fail_fast cancels the children first (see below).
    fold = children if children and len(children) <= FOLDED and not (
        fail_fast and outcome.state == S.FAILED) else None
    release = bool(release and fold and outcome.state == S.SUCCEEDED)
    ending = (conn, run_id, node, attempt, outcome, now, handed is not None, fold, release)
    found = _end_attempt(*ending)
    if found is None and _lost_claim(conn, run_id, node, attempt, now):
        found = _end_attempt(*ending)
    if found is None:
        if handed is not None:
            hand_back(conn, run_id, handed.id, counted=False)
        return None
    outbox.record(conn, _EVENT[outcome.state], run_id, node, attempt, state=outcome.state,
                  error=outcome.short_error)
    row, counted, child_rows = found
    if outcome.state == S.SUCCEEDED and row.options and '"outlets"' in row.options:
        assets.record_updates(conn, json.loads(row.options)["outlets"], run_id, node, now)
    workflow = runinfo.of(conn, run_id).workflow
    if outcome.state == S.RETRYING:
        again = Dispatch(run_id, node, attempt + 1, row.queue, workflow,
                         countdown=outcome.retry_in or 0.0, **message_options(row.options))
        return Finished(workflow, [again])
    totals = totals_of(counted)
    room = Room.of(counted)
    if handed is not None and room.size is not None and room.in_flight > room.size:
        hand_back(conn, run_id, handed.id, counted=True)     # the window shrank meanwhile
        room.in_flight, room.backlog, handed = room.in_flight - 1, room.backlog + 1, None
    writer = RunWriter(conn, run_id, workflow, now, room)
    ended = [(node, outcome.state)]
    freed = dispatch_rows(conn, pools.give_back(conn, row.id, json.loads(row.pools), now)
                          ) if row.holding else []
    if outcome.state == S.FAILED and fail_fast:
        canceled = writer.cancel_open((S.PENDING, S.QUEUED, S.RETRYING, S.SENSING))
        ended += canceled.ended
        freed += canceled.to_publish
    chosen = {node: set(outcome.chosen)} if outcome.chosen is not None else {}
    step = writer.cascade(ended, chosen, {node: row.children},
                          None if child_rows is None else {node: child_rows})
    if step.ended[1:]:                # the task itself was counted with its outcome
        totals = count_ended(conn, run_id, step.ended[1:])
    if handed is not None and not (handed.pools and not pools.acquire(
            conn, handed.id, json.loads(handed.pools), now)):   # else it waits for them
        freed += [dispatch_of(run_id, workflow, handed)]
    queued = [dispatch_of(run_id, workflow, c) for c in child_rows or () if c.released]
    released = freed + queued + step.to_publish + (writer.top_up() if top_up else [])
    note_waiting(run_id, writer.window.room.backlog > 0)
    return Finished(workflow, released, totals, top_up=writer.window.stalled)


def _lost_claim(conn: Connection, run_id: str, node: str, attempt: int,
                now: dt.datetime) -> bool:
    """Redo the claim of an attempt that reports an outcome while its row shows it was
    never claimed (queued, one attempt behind). A claim is committed without waiting for
    the disk (see :func:`claim`), so a PostgreSQL crash can lose it after its task ran;
    the report proves the attempt ran, and recording it keeps the task from running
    twice. (The outcome's commit waits for the disk, and the WAL is written in order: once
    an outcome is durable, so is the claim before it.)"""
    return set_task_state(conn, run_id, node, S.RUNNING, expect=_CLAIMABLE,
                          attempt=attempt - 1, attempts=attempt, started_at=now,
                          finished_at=None) is not None


@query(autocommit=True, patient=True)
def finish_one(conn: Connection, run_id: str, node: str, attempt: int, outcome: Outcome,
               fail_fast: bool = False, children: tuple[str, ...] | None = None,
               release: bool = False) -> Finished | None:
    """:func:`finish` for an outcome that :func:`finishes_alone`: each statement commits
    on its own (PostgreSQL), saving the BEGIN and COMMIT round trips; a top-up of its
    run's window, which needs one, is left to the caller (``Finished.top_up``)."""
    return finish(conn, run_id, node, attempt, outcome, fail_fast,
                  top_up=conn.dialect.name != "postgresql", children=children,
                  release=release)


def _end_attempt(conn: Connection, run_id: str, node: str, attempt: int, outcome: Outcome,
                 now: dt.datetime, handed: bool = False, fold: tuple[str, ...] | None = None,
                 release: bool = False) -> tuple[Any, Any, list | None] | None:
    """Write the outcome on the task row (if it still runs ``attempt``) and the attempt's
    own row, written once when the attempt ends, and, unless it will be retried, count the
    task as ended in its run (and give back its place in the run's window, or, if
    ``handed``, count it as moved to a held-back task) and in the children ``fold`` names
    (qflow.store.children.counting_in_children; with ``release`` it queues those now
    ready): one statement on PostgreSQL. Returns the task row, the run's counters as that
    count left them (None if not counted) and the children's rows as their count left
    them (None if not counted here), or None for a stale report.
    """
    retrying = outcome.state == S.RETRYING
    count = not retrying
    places = (0, 1) if handed else (1, 0)       # (freed, handed): see count_params
    due = {"queued_at": now + dt.timedelta(seconds=outcome.retry_in or 0)} if retrying else {}
    ended, params = transition_stmt(run_id, outcome.state, expect=(S.RUNNING,), node=node,
                                    attempt=attempt, finished_at=None if retrying else now,
                                    result=outcome.result, result_ref=outcome.result_ref,
                                    error=outcome.short_error, **due,
                                    returning=_ENDED)
    values = dict(number=attempt, state=S.FAILED if retrying else outcome.state,
                  finished_at=now, error_type=outcome.error_type, error=outcome.error,
                  traceback=outcome.traceback, log=outcome.log)
    if conn.dialect.name == "postgresql":
        params.update({f"a_{k}": v for k, v in values.items()})
        if count:
            params.update(count_params(run_id, [(node, outcome.state)], *places))
        folded = outcome.state if count and fold else None
        if folded:
            params["k_nodes"] = list(fold)
        if release:
            params["k_now"] = now
        row = conn.execute(_with_attempt(ended, count, folded, release), params).first()
        if row is None:
            return None
        return row, row if count else None, counted_children(row.kids) if folded else None
    row = conn.execute(ended, params).first()
    if row is None:
        return None
    conn.execute(insert(attempts).values(task_id=row.id, worker=row.worker,
                                         celery_id=row.celery_id, started_at=row.started_at,
                                         **values))
    return row, conn.execute(COUNT_IN_RUN, count_params(
        run_id, [(node, outcome.state)], *places)).one() if count else None, None


@functools.lru_cache(maxsize=32)
def _with_attempt(ended: Update, count: bool, folded: str | None = None,
                  release: bool = False) -> Select:
    """``ended`` (an UPDATE of one task row), the INSERT of its attempt's row and, with
    ``count``, the run's count and, with ``folded`` (the state it ended in), the count in
    its children (column ``kids``; with ``release``, their release) as one statement
    (PostgreSQL's data-modifying WITH), built once per outcome state."""
    row = ended.cte("outcome")
    cols = {"task_id": row.c.id, "worker": row.c.worker, "celery_id": row.c.celery_id,
            "started_at": row.c.started_at,
            **{k: bindparam(f"a_{k}", type_=attempts.c[k].type) for k in _ATTEMPT}}
    write = insert(attempts).from_select(list(cols), select(*cols.values()))
    if not count:
        return select(row).add_cte(write.cte("attempt"))
    run = COUNT_IN_RUN.where(exists(select(row.c.id))).cte("counted")
    kids = [] if folded is None else [
        counting_in_children(row, run, folded, release).label("kids")]
    return (select(row, *run.c, *kids).select_from(row.join(run, true()))
            .add_cte(write.cte("attempt")))


_ATTEMPT = ("number", "state", "finished_at", "error_type", "error", "traceback", "log")
_ENDED = (tasks.c.id, tasks.c.queue, tasks.c.options, tasks.c.pools, tasks.c.holding,
          tasks.c.children, tasks.c.started_at, tasks.c.worker, tasks.c.celery_id)
