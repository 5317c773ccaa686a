"""`qflow` with some of its hard-coded settings changed, for bench/variants.py.

    QFLOW_BENCH_PATCH=noevents python bench/patched_qflow.py worker -c 2 ...

Nothing under qflow/ is edited: the changes are applied from outside when this process
starts, so a what-if can be measured before anyone changes the engine. Flags:

- ``events`` / ``noevents``: Celery task events on / off (``worker_send_task_events``,
  ``task_send_sent_event`` and the worker's ``send_events``), whatever qflow's default;
  with ``events`` the figures are what a worker costs while Flower watches it.
- ``ackemulation``: kombu's Redis transport with its unacked-message bookkeeping back on
  (``ack_emulation=True``, kombu's default, which qflow turns off: a hash and a sorted
  set written at each delivery and cleared at each ack, a visibility-timeout restore).

Settings qflow reads from its config (e.g. ``follow_seconds``) need no patch:
bench/variants.py passes them to a variant's worker as ``QFLOW_*`` variables.
"""
from __future__ import annotations

import os
import sys

FLAGS = set(filter(None, os.environ.get("QFLOW_BENCH_PATCH", "").split(",")))


def apply(flags: set[str] = FLAGS) -> None:
    import qflow.broker.app as celery_app

    original = celery_app.make_celery

    def make_celery(config, executor_ref):
        app = original(config, executor_ref)
        if flags & {"events", "noevents"}:
            on = "events" in flags
            app.conf.worker_send_task_events = on
            app.conf.task_send_sent_event = on
            base = app.Worker

            class Worker(base):
                def __init__(self, *args, **kwargs):
                    kwargs["send_events"] = on
                    super().__init__(*args, **kwargs)
            app.Worker = Worker
        if "ackemulation" in flags:
            app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                                 "ack_emulation": True}
        return app

    celery_app.make_celery = make_celery      # Runtime.celery looks it up when it runs


if __name__ == "__main__":
    apply()
    from qflow.cli import main
    sys.argv[0] = "qflow"
    main()
