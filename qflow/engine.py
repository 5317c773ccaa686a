"""The coordinator: start runs, execute one node, record outcomes and release children.

The engine talks to the broker only through a :class:`Dispatcher`, so it runs the same
way under Celery, in the embedded worker and in tests that drain messages by hand.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from typing import Any, Callable, Protocol

from . import authoring, dag
from .config import Config
from .context import TaskContext, _current
from .errors import Fail, UserError
from .states import FAILED, SUCCEEDED, TERMINAL
from .store import Store, ops, read

log = logging.getLogger("qflow.engine")


class Dispatcher(Protocol):
    """Publishes task messages (ids only) to workers."""

    def publish(self, items: list[ops.Dispatch]) -> None: ...

    def check(self) -> None: ...


class Engine:
    """Coordinator over one results DB and one dispatcher."""

    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher):
        self.config = config
        self.store = store
        self.dispatcher = dispatcher

    # -- starting runs -------------------------------------------------------------
    def workflow(self, name: str) -> authoring.WorkflowDef:
        wdef = authoring.WORKFLOWS.get(name)
        if wdef is None:
            known = ", ".join(sorted(authoring.WORKFLOWS)) or "none loaded; pass -A/--app"
            raise UserError(f"unknown workflow {name!r} (known: {known})")
        return wdef

    def trigger(self, name: str, params: dict[str, Any] | None = None,
                logical_time=None) -> str:
        """Validate and expand, commit the rows, then publish the roots. Returns the run id."""
        wdef = self.workflow(name)
        values = wdef.resolve_params(params)
        graph = wdef.expand(values)
        self.dispatcher.check()
        run_id = uuid.uuid4().hex
        roots = self.store.transact(ops.insert_run, run_id, graph, values, logical_time)
        self.dispatcher.publish(roots)
        return run_id

    # -- executing one node (called by the worker) -----------------------------------
    def execute(self, run_id: str, node: str, attempt: int, worker: str = "",
                celery_id: str | None = None) -> ops.Outcome | None:
        """Run one attempt of a node end to end. None when the message was stale."""
        claimed = self.store.transact(ops.claim, run_id, node, attempt, worker, celery_id)
        if claimed is None:
            log.info("skipping %s/%s attempt %s: not queued for it", run_id, node, attempt)
            return None
        ctx = TaskContext(run_id, claimed.workflow, node, attempt, claimed.params,
                          claimed.logical_time)
        outcome = self._call(claimed, ctx)
        released = self.store.transact(ops.finish, run_id, node, attempt, outcome)
        if released is None:
            log.warning("outcome of %s/%s attempt %s refused: no longer current",
                        run_id, node, attempt)
            return None
        self.dispatcher.publish(released)
        return outcome

    def _call(self, claimed: ops.Claimed, ctx: TaskContext) -> ops.Outcome:
        tdef = authoring.find_task(claimed.task)
        if tdef is None:
            return _failure(LookupError(f"task {claimed.task!r} is not in this worker's app "
                                        "(start the worker with the same -A/--app)"))
        args = dag.substitute(claimed.call.get("args", []), claimed.inputs)
        kwargs = dag.substitute(claimed.call.get("kwargs", {}), claimed.inputs)
        token = _current.set(ctx)
        try:
            value = tdef.fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any task error is the task's outcome
            return _failure(exc)
        finally:
            _current.reset(token)
        limit = int(claimed.options.get("result_max_bytes") or self.config.result_max_bytes)
        return _success(value, limit)

    # -- waiting -------------------------------------------------------------------
    def wait(self, run_id: str, on_poll: Callable[[dict], None] | None = None,
             timeout: float | None = None) -> dict:
        """Poll the run until it ends; returns the run (without tasks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.store.read() as conn:
                run = read.get_run(conn, run_id, with_tasks=False)
            if run is None:
                raise UserError(f"unknown run {run_id!r}")
            if on_poll is not None:
                on_poll(run)
            if run["state"] in TERMINAL:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout}s")
            time.sleep(self.config.wait_poll_interval)


def _success(value: Any, limit: int) -> ops.Outcome:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as exc:
        return ops.Outcome(FAILED, error_type="TaskOutputError",
                           error=f"return value is not JSON-serialisable: {exc}")
    size = len(text.encode())
    if size > limit:
        return ops.Outcome(FAILED, error_type="TaskOutputError",
                           error=f"return value is {size} bytes, larger than "
                                 f"result_max_bytes ({limit})")
    return ops.Outcome(SUCCEEDED, result=text)


def _failure(exc: BaseException) -> ops.Outcome:
    name = type(exc).__name__
    message = f"{name}: {exc}" if str(exc) else name
    tb = "".join(traceback.format_exception(exc))
    return ops.Outcome(FAILED, error_type="Fail" if isinstance(exc, Fail) else name,
                       error=message, traceback=tb)
