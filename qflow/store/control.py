"""Operator actions on a whole run: cancel it, or resume it in place."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from sqlalchemy import Connection, select, update

from qflow.core import states as S
from qflow.core.dag import topological_order
from qflow.core.records import Dispatch
from qflow.errors import UserError
from qflow.store import mapping, pools, window
from qflow.store.db import query
from qflow.store.lifecycle import RunWriter, dispatch_rows
from qflow.store.models import edges, runs, tasks
from qflow.store.transitions import count_tasks, set_run_state, set_task_state, utcnow


@dataclass(frozen=True)
class Canceled:
    """A canceled run: the Celery ids of the attempts that were running, to revoke, and
    tasks of other runs admitted to the pool slots it gave back (or a held run admitted
    in its place), to publish."""

    run_state: str | None
    running: list[str]
    admitted: list[Dispatch]


def _run_row(conn: Connection, run_id: str):
    row = conn.execute(select(runs.c.id, runs.c.workflow, runs.c.state, runs.c.unsigned)
                       .where(runs.c.id == run_id)).first()
    if row is None:
        raise UserError(f"unknown run {run_id!r}")
    return row


@query()
def cancel_run(conn: Connection, run_id: str) -> Canceled:
    """Cancel every task that has not ended; the run ends once none is left."""
    run = _run_row(conn, run_id)
    if run.state not in (S.QUEUED, S.RUNNING):
        raise UserError(f"run {run_id} has already ended ({run.state}); nothing to cancel")
    running = [r.celery_id for r in conn.execute(
        select(tasks.c.celery_id).where(tasks.c.run_id == run_id, tasks.c.state == S.RUNNING))
        if r.celery_id]
    writer = RunWriter(conn, run_id, run.workflow)
    canceled = writer.cancel_open(S.ACTIVE)
    settled = writer.settle(canceled.ended)
    return Canceled(settled.final, running, canceled.to_publish + settled.to_publish)


_AGAIN = (S.FAILED, S.CANCELED, S.UPSTREAM_FAILED)


@query()
def resume_run(conn: Connection, run_id: str, from_node: str | None = None,
               signed: bool = False) -> list[Dispatch]:
    """Re-run a run's failed, canceled and upstream-failed tasks (and ``from_node``) and
    everything downstream of them; succeeded tasks upstream keep their results.

    ``signed``: the resuming process signs its messages (see :func:`_check_signing`)."""
    run = _run_row(conn, run_id)
    allowed = (S.FAILED, S.CANCELED) + ((S.SUCCEEDED,) if from_node else ())
    if run.state not in allowed:
        hint = "" if run.state != S.SUCCEEDED else " (use --from NODE to re-run part of it)"
        raise UserError(f"run {run_id} is {run.state}; only a failed or canceled run can be "
                        f"retried{hint}")
    _check_signing(conn, run, signed)
    rows, pairs = _graph(conn, run_id)
    if from_node is not None and from_node not in rows:
        raise UserError(f"run {run_id} has no node {from_node!r}")
    start = {n for n, r in rows.items() if r.state in _AGAIN} | (
        {from_node} if from_node else set())
    if _unexpand_stale_maps(conn, run_id, rows, pairs, _downstream(start, pairs)):
        rows, pairs = _graph(conn, run_id)
        start &= set(rows)
    reset = _downstream(start, pairs)
    window.reset(conn, run_id)
    writer = RunWriter(conn, run_id, run.workflow)
    released: list[Dispatch] = []
    ended: list[tuple[str, str]] = []
    for node in topological_order(rows, pairs):
        if node not in reset:
            continue
        verdict = _reset(conn, run_id, rows[node], pairs, rows, reset)
        if verdict == S.RUN:
            step = writer.release(rows[node])
            released += step.to_publish
            ended += step.ended
        elif verdict != S.WAIT:       # its kept parents settle it already (e.g. skipped)
            set_task_state(conn, run_id, node, verdict, expect=(S.PENDING,),
                           finished_at=writer.now)
            rows[node].state = verdict
            ended.append((node, verdict))
    if ended:
        released += writer.propagate(ended).to_publish
    _recount(conn, run_id, run.state, writer.now)
    return released


def _check_signing(conn: Connection, run, signed: bool) -> None:
    """A resume is a new order to run tasks, given by the resuming process. One that does
    not sign may not resume a run whose creator did: its messages would be refused, and
    the run's record (signed) would let signing workers' reconcilers send them again,
    signed, on its behalf. A signing process's resume makes the run signed from now on."""
    if not signed and not run.unsigned:
        raise UserError(f"run {run.id} was created with message signing: retry it with "
                        "security_key, security_certificate and security_cert_store set "
                        "(workers refuse unsigned messages)")
    if signed and run.unsigned:
        conn.execute(update(runs).where(runs.c.id == run.id).values(unsigned=False))


def _graph(conn: Connection, run_id: str):
    rows = {r.node: SimpleNamespace(**r._mapping) for r in conn.execute(
        select(tasks.c.id, tasks.c.node, tasks.c.state, tasks.c.trigger_rule, tasks.c.queue,
               tasks.c.options, tasks.c.attempts, tasks.c.n_parents, tasks.c.pools,
               tasks.c.expanded)
        .where(tasks.c.run_id == run_id))}
    pairs = [(e.parent, e.child) for e in conn.execute(
        select(edges.c.parent, edges.c.child).where(edges.c.run_id == run_id))]
    return rows, pairs


def _unexpand_stale_maps(conn, run_id, rows, pairs, reset) -> bool:
    """A mapped node whose input is re-run must expand again: drop its elements."""
    changed = False
    for node in reset:
        if not mapping.is_expanded(rows[node]):
            continue
        elements = set(mapping.element_ids(node, rows[node].expanded))
        inputs = [p for p, c in pairs if c == node and p not in elements]
        if any(p in reset for p in inputs):
            mapping.unexpand(conn, run_id, node, rows[node].expanded, rows[node].n_parents)
            changed = True
    return changed


def _downstream(start: set[str], pairs: list[tuple[str, str]]) -> set[str]:
    children: dict[str, list[str]] = {}
    for parent, child in pairs:
        children.setdefault(parent, []).append(child)
    seen, stack = set(start), list(start)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _reset(conn, run_id, row, pairs, rows, reset) -> str:
    """Put one task back to pending, counting its kept parents; returns what its trigger
    rule decides from them (run, wait, or how it ends)."""
    kept = [rows[p].state for p, c in pairs if c == row.node and p not in reset]
    up = S.Upstream(row.n_parents, kept.count(S.SUCCEEDED),
                    sum(s in (S.FAILED, S.UPSTREAM_FAILED) for s in kept),
                    sum(s in (S.SKIPPED, S.CANCELED) for s in kept))
    set_task_state(conn, run_id, row.node, S.PENDING, expect=(row.state,),
                   up_succeeded=up.succeeded, up_failed=up.failed, up_skipped=up.skipped,
                   result=None, result_ref=None, error=None, finished_at=None, queued_at=None,
                   first_attempt=row.attempts + 1)      # retries count from here again
    row.state = S.PENDING
    return S.decide(row.trigger_rule, up)


def _recount(conn: Connection, run_id: str, was: str, now) -> None:
    """Recompute the resumed run's counters from its tasks; it runs again unless they
    all ended already (``was``: its state before the resume)."""
    left = count_tasks(conn, run_id, *S.ACTIVE)
    failed = count_tasks(conn, run_id, S.FAILED, S.UPSTREAM_FAILED)
    canceled = count_tasks(conn, run_id, S.CANCELED)
    conn.execute(update(runs).where(runs.c.id == run_id).values(
        tasks_left=left, tasks_failed=failed, tasks_canceled=canceled))
    final = S.run_state(failed, canceled) if left == 0 else S.RUNNING
    if final != was:
        set_run_state(conn, run_id, final, expect=(was,), finished_at=None if left else now)


@query()
def set_pool(conn: Connection, name: str, slots: int) -> list[Dispatch]:
    """Create or resize a pool; returns the waiting tasks its new slots admit."""
    return dispatch_rows(conn, pools.set_slots(conn, name, slots, utcnow()))
