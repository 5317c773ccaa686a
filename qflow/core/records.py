"""The records the layers exchange: what to publish, what a worker claimed, how an attempt
ended and what recording it set in motion. Frozen dataclasses, standard library only."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Dispatch:
    """A task instance to publish: the message carries ids only."""

    run_id: str
    node: str
    attempt: int
    queue: str | None
    workflow: str
    countdown: float = 0.0
    timeout: float | None = None
    priority: int | None = None          # 0-9, 9 first


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to execute one attempt."""

    task_id: int
    task: str
    call: dict
    options: dict
    workflow: str
    params: dict
    logical_time: dt.datetime | None
    inputs: dict[str, Any]
    # No children and no pool slots: recording its outcome touches its own rows only.
    alone: bool = False
    # A branch task's children (None for other tasks).
    children: tuple[str, ...] | None = None
    # The children its row lists (None: not listed there; see store.children.children_of).
    listed: tuple[str, ...] | None = None
    # The first attempt since the task last started afresh (a resume restarts the count).
    first_attempt: int = 1
    # Its success touches its own rows and releases its children in one statement: they
    # are plain (see qflow_tasks.plain_children) and listed, its run has no dispatch
    # window, it takes no pool slots and updates no assets (PostgreSQL).
    releases: bool = False

    def tries(self, attempt: int) -> int:
        """How many attempts ``attempt`` is, counted from :attr:`first_attempt`."""
        return attempt - self.first_attempt + 1


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: succeeded, failed, or retrying after ``retry_in`` seconds."""

    state: str
    result: str | None = None        # JSON text (sealed with encryption_key)
    result_ref: str | None = None    # JSON: the stored object's url, size, sha256, …
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    retry_in: float | None = None
    chosen: tuple[str, ...] | None = None     # a branch task's choice of children
    log: str | None = None           # what the attempt printed and logged (capped)
    # The start of a long error, which the task row keeps instead of the whole of it:
    # the attempt's row has the whole error already (see :func:`qflow.core.outcomes.
    # storable`). None when the error is short enough to be its own summary.
    error_summary: str | None = None

    @property
    def short_error(self) -> str | None:
        """The error as the task row and its alerts keep it."""
        return self.error if self.error_summary is None else self.error_summary


@dataclass(frozen=True)
class Finished:
    """What a recorded outcome set in motion, to act on after commit."""

    workflow: str
    released: list[Dispatch] = field(default_factory=list)
    totals: tuple[int, int] | None = None     # (failed, canceled) if the run's last task ended
    # Places in the run's dispatch window are free and held-back tasks wait for them:
    # top the window up after commit (qflow.store.lifecycle.top_up).
    top_up: bool = False



def message_options(options: str | dict | None) -> dict[str, Any]:
    """The task options a message carries: its timeout and priority."""
    opts = json.loads(options) if isinstance(options, str) else (options or {})
    return {"timeout": opts.get("timeout"), "priority": opts.get("priority")}
