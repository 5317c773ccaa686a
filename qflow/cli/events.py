"""What happened in a run, as events in time order: each attempt's start and end, and the
end of tasks that never ran (skipped, upstream failed, canceled while waiting).

Pure functions over the rows the store reads (`status --json`'s task dicts and the run's
ended attempts), so the progress display can print one line per real event, stamped with
the time it happened rather than the time it was seen.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from qflow.cli.render import oneline, visible
from qflow.core.states import FAILED, RUNNING, TERMINAL

STARTED, RETRYING = "started", "retrying"


@dataclass(frozen=True)
class Event:
    """One thing that happened to one task. ``what`` is ``started``, ``retrying`` (an
    attempt failed and another follows) or the state the task ended in; ``kind`` says
    which row it comes from: an attempt's ``start`` or ``end``, or the task's own ``end``
    (a task that ended without an attempt ending it)."""

    at: dt.datetime
    node: str
    attempt: int
    what: str
    kind: str
    worker: str | None = None
    error: str | None = None
    took: float | None = None

    @property
    def key(self) -> tuple[str, int, str]:
        """Identifies the event across polls (its ``what`` may read differently later)."""
        return self.node, self.attempt, self.kind

    @property
    def ends_task(self) -> bool:
        return self.what not in (STARTED, RETRYING)

    def order(self) -> tuple[dt.datetime, int, str, int]:
        # At the same instant an attempt's end comes first: the tasks it ended without
        # running (one transaction, one time) and the children it released follow it.
        return self.at, _RANK[self.kind], self.node, self.attempt


_RANK = {"end": 0, "task": 1, "start": 2}


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def run_events(tasks: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> list[Event]:
    """Every event of the run so far, in time order. ``tasks`` as in `status --json`;
    ``attempts`` the ended attempts (node, attempt, state, worker, started_at,
    finished_at, error)."""
    by_task = {t["node"]: t for t in tasks}
    events: list[Event] = []
    ended: dict[tuple[str, int], str] = {}
    for a in attempts:
        task = by_task.get(a["node"])
        if task is None:
            continue
        ended[a["node"], a["attempt"]] = a["state"]
        events += _attempt_events(a, task)
    for t in tasks:
        events += _task_events(t, ended)
    return sorted(events, key=Event.order)


def _attempt_events(a: dict[str, Any], task: dict[str, Any]) -> list[Event]:
    start, end = _time(a["started_at"]), _time(a["finished_at"])
    out = []
    if start is not None:
        out.append(Event(start, a["node"], a["attempt"], STARTED, "start", a["worker"]))
    if end is not None:
        what = a["state"]
        final = task["state"] == FAILED and task["attempts"] == a["attempt"]
        if what == FAILED and not final:
            what = RETRYING
        took = (end - start).total_seconds() if start is not None else None
        out.append(Event(end, a["node"], a["attempt"], what, "end", a["worker"], a["error"],
                         took))
    return out


def _task_events(t: dict[str, Any], ended: dict[tuple[str, int], str]) -> list[Event]:
    """The running attempt's start, and the end of a task that no attempt ended (skipped,
    upstream failed, or canceled while it waited)."""
    start, end = _time(t["started_at"]), _time(t["finished_at"])
    if t["state"] == RUNNING and start is not None:
        return [Event(start, t["node"], t["attempts"], STARTED, "start", t["worker"])]
    if t["state"] in TERMINAL and end is not None \
            and ended.get((t["node"], t["attempts"])) != t["state"]:
        return [Event(end, t["node"], t["attempts"], t["state"], "task", None, t["error"])]
    return []


def describe(event: Event) -> tuple[str, str]:
    """The event as (what, detail), e.g. ("failed", " (attempt 2)  ValueError: no")."""
    again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
    if event.what == STARTED:
        where = f" on {visible(event.worker)}" if event.worker else ""
        return STARTED, again + where
    if event.what == RETRYING:
        detail = f" (attempt {event.attempt} failed)"
    elif event.took is not None:
        detail = f"{again} in {event.took:.2f}s"
    else:
        detail = again
    return event.what, detail + (f"  {oneline(event.error)}" if event.error else "")
