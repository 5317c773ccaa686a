"""The run context a task can read while it executes."""
from __future__ import annotations

import contextvars
import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskContext:
    """Where the running task sits: its run, workflow, node, attempt and parameters."""

    run_id: str
    workflow: str
    node: str
    attempt: int
    params: dict[str, Any] = field(default_factory=dict)
    logical_time: dt.datetime | None = None


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "qflow_context", default=None)


def context() -> TaskContext:
    """The context of the task being executed; raises outside of a running task."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("qflow.context() is only available while a task runs")
    return ctx
