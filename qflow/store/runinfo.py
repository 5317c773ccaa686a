"""What never changes about a run (workflow, params, logical time), kept per process: the
claim and the outcome of every task need it, and reading it each time is a round trip."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from qflow.store.models import runs


class Run(NamedTuple):
    workflow: str
    params: str
    logical_time: Any


SIZE = 4096             # runs kept, the least recently used forgotten first
_KEPT: OrderedDict[str, Run] = OrderedDict()


def of(conn: Connection, run_id: str) -> Run:
    """The run's workflow, params and logical time, read once."""
    found = _KEPT.get(run_id)
    if found is not None:
        _KEPT.move_to_end(run_id)
        return found
    row = conn.execute(select(runs.c.workflow, runs.c.params, runs.c.logical_time)
                       .where(runs.c.id == run_id)).one()
    return keep(run_id, row)


def keep(run_id: str, row) -> Run:
    """Keep what a statement read with other things (``row``: with ``workflow``,
    ``params`` and ``logical_time``), so that :func:`of` need not read it."""
    found = _KEPT.get(run_id)
    if found is None:
        found = _KEPT[run_id] = Run(row.workflow, row.params, row.logical_time)
        if len(_KEPT) > SIZE:
            _KEPT.popitem(last=False)
    return found
