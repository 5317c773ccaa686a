"""The Celery edge: the app factory, the one generic task, the dispatcher, the workers."""
from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import Iterator

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Celery
from celery.signals import task_failure
from celery.utils.nodenames import default_nodename, host_format
from kombu.exceptions import OperationalError as KombuOperationalError

from .config import Config
from .errors import TaskTimeout, UnreachableError, WorkerLost
from .store import ops

EXECUTE = "qflow.execute"
HARD_LIMIT_GRACE = 5.0
WAKE = "qflow.wake"
log = logging.getLogger("qflow.worker")


def make_celery(config: Config, engine_ref) -> Celery:
    """A Celery app that knows one task, ``qflow.execute``, and speaks JSON only."""
    broker = config.broker_url or "memory://localhost/"
    app = Celery("qflow", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_ignore_result=True,           # the results DB is the source of truth
        task_acks_late=True,               # a task lost with its worker is redelivered
        worker_prefetch_multiplier=1,
        task_default_queue=config.default_queue,
        worker_send_task_events=True, task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    if broker.startswith("memory://"):
        app.conf.broker_transport_options = {"polling_interval": 0.01}

    @app.task(name=WAKE, shared=False)
    def wake() -> None:
        """No-op: lets an embedded worker's consumer loop notice it should stop."""

    @app.task(name=EXECUTE, bind=True, shared=False)
    def execute(self, run_id: str, node: str, attempt: int) -> None:
        outcome = engine_ref().execute(run_id, node, attempt, worker=self.request.hostname or "",
                                       celery_id=self.request.id)
        if outcome is not None and outcome.state != "succeeded":
            # Recorded already; raising makes Flower and the worker log show the failure.
            raise TaskFailed(f"{node}: {outcome.error}")

    @task_failure.connect(sender=execute, weak=False)
    def on_process_lost(sender=None, exception=None, args=None, **_):
        # Runs in the worker's main process when a pool process died under a task (hard
        # time limit, kill, crash): the task could not record its own outcome.
        if isinstance(exception, (TimeLimitExceeded, WorkerLostError)) and args:
            if isinstance(exception, TimeLimitExceeded) and exception.args:
                limit = float(exception.args[0]) - HARD_LIMIT_GRACE
                lost: Exception = TaskTimeout(limit, killed=True)
            else:
                lost = WorkerLost(str(exception))
            engine_ref().record_lost(*args, lost)

    return app


class TaskFailed(Exception):
    """Raised after a failure is recorded, so Celery monitoring shows the task failed."""


class CeleryDispatcher:
    """Publishes one flat message per ready task, named after its workflow and node."""

    def __init__(self, app: Celery, config: Config):
        self.app = app
        self.config = config

    def publish(self, items: list[ops.Dispatch]) -> None:
        if not items:
            return
        task = self.app.tasks[EXECUTE]
        with self.app.producer_or_acquire() as producer:
            for item in items:
                extra = {}
                if item.countdown > 0:
                    extra["countdown"] = item.countdown
                if item.timeout and not self.config.embedded:
                    # Backstop for a task that ignores its alarm: Celery kills the process.
                    extra["time_limit"] = item.timeout + HARD_LIMIT_GRACE
                task.apply_async((item.run_id, item.node, item.attempt), producer=producer,
                                 queue=item.queue or self.config.default_queue,
                                 shadow=f"{item.workflow}.{item.node}", **extra)

    def revoke(self, celery_ids: list[str]) -> None:
        """Stop running attempts: their worker processes are terminated."""
        self.app.control.revoke(celery_ids, terminate=True, signal="SIGTERM")

    def check(self) -> None:
        """Raise UnreachableError unless the broker answers."""
        if self.config.embedded:
            return
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2,
                                       timeout=3)
        except (KombuOperationalError, OSError, socket.error) as exc:
            raise UnreachableError("broker", self.config.broker_url, exc) from None


@contextmanager
def embedded_worker(app: Celery, concurrency: int) -> Iterator[None]:
    """A real Celery worker in this process, on threads, over kombu's memory transport."""
    from celery.contrib.testing.worker import start_worker

    from celery.worker import state

    with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=30):
        try:
            yield
        finally:
            # The consumer loop checks for shutdown between messages, then drains once more
            # (polling the memory transport for up to 2 s each time): two no-op messages
            # end it at once.
            state.should_terminate = 0
            for _ in range(2):
                app.tasks[WAKE].apply_async(queue=app.conf.task_default_queue)


def run_worker(app: Celery, queues: list[str], concurrency: int, hostname: str | None,
               loglevel: str = "INFO") -> int:
    """Start a normal Celery worker (prefork by default) and block until it stops."""
    options = dict(queues=queues, loglevel=loglevel, send_events=True)
    if concurrency:
        options["concurrency"] = concurrency
    if hostname:
        options["hostname"] = host_format(default_nodename(hostname))
    worker = app.Worker(**options)
    worker.start()
    return worker.exitcode or 0
