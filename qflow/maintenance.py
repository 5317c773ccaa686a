"""The thread every `qflow worker` runs beside Celery: heartbeat, sweep, reconcile.

Heartbeats prove this worker is alive. The sweeper requeues attempts whose worker went
silent for ``worker_lost_timeout`` (rather than waiting for Redis' visibility timeout);
the reconciler publishes tasks that were released while the broker was down. Every worker
runs both: each requeue or publish is a conditional update, so concurrent sweepers agree.
"""
from __future__ import annotations

import logging
import os
import threading

from .engine import Engine
from .store import liveness
from .store.ops import utcnow

log = logging.getLogger("qflow.maintenance")


class Maintenance(threading.Thread):
    """Background upkeep for one worker process."""

    def __init__(self, engine: Engine, name: str):
        super().__init__(name="qflow-maintenance", daemon=True)
        self.engine = engine
        self.worker_name = name
        self.pid = os.getpid()
        self.started_at = utcnow()
        self._stop_event = threading.Event()

    def beat(self) -> None:
        self.engine.store.transact(liveness.heartbeat, self.worker_name, self.pid,
                                   self.started_at)

    def run(self) -> None:
        interval = self.engine.config.heartbeat_interval
        while True:
            for step in (self.beat, self.engine.sweep, self.engine.reconcile,
                         self.engine.finish_stuck_runs):
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
            self.engine.store.transact(liveness.forget, self.worker_name, self.pid)
        except Exception:  # noqa: BLE001
            log.exception("could not remove worker %s from the DB", self.worker_name)
