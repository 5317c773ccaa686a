"""The raw Celery side of the comparison: no orchestration, a Redis result backend.

Configured like qflow's own app (qflow/celery_app.py): JSON only, ``acks_late``, prefetch
multiplier 1, UTC; its worker is started the same way (prefork, ``-c 2``, same log level):

    BENCH_BROKER_URL=redis://127.0.0.1:6379/1 BENCH_RESULT_URL=redis://127.0.0.1:6379/2 \\
        celery -A bench.raw_app worker -c 2 -P prefork -l WARNING

What differs is what qflow adds: qflow ignores Celery results (its DB is the record)
where the raw side needs a result backend to know a group or chain has finished, and
qflow's app reads Redis priority lists and turns off the Redis transport's ack emulation
(qflow recovers a lost message from its DB; raw Celery keeps kombu's default, which
redelivers it after ``visibility_timeout``).
"""
from __future__ import annotations

import os

from celery import Celery


def make_app(broker_url: str | None = None, result_url: str | None = None) -> Celery:
    broker_url = broker_url or os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/1")
    result_url = result_url or os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/2")
    app = Celery("bench_raw", broker=broker_url, backend=result_url, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", event_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue="raw",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
        result_expires=3600,
    )
    if os.environ.get("BENCH_TASK_EVENTS") == "1":      # --task-events: Flower watching
        app.conf.update(worker_send_task_events=True, task_send_sent_event=True)
    if os.environ.get("BENCH_ACK_EMULATION") == "0":    # bench/variants.py's what-if
        app.conf.broker_transport_options = {"ack_emulation": False}

    @app.task(name="bench.noop", shared=False)
    def noop(x: int = 0) -> int:
        """The no-op every benchmark runs: returns a small int."""
        return x + 1

    @app.task(name="bench.add", shared=False)
    def add(values: list) -> int:
        """The diamond's join: takes its two parents' values."""
        return sum(values)

    return app


app = make_app()
noop = app.tasks["bench.noop"]
add = app.tasks["bench.add"]
