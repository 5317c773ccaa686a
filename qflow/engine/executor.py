"""The worker side of the coordinator: claim one attempt, call the task, record how it
ended and publish what that released.

Runs inside Celery's ``qflow.execute`` task (see :mod:`qflow.broker.app`), in a worker
process or in the embedded worker's threads.
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

from sqlalchemy.exc import DataError

from qflow import authoring
from qflow.context import TaskContext
from qflow.core import outcomes
from qflow.core.records import Claimed, Dispatch, Outcome
from qflow.core.states import FAILED, RETRYING, SENSING
from qflow.engine.calls import Caller
from qflow.engine.client import Engine
from qflow.engine.dispatch import Follow
from qflow.errors import WorkerLost
from qflow.store import attempts, flushing, lifecycle, liveness, read, sensing
from qflow.worker import aio

log = logging.getLogger("qflow.engine")


class Executor:
    """Runs attempts of nodes for one engine (its store, config and publisher)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.config = engine.config
        self.store = engine.store
        self._async_name: str | None = None     # this process's name for async tasks
        # The name attempts are claimed under when it is not the Celery worker's (the
        # embedded worker's, unique to its process, which heartbeats under it).
        self.name: str | None = None
        self.caller = Caller(engine.config, engine.store)

    def execute(self, run_id: str, node: str, attempt: int, worker: str = "",
                celery_id: str | None = None, follow: Follow | None = None
                ) -> Outcome | None:
        """Run one attempt of a node end to end. None when the message was stale.

        With ``follow``, a child this releases that ``follow`` takes runs next, here,
        claimed under the same ``celery_id`` (so a process lost under it is found), and
        so on down a chain; the return value is this attempt's own outcome.
        """
        outcome, item = self._execute_one(run_id, node, attempt, worker, celery_id, follow)
        while item is not None:
            current, started = item, time.monotonic()
            seen = _Seen(follow.report, current, celery_id) if follow and follow.report else None
            try:
                done, item = self._execute_one(current.run_id, current.node, current.attempt,
                                               worker, celery_id, follow)
            except Exception:  # noqa: BLE001 - not this message's task: send it instead
                log.exception("running %s/%s here failed; publishing it", current.run_id,
                              current.node)
                self.engine.publish([current])
                break
            if seen is not None:
                seen.ended(done, time.monotonic() - started)
            _log_followed(current, celery_id, done, time.monotonic() - started)
        if follow is not None and follow.report is not None:
            _Seen.flush(follow.report)
        return outcome

    def _execute_one(self, run_id: str, node: str, attempt: int, worker: str,
                     celery_id: str | None, follow: Follow | None
                     ) -> tuple[Outcome | None, Dispatch | None]:
        """One attempt; returns its outcome and the released child to run next, if any."""
        claim = attempts.claim_durably if self.config.durable_claims else attempts.claim
        claimed = self.store.transact(claim, run_id, node, attempt, worker, celery_id)
        if claimed is None:     # refused: a sensor's poke, due, whose pool slots it gave back?
            claimed = self.store.transact(sensing.wake, run_id, node, attempt, worker,
                                          celery_id)
        if claimed is None:
            # Stale, held, early, or a due poke now waiting in a full pool's list.
            log.info("skipping %s/%s attempt %s: not claimable now (stale, held, not due "
                     "yet, or waiting for a pool slot)", run_id, node, attempt)
            return None, None
        logical = claimed.logical_time
        ctx = TaskContext(run_id, claimed.workflow, node, attempt, claimed.params,
                          logical.replace(tzinfo=dt.timezone.utc) if logical else None)
        tdef = authoring.find_task(claimed.task)
        if tdef is not None and inspect.iscoroutinefunction(tdef.fn) \
                and claimed.options.get("isolation") not in ("subprocess", "container"):
            self._start_async(ctx, tdef, claimed, worker)
            return None, None                 # recorded by the event loop when it ends
        outcome = self.caller.call(tdef, claimed, ctx)
        return self._record(ctx, tdef, claimed.options, outcome, claimed, follow)

    # -- lost attempts -----------------------------------------------------------------
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
        outcome = outcomes.failure(exc, row["options"], attempt - row["first_attempt"] + 1,
                                   tdef)
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

    # -- recording -----------------------------------------------------------------------
    def _record(self, ctx: TaskContext, tdef, options: dict, outcome: Outcome,
                claimed: Claimed | None = None, follow: Follow | None = None
                ) -> tuple[Outcome | None, Dispatch | None]:
        """Record an outcome and publish what it released, except the one task ``follow``
        takes (returned second, for the caller to run next)."""
        if outcome.state == SENSING:          # a sensor's poke: put back until the next
            self.engine.publish(self.store.transact(sensing.poke_later, ctx.run_id, ctx.node,
                                                    ctx.attempt, outcome.retry_in or 0.0))
            return outcome, None
        wdef = authoring.WORKFLOWS.get(ctx.workflow)
        fail_fast = bool(wdef.options.get("fail_fast")) if wdef is not None else False
        outcome = self.caller.results.seal_outcome(
            outcomes.storable(outcome, self.config.error_max_bytes))
        alone = claimed is not None and attempts.finishes_alone(claimed, outcome, fail_fast,
                                                                self.store.outbox)
        args = (ctx.run_id, ctx.node, ctx.attempt)
        # A process that runs what it is handed (follow) takes the place this task frees
        # for the next held-back task of its run itself: no message, no top-up.
        hand_on = follow is not None and time.monotonic() < follow.deadline
        # In a crowded run a task with nothing to count hands its place on all the same
        # (a light commit, not a durable one then a top-up and a message).
        alone = alone and not (hand_on and flushing.lightly(self.store, ctx.run_id))
        try:
            finished = self._finish(args, outcome, fail_fast, hand_on, claimed, alone)
        except DataError as exc:
            if outcomes.is_unrecordable(outcome):
                raise
            # The DB refused a value of this outcome (too long for a column, say): record
            # that instead, so the task never stays running under a live worker.
            log.exception("outcome of %s/%s attempt %s could not be recorded", *args)
            outcome = outcomes.unrecordable(outcome, exc)
            finished = self.store.transact(attempts.finish, *args, outcome, fail_fast)
        if finished is None:
            log.warning("outcome of %s/%s attempt %s refused: no longer current", *args)
            return None, None
        default = self.config.default_queue
        kept = next((item for item in finished.released
                     if follow.takes(item, default)), None) if follow else None
        self.engine.publish([item for item in finished.released if item is not kept])
        if finished.top_up:          # places it freed in the run's window, filled now
            self.engine.publish(self.store.transact(lifecycle.top_up, ctx.run_id,
                                                    finished.workflow))
        ended = None                              # published first: the next tasks start
        if finished.totals is not None:           # sooner; this was the run's last task
            end = (ctx.run_id, finished.workflow, finished.totals)
            ended = self.store.transact(lifecycle.end_alone, *end) \
                or self.store.transact(lifecycle.end_run, *end)
            self.engine.publish(ended.to_publish)
        self.engine.alerts.task_ended(ctx.run_id, ctx.workflow, ctx.node, ctx.attempt,
                                      ctx.params, tdef, outcome)
        if ended is not None:
            self.engine.alerts.run_ended(ctx.run_id, ctx.workflow, ended.final)
        return outcome, kept

    def _finish(self, args: tuple, outcome: Outcome, fail_fast: bool, hand_on: bool,
                claimed: Claimed | None, alone: bool):
        """:func:`attempts.finish`, or :func:`attempts.finish_one` where that ``alone``
        records it; for a crowded run, committed without holding the run's row through a
        disk flush where the DB can flush after (see qflow.store.flushing)."""
        kids = (claimed.listed if claimed is not None else None,      # to count in, and
                attempts.releasing(claimed, outcome))                  # to release at once?
        if alone:
            return self.store.transact(attempts.finish_one, *args, outcome, fail_fast, *kids)
        rest = (outcome, fail_fast, True, hand_on, *kids)
        if not flushing.lightly(self.store, args[0]):
            return self.store.transact(attempts.finish, *args, *rest)
        finished = self.store.transact(flushing.finish_lightly, *args, *rest)
        if finished is None or flushing.flush(self.store):
            return finished
        # Lost with the connection, it may not have reached the disk: recorded again,
        # durably (refused as stale if it had: what it released is committed, published).
        return self.store.transact(attempts.finish, *args, *rest) or finished

    # -- async tasks: many overlap on one event loop per process --------------------------
    def _start_async(self, ctx: TaskContext, tdef, claimed: Claimed, worker: str) -> None:
        name = f"{worker}/{os.getpid()}"
        heartbeat = None
        if not self.config.embedded:
            self.store.transact(liveness.assign_worker, ctx.run_id, ctx.node, ctx.attempt, name)
            heartbeat = functools.partial(self.store.transact, liveness.heartbeat, name,
                                          os.getpid(), liveness.utcnow())
        loop = aio.runner(self.config.async_concurrency, heartbeat,
                          self.config.heartbeat_interval)
        self._async_name = name

        async def job() -> None:
            outcome = await self.caller.acall(tdef, claimed, ctx)
            await asyncio.get_running_loop().run_in_executor(
                None, self._record, ctx, tdef, claimed.options, outcome, claimed)

        loop.submit(job)

    def stop_async(self, timeout: float = 300.0) -> None:
        """At process shutdown: let running async tasks end, then forget the loop."""
        loop = aio.current()
        if loop is None:
            return
        loop.drain(timeout)
        if self._async_name and not self.config.embedded:
            self.store.transact(liveness.forget, self._async_name, os.getpid())


def _log_followed(item: Dispatch, celery_id: str | None, done: Outcome | None,
                  seconds: float) -> None:
    """No Celery task shows a task run after its parent: the worker log says it ran, as
    Celery would."""
    state = "no outcome here" if done is None else done.state   # async, or stale
    error = f": {done.error}" if done is not None and done.error else ""
    log.log(logging.WARNING if error else logging.INFO,
            "Task %s.%s[%s] run after its parent: %s in %.3fs%s", item.workflow, item.node,
            celery_id, state, seconds, error)


class _Seen:
    """The task events of a task run after its parent (see Follow.report): received and
    started now, then succeeded or failed, under an id of its own."""

    def __init__(self, report, item: Dispatch, parent_id: str | None):
        self.report, self.uuid = report, uuid.uuid4().hex
        # A report that can hold an event for the next one sent (qflow.broker.task_events)
        # sends the previous task's end and this one's received and started together.
        self.later = getattr(report, "later", report)
        try:
            self.later("task-received", uuid=self.uuid, name=f"{item.workflow}.{item.node}",
                       args=repr((item.run_id, item.node, item.attempt)), kwargs="{}",
                       retries=item.attempt - 1, root_id=parent_id, parent_id=parent_id)
            report("task-started", uuid=self.uuid)      # the dispatcher adds its pid
        except Exception:  # noqa: BLE001 - monitoring must not stop the task
            log.exception("task events for %s/%s not sent", item.run_id, item.node)

    def ended(self, outcome: Outcome | None, runtime: float) -> None:
        """The task's last event, held for the next one sent (see :meth:`flush`)."""
        try:
            if outcome is not None and outcome.state not in ("succeeded", "sensing"):
                self.later("task-failed", uuid=self.uuid, exception=repr(outcome.error_type),
                           traceback="")
            else:
                self.later("task-succeeded", uuid=self.uuid, result="None", runtime=runtime)
        except Exception:  # noqa: BLE001
            log.exception("task event for %s not sent", self.uuid)

    @staticmethod
    def flush(report) -> None:
        """Send what ``report`` holds: the last followed task's end."""
        try:
            getattr(report, "flush", lambda: None)()
        except Exception:  # noqa: BLE001
            log.exception("task events not sent")

