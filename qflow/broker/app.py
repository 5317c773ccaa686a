"""The Celery edge: the app factory, the one generic task, the dispatcher, the workers."""
from __future__ import annotations

import logging
import socket
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Celery
from celery.exceptions import ImproperlyConfigured
from celery.signals import (
    task_failure,
    task_received,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.nodenames import default_nodename, host_format
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.transport import TRANSPORT_ALIASES

from qflow.broker import task_events
from qflow.broker.publish import EXECUTE, HARD_LIMIT_GRACE, Publisher
from qflow.config import Config
from qflow.core.records import Dispatch
from qflow.engine.dispatch import Follow
from qflow.errors import (
    TaskTimeout,
    UnreachableError,
    UserError,
    WorkerLost,
    hide_password,
    one_line,
)
from qflow.results.crypto import is_sealed

WAKE = "qflow.wake"
TASK_EVENTS_ON = "qflow_task_events"     # set on a request while its worker sends them
log = logging.getLogger("qflow.worker")


def make_celery(config: Config, executor_ref) -> Celery:
    """A Celery app that knows one task, ``qflow.execute``, and speaks JSON only."""
    broker = config.broker_url or "memory://localhost/"
    check_broker_url(broker)
    app = Celery("qflow", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_ignore_result=True,           # the results DB is the source of truth
        task_acks_late=True,               # a task lost with its worker is redelivered
        worker_prefetch_multiplier=1,
        task_default_queue=config.default_queue,
        # Task events cost a broker round trip each; `qflow flower` turns them on in
        # running workers, and `task_events = true` (or `worker -E`) keeps them on.
        worker_send_task_events=config.task_events, task_send_sent_event=config.task_events,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,   # workers wait out a broker restart
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    if broker.startswith("memory://"):
        app.conf.broker_transport_options = {"polling_interval": 0.01}
    elif broker.startswith(("redis://", "rediss://")):
        # One list per priority level, read highest first (Redis has no native priority).
        # No ack emulation: kombu's copy of every delivered message in Redis, to deliver
        # it again after visibility_timeout (1 h) if its worker dies, costs two Redis
        # transactions per task in the consumer loop, and qflow recovers such tasks itself
        # (the sweeper for running attempts, requeue_after for messages lost unstarted).
        # An unstarted message still goes back to its queue at a worker's warm shutdown.
        app.conf.broker_transport_options = {"priority_steps": list(range(10)), "sep": ":",
                                             "queue_order_strategy": "priority",
                                             "ack_emulation": False}
    else:
        app.conf.task_queue_max_priority = 9          # RabbitMQ: x-max-priority queues
    _setup_signing(app, config)

    @app.task(name=WAKE, shared=False)
    def wake() -> None:
        """No-op: lets an embedded worker's consumer loop notice it should stop."""

    # TaskFailed is "expected" (Celery's throws): the message still ends FAILURE (Flower
    # shows it) but the worker logs one line, not a traceback of qflow's own frames; the
    # user's traceback is in the results DB (`qflow logs`, `status --json`).
    @app.task(name=EXECUTE, bind=True, shared=False, throws=(TaskFailed,))
    def execute(self, run_id: str, node: str, attempt: int) -> None:
        executor = executor_ref()
        outcome = executor.execute(run_id, node, attempt,
                                   worker=executor.name or self.request.hostname or "",
                                   celery_id=self.request.id,
                                   follow=_follow(self.request, config, self.app))
        if outcome is not None and outcome.state not in ("succeeded", "sensing"):
            # Recorded already; raising makes Flower and the worker log show the failure.
            # An encrypted error is named by its type only: Flower and the log show it.
            error = (f"{outcome.error_type} (message encrypted)" if is_sealed(outcome.error)
                     else _shortened(one_line(outcome.error or "")))
            raise TaskFailed(f"{node}: {error}")

    @task_failure.connect(sender=execute, weak=False)
    def on_process_lost(sender=None, task_id=None, exception=None, args=None, **_):
        # Runs in the worker's main process when a pool process died under a task (hard
        # time limit, kill, crash): the task could not record its own outcome.
        if isinstance(exception, (TimeLimitExceeded, WorkerLostError)) and args:
            if isinstance(exception, TimeLimitExceeded) and exception.args:
                limit = float(exception.args[0]) - HARD_LIMIT_GRACE
                lost: Exception = TaskTimeout(limit, killed=True)
            else:
                lost = WorkerLost(str(exception))
            executor_ref().record_lost_message(task_id, args, lost)

    return app


@task_received.connect(weak=False, dispatch_uid="qflow-note-task-events")
def _note_task_events(sender=None, request=None, **_):
    """In a worker's main process as each message arrives: whether task events are on now
    (`worker -E`, or Flower turned them on), passed to the pool process with the message's
    request, where :func:`_follow` reads it."""
    dispatcher = getattr(sender, "event_dispatcher", None)
    if request is not None and dispatcher is not None and dispatcher.enabled \
            and (not dispatcher.groups or "task" in dispatcher.groups):
        request.request_dict[TASK_EVENTS_ON] = True


def _follow(request, config: Config, app: Celery | None = None) -> Follow | None:
    """Whether this message's process may run released children itself, and until when:
    not under a hard time limit (it is Celery's, per message), not when turned off. While
    the worker sends task events (Flower is watching), each task run so sends the events a
    message's task would, so Flower still sees every task."""
    queue = (request.delivery_info or {}).get("routing_key")
    if config.follow_seconds <= 0 or not queue or any(request.timelimit or ()):
        return None
    report = None
    if getattr(request, TASK_EVENTS_ON, False) and app is not None:
        report = task_events.sender(app, request.hostname)
    return Follow(queue, time.monotonic() + config.follow_seconds, report)


def check_broker_url(url: str) -> None:
    """Raise a one-line UserError for a broker URL kombu would fail on later, with a
    traceback: an unknown scheme, a port that is not a number from 1 to 65535."""
    for part in filter(None, (p.strip() for p in url.split(";"))):
        scheme = part.partition("://")[0]
        if scheme.partition("+")[0] not in TRANSPORT_ALIASES:
            raise UserError(f"unknown broker scheme {scheme!r} in {hide_password(part)} "
                            "(use redis://, rediss://, sentinel:// or amqp://)")
        try:
            port = urlsplit(part).port
        except ValueError as exc:
            raise UserError(f"bad broker URL {hide_password(part)}: {exc}") from None
        if port == 0:
            raise UserError(f"bad broker URL {hide_password(part)}: port 0")


def _setup_signing(app: Celery, config: Config) -> None:
    """Sign task messages and accept only signed ones (Celery's auth serializer)."""
    paths = (config.security_key, config.security_certificate, config.security_cert_store)
    if not any(paths):
        return
    if not all(paths):
        raise UserError("message signing needs security_key, security_certificate and "
                        "security_cert_store together")
    app.conf.update(task_serializer="auth", accept_content=["auth"],
                    security_key=config.security_key,
                    security_certificate=config.security_certificate,
                    security_cert_store=config.security_cert_store, security_digest="sha256")
    try:
        app.setup_security(allowed_serializers=["json"], serializer="json")
    except (OSError, ValueError, ImproperlyConfigured) as exc:
        raise UserError(f"message signing: {one_line(exc)} "
                        "(pip install 'qflow[signing]' for the cryptography package)") from None


class TaskFailed(Exception):
    """Raised after a failure is recorded, so Celery monitoring shows the task failed."""


def _shortened(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


class CeleryDispatcher:
    """Publishes one flat message per ready task (:mod:`qflow.broker.publish`), stops
    running ones, and asks the broker what it holds."""

    def __init__(self, app: Celery, config: Config):
        self.app = app
        self.config = config
        self.publisher = Publisher(app, config)
        self._answered = float("-inf")

    def publish(self, items: list[Dispatch]) -> None:
        self.publisher.publish(items)

    def revoke(self, celery_ids: list[str]) -> None:
        """Stop running attempts: their worker processes are terminated."""
        self.app.control.revoke(celery_ids, terminate=True, signal="SIGTERM")

    def waiting(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` (all its priority levels), by a passive declare;
        None when the broker cannot tell (the embedded memory transport, an outage, a
        queue that does not exist)."""
        if self.config.embedded:
            return None
        try:
            with self.app.connection_for_read() as conn:
                return conn.default_channel.queue_declare(queue=queue, passive=True)[1]
        except Exception:  # noqa: BLE001 - unknown is an answer: the caller re-sends
            return None

    def check(self) -> None:
        """Raise UnreachableError unless the broker answers (an answer counts for a few
        seconds: a process that triggers many runs does not reconnect for each)."""
        if self.config.embedded or time.monotonic() - self._answered < 5.0:
            return
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2,
                                       timeout=3)
        except (KombuOperationalError, OSError, socket.error) as exc:
            raise UnreachableError("broker", self.config.broker_url, exc) from None
        self._answered = time.monotonic()


@contextmanager
def embedded_worker(app: Celery, concurrency: int) -> Iterator[str]:
    """A real Celery worker in this process, on threads, over kombu's memory transport;
    yields its name (unique to this process: ``gen<pid>@<host>``)."""
    from celery.contrib.testing.worker import start_worker
    from celery.worker import state

    with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=30) as worker:
        try:
            yield worker.hostname
        finally:
            # The consumer loop checks for shutdown between messages, then drains once more
            # (polling the memory transport for up to 2 s each time): two no-op messages
            # end it at once.
            state.should_terminate = 0
            for _ in range(2):
                app.tasks[WAKE].apply_async(queue=app.conf.task_default_queue)


def _processes(worker) -> int | None:
    """A Celery worker's pool size (None while its ``"auto"`` is not resolved)."""
    return worker.concurrency if isinstance(worker.concurrency, int) else None


def run_worker(app: Celery, upkeep, queues: list[str], concurrency: int,
               hostname: str | None, loglevel: str = "INFO") -> int:
    """Start a normal Celery worker (prefork by default) and block until it stops.

    Beside it runs the maintenance thread (heartbeat, sweeper, reconciler), started once
    the worker consumes and stopped at shutdown.
    """
    from qflow.engine.upkeep import Maintenance

    options = dict(queues=queues, loglevel=loglevel, send_events=True)
    if concurrency:
        options["concurrency"] = concurrency
    if hostname:
        options["hostname"] = host_format(default_nodename(hostname))
    worker = app.Worker(**options)
    thread = Maintenance(upkeep, worker.hostname, queues, _processes(worker))
    thread.beat()                     # visible before the first task is taken

    def started(**_):
        thread.concurrency = _processes(worker)         # Celery's "auto" is known by now
        if not thread.is_alive():
            thread.start()

    worker_ready.connect(started, weak=False)
    # In each pool process: async tasks still running finish before it exits.
    worker_process_shutdown.connect(lambda **_: upkeep.executor.stop_async(), weak=False)
    worker_shutdown.connect(lambda **_: thread.stop(), weak=False)
    worker.start()
    return worker.exitcode or 0
