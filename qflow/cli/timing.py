"""Where a run's time went: task durations, the slowest tasks and the critical path.

Pure functions over the dicts `status --json` prints (standard library only).
"""
from __future__ import annotations

import datetime as dt
import heapq
from typing import Any

from qflow.core.durations import parse_duration


def seconds(start: str | None, end: str | None) -> float | None:
    """Seconds between two ISO times, or None if either is missing."""
    if not start or not end:
        return None
    delta = dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)
    return round(delta.total_seconds(), 3)


def critical_path(tasks: list[dict[str, Any]], edges: list[tuple[str, str]]) -> list[str]:
    """The chain of tasks that decided when the run ended, first to last.

    It starts at the task that finished last and steps back, each time to the parent that
    finished last (the one that released it), until a task without finished parents.
    """
    finished = {t["node"]: t["finished_at"] for t in tasks
                if t["finished_at"] and t["started_at"]}
    if not finished:
        return []
    parents: dict[str, list[str]] = {}
    for parent, child in edges:
        parents.setdefault(child, []).append(parent)
    node = max(finished, key=lambda n: finished[n])
    path = [node]
    while True:
        done = [p for p in parents.get(node, []) if p in finished]
        if not done:
            return path[::-1]
        node = max(done, key=lambda n: finished[n])
        path.append(node)


def summary(run: dict[str, Any], edges: list[tuple[str, str]], top: int = 5,
            took: dict[str, float] | None = None) -> dict[str, Any]:
    """Run duration, its critical path (with the time its tasks ran) and the slowest tasks.
    ``took``: the seconds each task that started and ended ran, if the caller has them
    (:func:`qflow.store.read.task_rows` does), in task order; computed from the tasks'
    times otherwise."""
    tasks = run.get("tasks", [])
    if took is None:
        parse = dt.datetime.fromisoformat   # inline, not seconds(): a run may have 100,000
        took = {t["node"]: round((parse(t["finished_at"]) - parse(t["started_at"]))
                                 .total_seconds(), 3)
                for t in tasks if t["started_at"] and t["finished_at"]}
    path = critical_path(tasks, edges)
    # The longest first, ties in task order (nlargest is a stable sort's first ``top``).
    ran = heapq.nlargest(top, took.items(), key=lambda item: item[1])
    return {"duration_seconds": seconds(run["started_at"], run["finished_at"]),
            "critical_path": path,
            "critical_path_seconds": round(sum(took.get(n, 0) for n in path), 3),
            "slowest": [{"node": n, "seconds": s} for n, s in ran]}




def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """A time given as an age (``30m``, ``2h``, ``7d``: that long before ``now``) or in
    ISO 8601 (a date, or a date and time; without an offset it is UTC). Naive UTC out."""
    text = text.strip()
    try:
        return _naive_utc(now) - dt.timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return _naive_utc(dt.datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{text!r} is neither an age like 30m, 2h or 7d nor an ISO date "
                         "or time") from None


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
