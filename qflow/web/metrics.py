"""/qflow/metrics: runs, tasks, durations, scheduler lag and worker heartbeats in
Prometheus' text format (version 0.0.4), behind the same login as the rest.

``qflow_task_duration_seconds`` counts the attempts that ended since this server started
(as any Prometheus counter, it starts again from zero with the process): each scrape
reads the attempts added since the previous one and those it saw running, by primary
key, never the whole table.
"""
from __future__ import annotations

import datetime as dt
import math
import threading
from typing import Any, Iterable

from qflow import authoring
from qflow.core import schedule as sched
from qflow.engine.scheduler import from_store, to_store
from qflow.store import Store, schedules
from qflow.store import metrics as q
from qflow.web.auth import QflowHandler, WebSettings

BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, math.inf)
OPEN_STATES = ("queued", "running", "retrying")


def _label(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, labels: dict[str, Any], value: float) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    number = "+Inf" if value == math.inf else repr(float(value))
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def _family(name: str, kind: str, help_: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]


class Collector:
    """One server's metrics; keeps the duration histogram between scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._after: int | None = None          # attempts up to this id were looked at
        self._open: set[int] = set()            # ... except these, still running then
        self._hist: dict[str, list[float]] = {}  # state -> bucket counts, then sum

    def scrape(self, store: Store, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.timezone.utc)
        with self._lock, store.read() as conn:
            run_counts = q.runs_by_state(conn)
            open_tasks = q.open_tasks_by_queue(conn, OPEN_STATES)
            self._observe(conn)
            lag = _scheduler_lag(conn, now)
            beats = q.heartbeats(conn)
            hist = {state: list(counts) for state, counts in self._hist.items()}
        lines = _family("qflow_runs", "gauge", "Runs in the results DB by workflow and state.",
                        (_line("qflow_runs", {"workflow": w, "state": s}, n)
                         for w, s, n in run_counts))
        lines += _family("qflow_tasks", "gauge", "Tasks queued, running or waiting to retry, "
                         "by queue.", (_line("qflow_tasks", {"queue": qu or "", "state": s}, n)
                                       for qu, s, n in open_tasks))
        lines += _histogram(hist)
        lines += _family("qflow_scheduler_lag_seconds", "gauge", "How long the oldest due "
                         "scheduled run has waited to be created (0: none due).",
                         (_line("qflow_scheduler_lag_seconds", {"workflow": w}, s)
                          for w, s in lag))
        lines += _family("qflow_worker_last_heartbeat_timestamp_seconds", "gauge",
                         "Unix time of each worker process's last heartbeat.",
                         (_line("qflow_worker_last_heartbeat_timestamp_seconds",
                                {"worker": name}, _unix(seen)) for name, seen in beats))
        return "\n".join(lines) + "\n"

    def _observe(self, conn: Any) -> None:
        if self._after is None:                 # first scrape: count from now on
            self._after = q.last_attempt_id(conn)
            self._open = set(q.running_attempt_ids(conn))
            return
        for attempt_id, state, started, finished in q.attempt_spans(
                conn, self._after, sorted(self._open)):
            self._after = max(self._after, attempt_id)
            if finished is None:
                self._open.add(attempt_id)
                continue
            self._open.discard(attempt_id)
            seconds = max(0.0, (finished - started).total_seconds()) if started else 0.0
            counts = self._hist.setdefault(state, [0.0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                counts[i] += seconds <= bound
            counts[-1] += seconds


def _histogram(hist: dict[str, list[float]]) -> list[str]:
    name = "qflow_task_duration_seconds"
    samples = []
    for state, counts in sorted(hist.items()):
        for bound, count in zip(BUCKETS, counts[:len(BUCKETS)], strict=True):
            le = "+Inf" if bound == math.inf else repr(bound)
            samples.append(_line(name + "_bucket", {"state": state, "le": le}, count))
        samples.append(_line(name + "_sum", {"state": state}, counts[-1]))
        samples.append(_line(name + "_count", {"state": state}, counts[len(BUCKETS) - 1]))
    return _family(name, "histogram", "Task attempts that ended since the server started, "
                   "by how long they ran and how they ended.", samples)


def _scheduler_lag(conn: Any, now: dt.datetime) -> list[tuple[str, float]]:
    """Per scheduled, loaded, unpaused workflow that a scheduler has seen: seconds since
    the oldest logical time that is due and has no run yet (what a scheduler would
    create now, room under max_active_runs permitting; see qflow.engine.scheduler)."""
    out = []
    for name in sorted(authoring.WORKFLOWS):
        wdef = authoring.WORKFLOWS[name]
        schedule = sched.from_options(wdef.options)
        state = schedules.get_state(conn, name) if schedule is not None else None
        if state is None or state.paused:
            continue
        last = schedules.last_logical_time(conn, name, to_store(now))
        catchup = bool(wdef.options.get("catchup", False))
        after = sched.window_start(schedule, catchup, from_store(last),
                                   from_store(state.registered_at), from_store(state.unpaused_at))
        room = sched.max_active_runs(wdef.options) - schedules.active_runs(conn, name)
        due = sched.due_times(schedule, now, after, catchup, min(room, 1))
        out.append((name, max(0.0, (now - due[0]).total_seconds()) if due else 0.0))
    return out


def _unix(t: dt.datetime) -> float:
    return from_store(t).timestamp()


class MetricsHandler(QflowHandler):
    """GET /qflow/metrics (basic auth or a bearer token, like the API)."""

    accepts_tokens = True

    def initialize(self, runtime: Any, web: WebSettings, collector: Collector) -> None:
        super().initialize(runtime, web)
        self.collector = collector

    async def get(self) -> None:
        text = await self.blocking(self.collector.scrape, self.runtime.store)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(text)
