"""Calling a task's function for one attempt and turning what it did into an outcome:
in this thread (with its time limit), in a subprocess, in a container, or on the event
loop for async functions. What it prints and logs is captured with it."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from qflow.config import Config
from qflow.context import TaskContext, _current
from qflow.core import dag, outcomes
from qflow.core.records import Claimed, Outcome
from qflow.core.states import FAILED, SUCCEEDED
from qflow.errors import TaskTimeout
from qflow.results import codec, logs, secrets
from qflow.store import Store, livelog
from qflow.worker import capture, container, isolation
from qflow.worker.timeouts import call_with_timeout


class Caller:
    """Calls task functions for the executor of one process."""

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self.results = codec.for_config(config)

    def call(self, tdef, claimed: Claimed, ctx: TaskContext) -> Outcome:
        """Run the attempt here (or in the subprocess or container it asks for)."""
        if tdef is None:
            return outcomes.missing(claimed.task, ctx.attempt)
        out = capture.Capture(self.config.log_max_bytes, self.config.log_level)
        try:
            args, kwargs, ctx = self.arguments(claimed, ctx)
        except Exception as exc:  # noqa: BLE001 - e.g. a parent's value cannot be read
            return self.failed(exc, tdef, claimed, ctx, out)
        token = _current.set(ctx)
        try:
            with out:
                value = self.invoke(tdef, args, kwargs, claimed.options)
        except Exception as exc:  # noqa: BLE001 - any task error is the task's outcome
            return self.failed(exc, tdef, claimed, ctx, out)
        finally:
            _current.reset(token)
        return self.succeeded(value, claimed, ctx, out)

    def arguments(self, claimed: Claimed, ctx: TaskContext
                  ) -> tuple[list, dict, TaskContext]:
        """The call's arguments, with the parents' values read back (from the DB or the
        result store) and secret parameters opened, and the context the task sees."""
        opened = secrets.open_params(claimed.params, self.results)
        inputs = {node: self.results.load(stored, node)
                  for node, stored in claimed.inputs.items()}
        args, kwargs = (dag.substitute(secrets.open_call(claimed.call.get(k, empty), opened,
                                                         self.results), inputs)
                        for k, empty in (("args", []), ("kwargs", {})))
        if opened != claimed.params:
            ctx = dataclasses.replace(ctx, params=secrets.for_context(claimed.params, opened))
        return args, kwargs, ctx

    def invoke(self, tdef, args: list, kwargs: dict, options: dict) -> Any:
        timeout = options.get("timeout")
        if options.get("isolation") == "container":
            # Writes its output so far as the attempt's live log about once a second; the
            # write also says when the attempt was canceled (then the container stops).
            ctx = _current.get()
            def live(text: str | None, ended: bool = False) -> bool:
                # With log_store = "results" the text goes to the attempt's log object
                # and the row only says that the attempt has a live log there.
                stored = text is not None and self.results.logs_in_store
                if stored:
                    logs.write(self.results, text, ctx.run_id, ctx.node, ctx.attempt)
                return self.store.transact(livelog.write, ctx.run_id, ctx.node, ctx.attempt,
                                           None if stored else self.results.seal(text),
                                           ended, stored)
            return container.invoke(tdef, args, kwargs, self.config, ctx, timeout, live)
        if options.get("isolation") == "subprocess":
            return isolation.call_in_subprocess(tdef.fn, args, kwargs, timeout,
                                                self.config.log_max_bytes)
        return call_with_timeout(tdef.fn, args, kwargs, timeout)

    def failed(self, exc: BaseException, tdef, claimed: Claimed, ctx: TaskContext,
                out: capture.Capture) -> Outcome:
        tries = claimed.tries(ctx.attempt)
        return dataclasses.replace(outcomes.failure(exc, claimed.options, tries, tdef),
                                   log=self.log(ctx, out))

    def succeeded(self, value: Any, claimed: Claimed, ctx: TaskContext,
                   out: capture.Capture) -> Outcome:
        if claimed.options.get("branch"):
            outcome = outcomes.branch(value, ctx.node, list(claimed.children or ()))
        else:
            limit = int(claimed.options.get("result_max_bytes")
                        or self.config.result_max_bytes)
            outcome = (self.poked(value, claimed, ctx, limit) if claimed.options.get("sensor")
                       else self.kept(value, claimed, ctx, limit))
        return dataclasses.replace(outcome, log=self.log(ctx, out))

    def log(self, ctx: TaskContext, out: capture.Capture) -> str | None:
        """What the attempt printed, as its row keeps it (None when it went to the
        result store: ``log_store = "results"``)."""
        return logs.keep(self.results, out.text, ctx.run_id, ctx.node, ctx.attempt)

    def kept(self, value: Any, claimed: Claimed, ctx: TaskContext, limit: int) -> Outcome:
        """The value kept in the DB or written to the result store (then referenced)."""
        try:
            stored = self.results.keep(value, claimed.options.get("serializer", "json"),
                                       limit, ctx.run_id, ctx.node, ctx.attempt)
        except codec.OutputError as exc:
            return Outcome(FAILED, error_type="TaskOutputError", error=str(exc))
        return Outcome(SUCCEEDED, result=stored.text, result_ref=stored.ref_text())

    def poked(self, value: Any, claimed: Claimed, ctx: TaskContext, limit: int) -> Outcome:
        """A sensor's poke: done, sensing until the next one, or timed out."""
        from qflow import sensors
        from qflow.store import sensing
        from qflow.store.transitions import utcnow

        if value:            # found: kept as any task's value (result store, key)
            return self.kept(value, claimed, ctx, limit)
        with self.store.read() as conn:
            since = sensing.sensing_since(conn, claimed.task_id, ctx.attempt)
        return sensors.poke_outcome(value, claimed.options, since, utcnow(),
                                    claimed.tries(ctx.attempt), limit)

    async def acall(self, tdef, claimed: Claimed, ctx: TaskContext) -> Outcome:
        timeout = claimed.options.get("timeout")
        out = capture.Capture(self.config.log_max_bytes, self.config.log_level)
        try:
            args, kwargs, ctx = self.arguments(claimed, ctx)
            _current.set(ctx)                     # this coroutine's own context
            with out:
                value = await asyncio.wait_for(tdef.fn(*args, **kwargs), timeout)
        except asyncio.TimeoutError:
            return self.failed(TaskTimeout(timeout), tdef, claimed, ctx, out)
        except Exception as exc:  # noqa: BLE001
            return self.failed(exc, tdef, claimed, ctx, out)
        return self.succeeded(value, claimed, ctx, out)
