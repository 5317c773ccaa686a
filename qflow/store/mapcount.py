"""How many of a mapped node's elements are in each state, from the counters on the map's
own row, without a row per element: the one arithmetic behind the run page of a big run
(:mod:`qflow.store.mapview`) and `qflow status` of one (:mod:`qflow.store.overview`).
Standard library only: `qflow status` reads without SQLAlchemy.

Every element's end increments its map's up_succeeded, up_failed or up_skipped (its
elements are its parents, see :mod:`qflow.store.mapping`), as does the end of each of the
map's own parents. An element has no parents, so it ends only succeeded, failed or
canceled; until then it is queued, running, retrying or sensing, and one that neither
ended nor is moving (running, retrying, sensing: few in the whole DB, ix_qflow_tasks_open)
is queued, or canceled in a run that ended (a cancel ends every open task in one
statement without counting it in its children).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from qflow.core import states as S


def element_id(node: str, i: int) -> str:
    """The id of element ``i`` of mapped node ``node``."""
    return f"{node}[{i}]"

MOVING = (S.RUNNING, S.RETRYING, S.SENSING)
# A parent's end as its child counts it (qflow.store.children._COUNTER).
COUNTED = {S.SUCCEEDED: 0, S.FAILED: 1, S.UPSTREAM_FAILED: 1, S.SKIPPED: 2, S.CANCELED: 2}


def other_parents(links: Iterable[tuple[str, str]], states: dict[str, str],
                  maps: Iterable[str]) -> dict[str, list[str]]:
    """Per map in ``maps``, the states of its parents that are not its elements (the
    ``others`` of :func:`element_counts`): ``links`` are (parent, child) edges, ``states``
    the run's nodes that are not elements by name."""
    found: dict[str, list[str]] = {name: [] for name in maps}
    for parent, child in links:
        if child in found and parent in states:
            found[child].append(states[parent])
    return found


def element_counts(size: int, counters: Iterable[int | None], others: Iterable[str],
                   moving: dict[str, int], ended: bool) -> dict[str, int]:
    """The map's ``size`` elements per state (states in TASK_STATES order, none at 0):
    ``counters`` its row's (up_succeeded, up_failed, up_skipped), ``others`` the states
    of its parents that are not its elements, ``moving`` its elements running, retrying
    or sensing per state, ``ended`` whether the run has ended. A counter below its
    parents' share is read as 0."""
    tally = [n or 0 for n in counters]
    for state in others:
        if state in COUNTED:
            tally[COUNTED[state]] -= 1
    succeeded, failed, canceled = (max(0, n) for n in tally)
    counts = defaultdict(int, {S.SUCCEEDED: succeeded, S.FAILED: failed,
                               S.CANCELED: canceled, **moving})
    counts[S.CANCELED if ended else S.QUEUED] += max(0, size - sum(counts.values()))
    return {state: n for state in S.TASK_STATES if (n := counts.get(state, 0)) > 0}
