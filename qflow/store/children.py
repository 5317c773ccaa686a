"""A task's children in the store: finding them, counting an ended parent in them, and
which of them a branch follows."""
from __future__ import annotations

import json
from collections import namedtuple
from typing import Container

from sqlalchemy import (
    CTE,
    Connection,
    ScalarSelect,
    Update,
    bindparam,
    case,
    exists,
    func,
    select,
    update,
)

from qflow.core import states as S
from qflow.store.bulk import in_chunks
from qflow.store.mapping import is_mapped
from qflow.store.models import edges, tasks

_COUNTER = {S.SUCCEEDED: "up_succeeded", S.FAILED: "up_failed",
            S.UPSTREAM_FAILED: "up_failed", S.SKIPPED: "up_skipped", S.CANCELED: "up_skipped"}


# What a child's row says once a parent is counted in it: enough to decide on it and
# release it (see qflow.store.lifecycle.RunWriter.cascade).
_CHILD = (tasks.c.node, tasks.c.state, tasks.c.trigger_rule, tasks.c.queue, tasks.c.options,
          tasks.c.attempts, tasks.c.pools, tasks.c.n_parents, tasks.c.up_succeeded,
          tasks.c.up_failed, tasks.c.up_skipped, tasks.c.children, tasks.c.expanded)
# ``released``: by the statement that counted the parent (see counting_in_children).
Child = namedtuple("Child", [c.name for c in _CHILD] + ["released"], defaults=(False,))


def _count_in_children(counter: str) -> Update:
    column = getattr(tasks.c, counter)
    return (update(tasks)
            .where(tasks.c.run_id == bindparam("b_run_id"),
                   tasks.c.node.in_(bindparam("b_nodes", expanding=True)))
            .values({counter: column + 1})
            .returning(*_CHILD))


_COUNT_IN_CHILDREN = {c: _count_in_children(c) for c in set(_COUNTER.values())}


def count_in_children(conn: Connection, run_id: str, state: str, children: list[str]
                      ) -> list:
    """Count a parent that ended in ``state`` in each of its children, in one statement
    (one per :data:`~qflow.store.bulk.IN_CHUNK` children); returns the children's rows as
    the count left them."""
    statement = _COUNT_IN_CHILDREN[_COUNTER[state]]
    return [row for chunk in in_chunks(children)
            for row in conn.execute(statement, {"b_run_id": run_id, "b_nodes": chunk})]


# The most children a task is counted in by the statement that records its outcome.
FOLDED = 1000


def counting_in_children(ended: CTE, after: CTE, state: str, release: bool = False
                         ) -> ScalarSelect:
    """Count a task that ended in ``state`` in its children (parameter ``k_nodes``, the
    names its row lists: at most :data:`FOLDED`) inside the statement that records its
    outcome (PostgreSQL's data-modifying WITH: a round trip less per parent), once
    ``after`` (the count in its run, which follows the outcome ``ended``) has run: the
    rows are locked in the order they always were, the task's, its run's, its
    children's, so parents ending side by side cannot deadlock. The names are bound, as
    in :func:`count_in_children`: an index lookup each, where names read from the row
    inside the statement let the planner scan the whole run. Returns the children's
    rows as the count left them, a JSON array for :func:`counted_children`.

    With ``release`` (a success, counted in plain children of a run without a window:
    see qflow_tasks.plain_children), a child whose parents have now all succeeded is
    queued by the same statement, at ``k_now``, and comes back ``released``: the row lock
    that makes one parent see the last count makes it the one parent that releases it."""
    column = getattr(tasks.c, _COUNTER[state])
    values, returning = {column: column + 1}, list(_CHILD)
    if release:
        S.check_transition(S.PENDING, S.QUEUED)        # as every state written is
        now = bindparam("k_now", type_=tasks.c.queued_at.type)
        ready = ((tasks.c.state == S.PENDING) & (tasks.c.trigger_rule == "all_success")
                 & tasks.c.pools.is_(None) & (tasks.c.up_succeeded + 1 == tasks.c.n_parents))
        values.update(state=case((ready, S.QUEUED), else_=tasks.c.state),
                      queued_at=case((ready, now), else_=tasks.c.queued_at))
        returning.append(((tasks.c.state == S.QUEUED) & (tasks.c.queued_at == now))
                         .label("released"))
    counted = (update(tasks)
               .where(tasks.c.run_id == bindparam("c_run_id"),
                      tasks.c.node.in_(bindparam("k_nodes", expanding=True)),
                      exists(select(*after.c)))
               .values(values)
               .returning(*returning).cte(f"in_children_{state}"))
    return select(func.json_agg(counted.table_valued())).scalar_subquery()


def counted_children(found: list[dict] | None) -> list:
    """The children's rows :func:`counting_in_children` returned."""
    return [Child(**row) for row in found or ()]


def plain_child(node, needs_pools: Container[str]) -> bool:
    """Whether a new run's task (``node``) runs as soon as its parents all succeeded, with
    nothing more to decide or take: the all_success rule, not mapped, no pool slots
    (``needs_pools``: the nodes that need some). A task whose children all are is marked
    so (qflow_tasks.plain_children): its success releases them in its own statement."""
    return node.trigger_rule == "all_success" and not is_mapped(node.options) \
        and node.id not in needs_pools


def verdict_on(child, picked: set[str] | None) -> str:
    """What a pending child's trigger rule says now that its parents' counts changed
    (skipped if a branch passed it over)."""
    if picked is not None and child.node not in picked:
        return S.SKIPPED
    return S.decide(child.trigger_rule, S.Upstream(
        child.n_parents, child.up_succeeded, child.up_failed, child.up_skipped))


def children_of(conn: Connection, run_id: str, node: str, listed: str | None) -> list[str]:
    """A task's children: from its row's ``children`` column, else from qflow_edges (by
    its own index, not a subquery the planner might join against the whole run)."""
    if listed is not None:
        return json.loads(listed)
    return conn.execute(select(edges.c.child).where(
        edges.c.run_id == run_id, edges.c.parent == node)).scalars().all()


def followed(conn: Connection, run_id: str, picked: set[str], children: list[str]
             ) -> set[str]:
    """What a branch follows: the children it chose and, as Airflow's skip rule does,
    any other child of it downstream of a chosen one (branch -> a -> join plus
    branch -> join, choosing a, runs join once a succeeds). Its other children are
    skipped, whatever their trigger rule."""
    others = set(children) - picked
    if not picked or not others:
        return picked
    return picked | downstream_among(conn, run_id, picked, others)


def downstream_among(conn: Connection, run_id: str, start: set[str], among: set[str]
                     ) -> set[str]:
    """The nodes of ``among`` reachable from ``start`` in a run's graph: one recursive
    query over qflow_edges, which holds every edge of the run."""
    reach = (select(edges.c.child.label("node"))
             .where(edges.c.run_id == run_id, edges.c.parent.in_(start))
             .cte("reach", recursive=True))
    reach = reach.union(select(edges.c.child).join(reach, edges.c.parent == reach.c.node)
                        .where(edges.c.run_id == run_id))
    # Intersected here: ``among`` may be more names than a statement can take.
    return set(conn.execute(select(reach.c.node)).scalars()) & set(among)
