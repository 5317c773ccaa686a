"""Alerts: the user's callbacks, called after commit, and the events the notifiers get.

The notifiers (webhook, e-mail) are fed from the outbox (qflow.store.outbox, delivered by
qflow.engine.notify), so what they are told survives a crash. A failing callback or
notifier is logged and never changes the run.
"""
from __future__ import annotations

import logging
from typing import Callable

from qflow import authoring
from qflow.config import Config
from qflow.core.params import masked
from qflow.core.records import Outcome
from qflow.core.states import FAILED, RETRYING, SUCCEEDED
from qflow.engine import notify
from qflow.engine.notify import Event
from qflow.store import Store, read

log = logging.getLogger("qflow.alerts")

TASK_FAILED, TASK_RETRY, TASK_SUCCEEDED = "task_failed", "task_retry", "task_succeeded"
RUN_FAILED, RUN_SUCCEEDED = "run_failed", "run_succeeded"


def emit(event: Event, callbacks: list[Callable | None]) -> None:
    """Call the user's callbacks (in this process, after commit); log, never raise."""
    for callback in callbacks:
        if callback is None:
            continue
        try:
            callback(event)
        except Exception:  # noqa: BLE001 - an alert must not fail the run
            log.exception("alert callback %r failed for %s", callback, event.kind)


class Alerter:
    """Tells the user's callbacks and the notifiers what ended, after commit."""

    _TASK = {SUCCEEDED: (TASK_SUCCEEDED, "on_success"), FAILED: (TASK_FAILED, "on_failure"),
             RETRYING: (TASK_RETRY, "on_retry")}

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        # The events the notifiers want are kept in the outbox with their state change.
        store.outbox = notify.wanted_kinds(config)

    def task_ended(self, run_id: str, workflow: str, node: str, attempt: int,
                   params: dict, tdef, outcome: Outcome) -> None:
        """An attempt's outcome is recorded: the task's own callback, then notifiers."""
        kind, hook = self._TASK[outcome.state]
        callback = tdef.options.get(hook) if tdef is not None else None
        emit(Event(kind, run_id, workflow, node, outcome.state, attempt, outcome.error,
                   masked(params)), [callback])
        self.deliver(run_id)

    def run_ended(self, run_id: str, workflow: str, state: str | None) -> None:
        """A run ended: the workflow's callback, then notifiers (not for a canceled run)."""
        if state not in (SUCCEEDED, FAILED):
            return
        wdef = authoring.WORKFLOWS.get(workflow)
        hook = wdef.options.get("on_success" if state == SUCCEEDED else "on_failure") \
            if wdef is not None else None
        if hook is not None:     # the event is read for the callback only (notifiers: outbox)
            with self.store.read() as conn:
                run = read.get_run(conn, run_id, with_tasks=False)
                failed = read.failed_tasks(conn, run_id)
            first = failed[0] if failed else {}
            emit(Event(RUN_SUCCEEDED if state == SUCCEEDED else RUN_FAILED, run_id, workflow,
                       first.get("node"), state, None, first.get("error"), run["params"],
                       run.get("logical_time"), failed), [hook])
        self.deliver(run_id)

    def late(self, run_id: str, workflow: str, node: str | None) -> None:
        """A run (``node`` None) or a task passed its deadline: its on_late callback."""
        wdef = authoring.WORKFLOWS.get(workflow)
        hook = None
        if node is None:
            hook = wdef.options.get("on_late") if wdef is not None else None
        else:
            with self.store.read() as conn:
                row = read.task_options(conn, run_id, node)
            tdef = authoring.find_task(row["task"]) if row else None
            hook = tdef.options.get("on_late") if tdef is not None else None
        emit(Event("task_late" if node else "run_late", run_id, workflow, node), [hook])
        self.deliver(run_id)

    def deliver(self, run_id: str | None = None) -> int:
        """Deliver the due outbox alerts (of one run, right after its change commits);
        what fails is retried by the maintenance thread's :meth:`deliver` calls."""
        if not self.store.outbox:
            return 0
        return notify.deliver_due(self.config, self.store, run_id)
