"""The coordinator: start runs, execute one node, record outcomes and release children.

The engine talks to the broker only through a :class:`Dispatcher`, so it runs the same
way under Celery, in the embedded worker and in tests that drain messages by hand.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import os
import time
import uuid
from typing import Any, Callable, Protocol

from . import aio, alerts, authoring, capture, isolation, outcomes
from .config import Config
from .context import TaskContext, _current
from .errors import TaskTimeout, UnreachableError, UserError, WorkerLost
from .states import FAILED, RETRYING, SUCCEEDED, TERMINAL
from .store import Store, control, liveness, ops, read
from .timeouts import call_with_timeout

log = logging.getLogger("qflow.engine")


class PublishError(Exception):
    """The broker could not take these messages."""

    def __init__(self, unsent: list[ops.Dispatch], reason: object):
        self.unsent = unsent
        super().__init__(str(reason))


@dataclasses.dataclass(frozen=True)
class Follow:
    """Lets a worker run a task's released child itself, in the same process, instead of
    publishing it: a chain's next hop then skips the broker round trip. Only a child
    that goes to the message's own queue, now, with no time limit, and only until
    ``deadline`` (``time.monotonic()``), so a long chain still yields to other messages
    and a message never outlives Celery's hard limit."""

    queue: str
    deadline: float

    def takes(self, item: ops.Dispatch, default_queue: str) -> bool:
        return ((item.queue or default_queue) == self.queue and not item.countdown
                and item.timeout is None and time.monotonic() < self.deadline)


class Dispatcher(Protocol):
    """Publishes task messages (ids only) to workers, and stops running ones."""

    def publish(self, items: list[ops.Dispatch]) -> None: ...

    def check(self) -> None: ...

    def revoke(self, celery_ids: list[str]) -> None: ...


class Engine:
    """Coordinator over one results DB and one dispatcher."""

    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher):
        self.config = config
        self.store = store
        self.dispatcher = dispatcher

    # -- starting, resuming and canceling runs ---------------------------------------
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
        roots = self.store.transact(ops.insert_run, run_id, graph, values, logical_time,
                                    self.config.max_map_size, self.limits(wdef))
        if not self.publish(roots):
            raise UnreachableError("broker", self.config.broker_url,
                                   f"run {run_id} is recorded and its first tasks will be "
                                   "sent once the broker is back")
        return run_id

    def publish(self, items: list[ops.Dispatch]) -> bool:
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

    def limits(self, wdef: authoring.WorkflowDef) -> ops.Limits:
        """The concurrency limits of a new run of ``wdef`` (checked at decoration)."""
        return ops.Limits(self.config.pool_slots(), wdef.options.get("max_active_tasks"),
                          wdef.options.get("max_active_runs"))

    def set_pool(self, name: str, slots: int) -> int:
        """Create or resize a pool; returns how many waiting tasks it let start."""
        admitted = self.store.transact(control.set_pool, name, slots)
        self.publish(admitted)
        return len(admitted)

    def resume(self, run_id: str, from_node: str | None = None) -> int:
        """Re-run what failed or was canceled (and ``from_node`` onwards); returns how many
        tasks were released at once."""
        self.dispatcher.check()
        released = self.store.transact(control.resume_run, run_id, from_node)
        self.publish(released)
        return len(released)

    def cancel(self, run_id: str) -> str | None:
        """Cancel what has not ended and revoke running attempts; returns the run state
        if the run ended."""
        canceled = self.store.transact(control.cancel_run, run_id)
        if canceled.running:
            self.dispatcher.revoke(canceled.running)
        self.publish(canceled.released)
        return canceled.run_state

    # -- executing one node (called by the worker) -----------------------------------
    def execute(self, run_id: str, node: str, attempt: int, worker: str = "",
                celery_id: str | None = None, follow: Follow | None = None
                ) -> ops.Outcome | None:
        """Run one attempt of a node end to end. None when the message was stale.

        With ``follow``, a child this releases that ``follow`` takes runs next, here,
        claimed under the same ``celery_id`` (so a process lost under it is found), and
        so on down a chain; the return value is this attempt's own outcome.
        """
        outcome, item = self._execute_one(run_id, node, attempt, worker, celery_id, follow)
        while item is not None:
            current, started = item, time.monotonic()
            try:
                done, item = self._execute_one(current.run_id, current.node, current.attempt,
                                               worker, celery_id, follow)
            except Exception:  # noqa: BLE001 - not this message's task: send it instead
                log.exception("running %s/%s here failed; publishing it", current.run_id,
                              current.node)
                self.publish([current])
                break
            # No Celery task shows it: the worker log says it ran, as Celery would.
            state = "no outcome here" if done is None else done.state   # async, or stale
            error = f": {done.error}" if done is not None and done.error else ""
            log.log(logging.WARNING if error else logging.INFO,
                    "Task %s.%s[%s] run after its parent: %s in %.3fs%s", current.workflow,
                    current.node, celery_id, state, time.monotonic() - started, error)
        return outcome

    def _execute_one(self, run_id: str, node: str, attempt: int, worker: str,
                     celery_id: str | None, follow: Follow | None
                     ) -> tuple[ops.Outcome | None, ops.Dispatch | None]:
        """One attempt; returns its outcome and the released child to run next, if any."""
        # The claim need not wait for the disk: if a crash loses it, the task is still
        # queued, its outcome report is refused, and the reconciler sends it again.
        claimed = self.store.transact(ops.claim, run_id, node, attempt, worker, celery_id,
                                      durable=False, autocommit=True,
                                      in_doubt=ops.claim_in_doubt)
        if claimed is None:
            log.info("skipping %s/%s attempt %s: not queued for it", run_id, node, attempt)
            return None, None
        logical = claimed.logical_time
        ctx = TaskContext(run_id, claimed.workflow, node, attempt, claimed.params,
                          logical.replace(tzinfo=dt.timezone.utc) if logical else None)
        tdef = authoring.find_task(claimed.task)
        if tdef is not None and inspect.iscoroutinefunction(tdef.fn) \
                and claimed.options.get("isolation") != "subprocess":
            self._start_async(ctx, tdef, claimed, worker)
            return None, None                 # recorded by the event loop when it ends
        outcome = self._call(tdef, claimed, ctx)
        return self._record(ctx, tdef, claimed.options, outcome, claimed, follow)

    def record_lost(self, run_id: str, node: str, attempt: int, exc: BaseException) -> None:
        """Record an attempt whose process died or went silent (hard time limit, kill,
        crash, lost worker). A lost worker is redelivered up to ``max_redeliveries``
        times, whatever the task's retries; other causes follow the retry policy."""
        with self.store.read() as conn:
            row = read.task_options(conn, run_id, node)
            lost_before = liveness.redeliveries(conn, run_id, node) if row else 0
        if row is None:
            return
        ctx = TaskContext(run_id, row["workflow"], node, attempt)
        tdef = authoring.find_task(row["task"])
        outcome = outcomes.failure(exc, row["options"], attempt, tdef)
        if isinstance(exc, WorkerLost):
            again = lost_before < self.config.max_redeliveries
            note = "" if again else f" (gave up after {lost_before} redeliveries)"
            outcome = dataclasses.replace(
                outcome, state=RETRYING if again else FAILED, retry_in=0.0 if again else None,
                error=outcome.error + note)
        self._record(ctx, tdef, row["options"], outcome)

    def record_lost_message(self, celery_id: str | None, args: tuple,
                            exc: BaseException) -> None:
        """Record what a pool process was running when it died under the message
        ``celery_id`` (``args`` = its run, node and attempt): the attempts claimed under
        that message and still running — the message's own task, or a child the process
        went on to run after it (see :class:`Follow`)."""
        with self.store.read() as conn:
            running = liveness.running_under(conn, celery_id) if celery_id else []
        for run_id, node, attempt in running or [tuple(args)]:
            self.record_lost(run_id, node, attempt, exc)

    # -- maintenance (every worker runs it; each step is safe to run concurrently) ----
    def sweep(self) -> int:
        """Requeue attempts whose worker is gone; returns how many were found."""
        with self.store.read() as conn:
            lost = liveness.lost_attempts(conn, self.config.worker_lost_timeout)
        for run_id, node, attempt in lost:
            log.warning("worker of %s/%s attempt %s is gone; requeueing", run_id, node, attempt)
            self.record_lost(run_id, node, attempt, WorkerLost(
                f"its worker stopped heartbeating for {self.config.worker_lost_timeout:g}s"))
        return len(lost)

    def finish_stuck_runs(self) -> int:
        """End runs whose tasks have all ended but whose counters missed it (the
        transaction that counts them was lost in a crash); returns how many."""
        ended = self.store.transact(liveness.finish_stuck_runs)
        for run_id, workflow, state, admitted in ended:
            self.publish(admitted)
            self.run_ended(run_id, workflow, state)
        return len(ended)

    def reconcile(self) -> int:
        """Publish tasks that were released but never sent, or whose message went
        missing; returns how many were published."""
        items = self.store.transact(liveness.take_unsent)
        if self.config.requeue_after > 0:
            items += self.store.transact(liveness.take_stale, self.config.requeue_after)
        if items:
            self.publish(items)
        return len(items)

    def _record(self, ctx: TaskContext, tdef, options: dict, outcome: ops.Outcome,
                claimed: ops.Claimed | None = None, follow: Follow | None = None
                ) -> tuple[ops.Outcome | None, ops.Dispatch | None]:
        """Record an outcome and publish what it released, except the one task ``follow``
        takes (returned second, for the caller to run next)."""
        fail_fast = bool(self._workflow_option(ctx.workflow, "fail_fast"))
        alone = claimed is not None and ops.finish_alone(claimed, outcome, fail_fast)
        finished = self.store.transact(ops.finish, ctx.run_id, ctx.node, ctx.attempt,
                                       outcome, fail_fast, autocommit=alone)
        if finished is None:
            log.warning("outcome of %s/%s attempt %s refused: no longer current",
                        ctx.run_id, ctx.node, ctx.attempt)
            return None, None
        default = self.config.default_queue
        kept = next((item for item in finished.released
                     if follow.takes(item, default)), None) if follow else None
        self.publish([item for item in finished.released if item is not kept])  # first:
        run_state, admitted = None, []           # the next tasks start sooner
        if finished.totals is not None:          # this was the run's last task
            run_state, admitted = self.store.transact(ops.end_run, ctx.run_id,
                                                      finished.workflow, finished.totals)
        self.publish(admitted)
        self._alert(ctx, tdef, outcome, run_state)
        return outcome, kept

    def _call(self, tdef, claimed: ops.Claimed, ctx: TaskContext) -> ops.Outcome:
        if tdef is None:
            return outcomes.missing(claimed, ctx)
        args, kwargs = outcomes.arguments(claimed)
        token = _current.set(ctx)
        out = capture.Capture(self.config.log_max_bytes, self.config.log_level)
        try:
            with out:
                value = self._invoke(tdef, args, kwargs, claimed.options)
        except Exception as exc:  # noqa: BLE001 - any task error is the task's outcome
            return dataclasses.replace(outcomes.failure(exc, claimed.options, ctx.attempt, tdef),
                                       log=out.text)
        finally:
            _current.reset(token)
        return self._succeeded(value, claimed, ctx, out.text)

    def _invoke(self, tdef, args: list, kwargs: dict, options: dict) -> Any:
        timeout = options.get("timeout")
        if options.get("isolation") == "subprocess":
            return isolation.call_in_subprocess(tdef.fn, args, kwargs, timeout,
                                                self.config.log_max_bytes)
        return call_with_timeout(tdef.fn, args, kwargs, timeout)

    def _succeeded(self, value: Any, claimed: ops.Claimed, ctx: TaskContext,
                   log_text: str | None) -> ops.Outcome:
        if claimed.options.get("branch"):
            outcome = outcomes.branch(value, ctx.node, list(claimed.children or ()))
        else:
            limit = int(claimed.options.get("result_max_bytes")
                        or self.config.result_max_bytes)
            outcome = outcomes.success(value, limit)
        return dataclasses.replace(outcome, log=log_text)

    # -- async tasks: many overlap on one event loop per process ----------------------
    def _start_async(self, ctx: TaskContext, tdef, claimed: ops.Claimed, worker: str) -> None:
        name = f"{worker}/{os.getpid()}"
        heartbeat = None
        if not self.config.embedded:
            self.store.transact(liveness.assign_worker, ctx.run_id, ctx.node, ctx.attempt, name)
            started = ops.utcnow()
            heartbeat = functools.partial(self.store.transact, liveness.heartbeat, name,
                                          os.getpid(), started)
        loop = aio.runner(self.config.async_concurrency, heartbeat,
                          self.config.heartbeat_interval)
        self._async_name = name

        async def job() -> None:
            outcome = await self._acall(tdef, claimed, ctx)
            await asyncio.get_running_loop().run_in_executor(
                None, self._record, ctx, tdef, claimed.options, outcome, claimed)

        loop.submit(job)

    def stop_async(self, timeout: float = 300.0) -> None:
        """At process shutdown: let running async tasks end, then forget the loop."""
        loop = aio.current()
        if loop is None:
            return
        loop.drain(timeout)
        name = getattr(self, "_async_name", None)
        if name and not self.config.embedded:
            self.store.transact(liveness.forget, name, os.getpid())

    async def _acall(self, tdef, claimed: ops.Claimed, ctx: TaskContext) -> ops.Outcome:
        args, kwargs = outcomes.arguments(claimed)
        _current.set(ctx)                     # this coroutine's own context
        timeout = claimed.options.get("timeout")
        out = capture.Capture(self.config.log_max_bytes, self.config.log_level)
        try:
            with out:
                value = await asyncio.wait_for(tdef.fn(*args, **kwargs), timeout)
        except asyncio.TimeoutError:
            return dataclasses.replace(outcomes.failure(TaskTimeout(timeout), claimed.options,
                                                ctx.attempt, tdef), log=out.text)
        except Exception as exc:  # noqa: BLE001
            return dataclasses.replace(outcomes.failure(exc, claimed.options, ctx.attempt, tdef),
                                       log=out.text)
        return self._succeeded(value, claimed, ctx, out.text)

    def _workflow_option(self, workflow: str, name: str) -> Any:
        wdef = authoring.WORKFLOWS.get(workflow)
        return wdef.options.get(name) if wdef is not None else None

    # -- alerts ----------------------------------------------------------------------
    def _alert(self, ctx: TaskContext, tdef, outcome: ops.Outcome,
               run_state: str | None) -> None:
        """After commit: task callbacks, then workflow callbacks if the run just ended."""
        opts = tdef.options if tdef is not None else {}
        kind, hook = {SUCCEEDED: (alerts.TASK_SUCCEEDED, "on_success"),
                      FAILED: (alerts.TASK_FAILED, "on_failure"),
                      RETRYING: (alerts.TASK_RETRY, "on_retry")}[outcome.state]
        alerts.emit(self.config, alerts.Event(
            kind, ctx.run_id, ctx.workflow, ctx.node, outcome.state, ctx.attempt,
            outcome.error, ctx.params), [opts.get(hook)])
        if run_state is not None:
            self.run_ended(ctx.run_id, ctx.workflow, run_state)

    def run_ended(self, run_id: str, workflow: str, state: str) -> None:
        """Tell the workflow's callbacks and the notifiers that a run ended."""
        if state not in (SUCCEEDED, FAILED):
            return
        with self.store.read() as conn:
            run = read.get_run(conn, run_id, with_tasks=False)
            failed = read.failed_tasks(conn, run_id)
        first = failed[0] if failed else {}
        event = alerts.Event(
            alerts.RUN_SUCCEEDED if state == SUCCEEDED else alerts.RUN_FAILED, run_id,
            workflow, first.get("node"), state, None, first.get("error"), run["params"],
            run.get("logical_time"), failed)
        hook = "on_success" if state == SUCCEEDED else "on_failure"
        alerts.emit(self.config, event, [self._workflow_option(workflow, hook)])

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
