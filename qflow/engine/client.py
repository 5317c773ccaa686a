"""The coordinator's client side: create, resume, cancel and wait for runs.

Every run is created by :meth:`Engine.create_run` — `qflow run`/`trigger`, the scheduler,
backfills and the web API alike — so each is held to the same validation and limits.
The engine talks to the broker only through a :class:`~qflow.engine.dispatch.Dispatcher`,
so it runs the same way under Celery, in the embedded worker and in tests that drain
messages by hand.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable

from sqlalchemy import Connection

from qflow import authoring
from qflow.config import Config
from qflow.core.records import Dispatch
from qflow.core.sizing import AutoWindow
from qflow.core.states import TERMINAL
from qflow.engine.alerts import Alerter
from qflow.engine.dispatch import Dispatcher, PublishError
from qflow.errors import UnreachableError, UserError
from qflow.results import codec, secrets
from qflow.store import Store, control, lifecycle, liveness, read, sizing
from qflow.store.db import query

log = logging.getLogger("qflow.engine")

CREATED = "created"

# Decides, inside the transaction that would insert ``run``, whether it may: returns None
# to insert it, or the reason it is not (e.g. the scheduler's "paused", "exists").
Guard = Callable[[Connection, lifecycle.NewRun], "str | None"]


@dataclass(frozen=True)
class Created:
    """What :meth:`Engine.create_run` did: ``outcome`` is ``created`` or a guard's reason."""

    run_id: str
    outcome: str
    published: bool = True       # False: the broker did not take the first tasks (yet)


class Engine:
    """The client API over one results DB and one dispatcher."""

    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher):
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.alerts = Alerter(config, store)

    def workflow(self, name: str) -> authoring.WorkflowDef:
        wdef = authoring.WORKFLOWS.get(name)
        if wdef is None:
            known = ", ".join(sorted(authoring.WORKFLOWS)) or "none loaded; pass -A/--app"
            raise UserError(f"unknown workflow {name!r} (known: {known})")
        return wdef

    # -- creating runs ---------------------------------------------------------------
    def create_run(self, wdef: authoring.WorkflowDef, params: dict[str, Any] | None,
                   logical_time: dt.datetime | None = None, guard: Guard | None = None
                   ) -> Created:
        """Validate and expand, commit the run (unless ``guard`` says no), then publish
        its first tasks. Bad parameters raise before anything is written."""
        values = secrets.seal_params(wdef.params, wdef.resolve_params(params),
                                     codec.for_config(self.config), wdef.name)
        new = lifecycle.NewRun(uuid.uuid4().hex, wdef.expand(values), values,
                               logical_time, self.config.max_map_size, self.limits(wdef),
                               self.config.result_max_bytes, bool(self.config.security_key),
                               wdef.options.get("deadline"))
        self.dispatcher.check()
        insert = _insert_at_once if guard is None and self.store.dialect == "postgresql" \
            and lifecycle.written_at_once(new) else _insert
        refused, started = self.store.transact(insert, new, guard, self.config.window())
        if refused is not None:
            return Created(new.run_id, refused)
        published = self.publish(started.to_publish)
        self.alerts.run_ended(new.run_id, wdef.name, started.final)   # e.g. an empty map
        return Created(new.run_id, CREATED, published)

    def trigger(self, name: str, params: dict[str, Any] | None = None,
                logical_time: dt.datetime | None = None) -> str:
        """Create a run of workflow ``name`` now; returns its id."""
        created = self.create_run(self.workflow(name), params, logical_time)
        if not created.published:
            raise UnreachableError("broker", self.config.broker_url,
                                   f"run {created.run_id} is recorded and its first tasks "
                                   "will be sent once the broker is back")
        return created.run_id

    def limits(self, wdef: authoring.WorkflowDef) -> lifecycle.Limits:
        """The concurrency limits of a new run of ``wdef`` (checked at decoration)."""
        return lifecycle.Limits(self.config.pool_slots(), wdef.options.get("max_active_tasks"),
                                wdef.options.get("max_active_runs"))

    def publish(self, items: list[Dispatch]) -> bool:
        """Publish after commit. What cannot be sent is marked for the reconciler, so a
        release is never lost; returns False if anything was left unsent."""
        try:
            self.dispatcher.publish(items)
        except PublishError as exc:
            log.error("broker unreachable, %d task(s) left for the reconciler: %s",
                      len(exc.unsent), exc)
            self.store.transact(liveness.mark_unsent, exc.unsent)
            return False
        return True

    # -- steering runs ---------------------------------------------------------------
    def set_pool(self, name: str, slots: int) -> int:
        """Create or resize a pool; returns how many waiting tasks it let start."""
        admitted = self.store.transact(control.set_pool, name, slots)
        self.publish(admitted)
        return len(admitted)

    def resume(self, run_id: str, from_node: str | None = None) -> int:
        """Re-run what failed or was canceled (and ``from_node`` onwards); returns how many
        tasks were released at once."""
        self.dispatcher.check()
        released = self.store.transact(control.resume_run, run_id, from_node,
                                       bool(self.config.security_key))
        self.publish(released)
        return len(released)

    def cancel(self, run_id: str) -> str | None:
        """Cancel what has not ended and revoke running attempts; returns the run state
        if the run ended."""
        canceled = self.store.transact(control.cancel_run, run_id)
        if canceled.running:
            self.dispatcher.revoke(canceled.running)
        self.publish(canceled.admitted)
        return canceled.run_state

    def wait(self, run_id: str, on_poll: Callable[[dict], None] | None = None,
             timeout: float | None = None) -> dict:
        """Poll the run until it ends; returns the run (without tasks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.store.read_once(read.get_run, run_id, False)
            if run is None:
                raise UserError(f"unknown run {run_id!r}")
            if on_poll is not None:
                on_poll(run)
            if run["state"] in TERMINAL:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout}s")
            time.sleep(self.config.wait_poll_interval)


def _insert(conn: Connection, new: lifecycle.NewRun, guard: Guard | None,
            window: int | AutoWindow | None) -> tuple[str | None, lifecycle.Progress | None]:
    """``window``: the config's (see Config.window), sized here for the new run."""
    refused = guard(conn, new) if guard is not None else None
    if refused is not None:
        return refused, None
    size, queues = sizing.at_start(conn, window, new.graph)
    return None, lifecycle.insert_run(conn, replace(new, window=size, window_queues=queues))


@query(autocommit=True)
def _insert_at_once(conn: Connection, new: lifecycle.NewRun, guard: None,
                    window: int | AutoWindow | None
                    ) -> tuple[str | None, lifecycle.Progress | None]:
    """:func:`_insert` of a run it writes in one statement (lifecycle.written_at_once),
    committed on its own: no BEGIN and COMMIT round trips for a small run."""
    return _insert(conn, new, guard, window)
