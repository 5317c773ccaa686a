"""The run's counters of open, failed and canceled tasks, kept by one statement per
change, so that ending a run never needs a scan of its tasks."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, case, update

from qflow.core import states as S
from qflow.store.models import runs

Ended = list[tuple[str, str]]          # (node, state) of tasks that just ended


def count_ended(conn: Connection, run_id: str, ended: Ended) -> tuple[int, int] | None:
    """Decrement the run's open-task counter in one statement; the update that reaches 0
    ends the run: it returns the run's (failed, canceled) totals for
    :meth:`qflow.store.lifecycle.RunWriter.end`."""
    return totals_of(conn.execute(COUNT_IN_RUN, count_params(run_id, ended)).one())


def count_params(run_id: str, ended: Ended, freed: int = 0, handed: int = 0
                 ) -> dict[str, Any]:
    """``freed``: how many of ``ended`` held a place in the run's dispatch window (the
    tasks that ran; see qflow.store.window) and gave it back; ``handed``: how many gave
    theirs to a held-back task instead (qflow.store.window.hand_over), which no longer
    waits."""
    return {"c_run_id": run_id, "c_ended": len(ended), "c_freed": freed, "c_handed": handed,
            "c_failed": sum(state in (S.FAILED, S.UPSTREAM_FAILED) for _, state in ended),
            "c_canceled": sum(state == S.CANCELED for _, state in ended)}


def totals_of(row) -> tuple[int, int] | None:
    return (row.tasks_failed, row.tasks_canceled) if row.tasks_left == 0 else None


# The places given back are counted only in a run with a window: one without counts none
# taken. The row comes back with the window's counters, for the top-up they may call for.
COUNT_IN_RUN = (update(runs).where(runs.c.id == bindparam("c_run_id"))
                .values(tasks_left=runs.c.tasks_left - bindparam("c_ended"),
                        tasks_failed=runs.c.tasks_failed + bindparam("c_failed"),
                        tasks_canceled=runs.c.tasks_canceled + bindparam("c_canceled"),
                        in_flight=runs.c.in_flight - case(
                            (runs.c.dispatch_window.is_(None), 0),
                            else_=bindparam("c_freed")),
                        backlog=runs.c.backlog - bindparam("c_handed"))
                .returning(runs.c.tasks_left, runs.c.tasks_failed, runs.c.tasks_canceled,
                           runs.c.dispatch_window, runs.c.in_flight, runs.c.backlog))
