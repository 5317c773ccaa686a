"""Dispatch windows sized from the live workers (``dispatch_window = "auto"``).

A run sized this way stores its queues (``qflow_runs.window_queues``) and a size, which
the rest of bounded dispatch (qflow.store.window) reads from the run's row as it reads a
fixed one: sizing adds no statement to a task's claim, outcome or top-up. The size is
computed when the run is created, from the workers that heartbeat into the DB (each
records its queues and its pool's processes), read at most once per
:data:`CACHE_SECONDS` per process; then every worker's reconciler brings the open runs'
sizes in line with the workers alive (:func:`resize`), and a run whose window grew gets
its held-back tasks sent by the reconciler's top-up if no outcome comes first. A window
that shrinks below what is already out sends nothing more until enough of it ends: no
message is taken back.
"""
from __future__ import annotations

import threading
import time
from operator import attrgetter

from sqlalchemy import Connection, bindparam, select, update

from qflow.core import states as S
from qflow.core.dag import Graph
from qflow.core.sizing import AutoWindow, slots_for
from qflow.store.db import query
from qflow.store.liveness import live_workers
from qflow.store.mapping import is_mapped
from qflow.store.models import runs

CACHE_SECONDS = 5.0       # how stale a new run's view of the workers may be


class _Seen:
    """The live workers as this process last read them, per database."""

    def __init__(self):
        self.lock = threading.Lock()
        self.found: dict[str, tuple[float, list[tuple[str, int | None]]]] = {}

    def workers(self, conn: Connection, within: float) -> list[tuple[str, int | None]]:
        key = conn.engine.url.render_as_string()
        with self.lock:
            at, found = self.found.get(key, (float("-inf"), []))
        if time.monotonic() - at > CACHE_SECONDS:
            found = live_workers(conn, within)
            with self.lock:
                self.found[key] = (time.monotonic(), found)
        return found


_SEEN = _Seen()


def at_start(conn: Connection, window: int | AutoWindow | None, graph: Graph
             ) -> tuple[int | None, str | None]:
    """A new run's window size (None: no bound) and, if it follows the live workers, the
    queues it follows (its tasks'). A run that can never have more tasks than its window
    holds (no map to grow it, no more tasks than the least size the window can take) is
    not bounded: nothing is counted for it then."""
    if window is None or _never_full(graph, window):
        return None, None
    if not isinstance(window, AutoWindow):
        return window, None
    queues = window.queues_of(set(map(attrgetter("queue"), graph.nodes.values())))
    return window.size(slots_for(queues, _SEEN.workers(conn, window.live_within))), queues


def _never_full(graph: Graph, window: int | AutoWindow) -> bool:
    least = window.least if isinstance(window, AutoWindow) else window
    return len(graph.nodes) <= least and not any(
        is_mapped(node.options) for node in graph.nodes.values())


@query(durable=False)       # a resize lost in a crash is made again at the next beat
def resize(conn: Connection, window: AutoWindow) -> int:
    """Give each open run sized by the live workers the size they make now; returns how
    many runs changed. Rows are written in id order, so reconcilers running at once
    wait for one another instead of deadlocking."""
    found = conn.execute(select(runs.c.id, runs.c.window_queues, runs.c.dispatch_window)
                         .where(runs.c.state.in_((S.QUEUED, S.RUNNING)),
                                runs.c.window_queues.is_not(None))).all()
    if not found:
        return 0
    live = live_workers(conn, window.live_within)
    changed = sorted((run.id, size) for run in found if run.dispatch_window != (
        size := window.size(slots_for(run.window_queues, live))))
    if changed:
        conn.execute(update(runs).where(runs.c.id == bindparam("r_id"))
                     .values(dispatch_window=bindparam("r_size")),
                     [{"r_id": run_id, "r_size": size} for run_id, size in changed])
    return len(changed)
