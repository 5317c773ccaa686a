"""Upkeep that every `qflow worker` runs beside Celery: heartbeat, sweep, reconcile.

Heartbeats prove a worker is alive. The sweeper requeues attempts whose worker went
silent for ``worker_lost_timeout`` (rather than waiting for Redis' visibility timeout);
the reconciler publishes tasks that were released while the broker was down; the
container sweep stops containers (found by their labels) whose attempt no longer runs.
Every worker runs all of it: each requeue or publish is a conditional update, so
concurrent sweepers agree.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

from qflow import authoring
from qflow.core.durations import parse_duration
from qflow.core.sizing import AutoWindow
from qflow.engine.executor import Executor
from qflow.errors import WorkerLost
from qflow.store import deadlines, livelog, liveness, retention, sizing
from qflow.worker import runtime_cli

log = logging.getLogger("qflow.upkeep")


class Upkeep:
    """The steps of upkeep; each is safe to run in many processes at once."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.engine = executor.engine
        self.store = executor.store
        self.config = executor.config
        self._runtime_missing = False

    def sweep(self, trust_silence: bool = True) -> int:
        """Requeue attempts whose worker is gone; returns how many were found (see
        :func:`qflow.store.liveness.lost_attempts` for ``trust_silence``)."""
        timeout = self.config.worker_lost_timeout
        with self.store.read() as conn:
            lost = liveness.lost_attempts(conn, timeout, trust_silence)
        for run_id, node, attempt in lost:
            log.warning("worker of %s/%s attempt %s is gone; requeueing", run_id, node, attempt)
            self.executor.record_lost(run_id, node, attempt, WorkerLost(
                f"its worker stopped heartbeating for {timeout:g}s"))
        return len(lost)

    def sweep_containers(self) -> int:
        """Stop and remove the containers of attempts that no longer run (their worker
        was lost, or the run was canceled), found by their labels on this worker's
        container runtime; returns how many. Only where the app has container tasks."""
        if not any(t.options.get("isolation") == "container"
                   for t in authoring.TASKS.values()):
            return 0
        runtime = runtime_cli.Runtime.from_config(self.config)
        try:
            found = runtime_cli.labelled(runtime)
        except runtime_cli.ContainerUnavailable as exc:
            if not self._runtime_missing:
                log.warning("cannot look for lost containers: %s", exc)
            self._runtime_missing = True
            return 0
        with self.store.read() as conn:
            stale = set(livelog.not_current(conn, [f[1:] for f in found]))
        gone = [f for f in found if f[1:] in stale]
        for cid, run_id, node, attempt in gone:
            log.warning("stopping container %s of %s/%s attempt %s: the attempt no longer "
                        "runs", cid[:12], run_id, node, attempt)
            runtime_cli.stop(runtime, cid, self.config.container_stop_grace)
        return len(gone)

    def check_deadlines(self) -> int:
        """Mark runs and tasks past their deadline late (once), then tell the on_late
        callbacks and deliver the run_late/task_late alerts."""
        late = self.store.transact(deadlines.mark_late)
        for run_id, workflow, node in late:
            self.engine.alerts.late(run_id, workflow, node)
        return len(late)

    def apply_retention(self) -> int:
        """With ``retention`` set: prune one small batch of runs ended longer ago."""
        if not self.config.retention:
            return 0
        cutoff = liveness.utcnow() - dt.timedelta(seconds=parse_duration(
            self.config.retention))
        return prune(self.config, self.store, cutoff, batches=1)

    def deliver_alerts(self) -> int:
        """Deliver outbox alerts that are due (new, or due again after a failure)."""
        return self.engine.alerts.deliver()

    def bury_local_dead(self) -> int:
        """Embedded workers (``qflow run``) of this host whose process is gone, killed
        without a clean stop: mark them silent, so that :meth:`sweep` requeues their
        attempts now rather than after ``worker_lost_timeout``. Only their names
        (``gen<pid>@<host>``) carry a process id this host can check."""
        host = socket.gethostname()
        with self.store.read() as conn:
            found = liveness.workers_named(conn, f"gen%@{host}")
        dead = [name for name, pid in found if name == f"gen{pid}@{host}"
                and not _alive(pid)]
        if dead:
            self.store.transact(liveness.silence, dead)
        return len(dead)

    def finish_stuck_runs(self) -> int:
        """End runs whose tasks have all ended but whose counters missed it (the
        transaction that counts them was lost in a crash); returns how many."""
        ended = self.store.transact(liveness.finish_stuck_runs)
        for run_id, workflow, progress in ended:
            self.engine.publish(progress.to_publish)
            self.engine.alerts.run_ended(run_id, workflow, progress.final)
        return len(ended)

    def reconcile(self) -> int:
        """Publish tasks that were released but never sent, or whose message went
        missing, and those that a window sized by the live workers has room for since
        they changed; returns how many were published."""
        window = self.config.window()
        if isinstance(window, AutoWindow):
            self.store.transact(sizing.resize, window)
        items = self.store.transact(liveness.take_unsent, 1000, self._signing)
        if self.config.requeue_after > 0:
            items += self._stale()
        if items:
            self.engine.publish(items)
        return len(items)

    def _stale(self) -> list:
        """Tasks queued longer than ``requeue_after``, in the queues whose messages the
        broker may have lost: where it holds as many messages as the DB has such tasks,
        they are a backlog, not a loss, and are not sent again (a long backlog would
        otherwise be duplicated every window)."""
        after = self.config.requeue_after
        with self.store.read() as conn:
            counts = liveness.stale_counts(conn, after)
        default = self.config.default_queue
        short = [q for q, n in counts.items()
                 if (self.engine.dispatcher.waiting(q or default) or 0) < n]
        return self.store.transact(liveness.take_stale, after, short, 1000,
                                   self._signing) if short else []

    @property
    def _signing(self) -> bool:
        """Whether this process signs its messages: then it re-sends only runs whose
        creator did too (its peers refused the others' messages as untrusted)."""
        return bool(self.config.security_key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                 # someone else's process: alive
    return True


# A prune's pace: a batch deletes about PRUNE_BATCH task rows' worth of runs, and the
# next one waits PRUNE_PAUSE times as long as it took, so that a prune holds the DB a
# quarter of the time at most and running work keeps the rest. Measured with
# bench/retention.py --interleave (docs/performance.md), on 2 cores: a concurrent
# fan-out kept 94% of its throughput at this pace, 68% with batches back to back.
PRUNE_BATCH = 1000
PRUNE_PAUSE = 3.0


def prune(config, store, cutoff: dt.datetime, batch: int = PRUNE_BATCH,
          batches: int | None = None, pause: float = PRUNE_PAUSE) -> int:
    """Delete runs ended before ``cutoff`` (see qflow.store.retention), about ``batch``
    task rows per transaction, pausing ``pause`` times as long as each batch took, then
    each run's stored objects; returns how many runs went. An object whose deletion
    fails (or a crash before it) stays under the run's prefix in the store; deleting
    that prefix by hand collects it."""
    from qflow.results import codec

    objects = codec.for_config(config).store
    done = 0
    while batches is None or batches > 0:
        began = time.monotonic()
        ids = store.transact(retention.delete_batch, cutoff, batch)
        for run_id in ids if objects is not None else []:
            try:
                objects.delete_run(run_id)
            except Exception:  # noqa: BLE001 - the DB rows are gone: log, go on
                log.exception("stored results of pruned run %s not deleted", run_id)
        done += len(ids)
        batches = None if batches is None else batches - 1
        if not ids or batches == 0:
            break
        time.sleep(pause * (time.monotonic() - began))
    return done


class Maintenance(threading.Thread):
    """Background upkeep for one worker process, every ``heartbeat_interval``."""

    def __init__(self, upkeep: Upkeep, name: str, queues: list[str] | None = None,
                 concurrency: int | None = None):
        super().__init__(name="qflow-maintenance", daemon=True)
        self.upkeep = upkeep
        self.worker_name = name
        self.queues = ",".join(queues) if queues is not None else None
        self.concurrency = concurrency      # its pool's processes (sizes "auto" windows)
        self.pid = os.getpid()
        self.started_at = liveness.utcnow()
        self._stop_event = threading.Event()
        self._reached_since: float | None = None     # reaching the DB without a break

    def beat(self) -> None:
        try:
            self.upkeep.store.transact(liveness.heartbeat, self.worker_name, self.pid,
                                       self.started_at, self.queues, self.concurrency)
        except Exception:
            self._reached_since = None
            raise
        if self._reached_since is None:
            self._reached_since = time.monotonic()

    def sweep(self) -> int:
        """Sweep; but after an outage (or at start) every other worker's heartbeat may look
        old only because they, like this one, could not write it: take silence as death
        only once this process has itself reached the DB for ``worker_lost_timeout``."""
        reached = self._reached_since
        trust = reached is not None and (
            time.monotonic() - reached >= self.upkeep.config.worker_lost_timeout)
        return self.upkeep.sweep(trust_silence=trust)

    def run(self) -> None:
        interval = self.upkeep.config.heartbeat_interval
        while True:
            for step in (self.beat, self.sweep, self.upkeep.sweep_containers,
                         self.upkeep.reconcile, self.upkeep.finish_stuck_runs,
                         self.upkeep.check_deadlines, self.upkeep.deliver_alerts,
                         self.upkeep.apply_retention):
                try:
                    step()
                except Exception:  # noqa: BLE001 - upkeep must outlive DB/broker blips
                    log.exception("maintenance step %s failed", step.__name__)
            if self._stop_event.wait(interval):
                return

    def stop(self) -> None:
        """Stop and, as no task is running any more, forget this worker."""
        self._stop_event.set()
        try:
            self.upkeep.store.transact(liveness.forget, self.worker_name, self.pid)
        except Exception:  # noqa: BLE001
            log.exception("could not remove worker %s from the DB", self.worker_name)
