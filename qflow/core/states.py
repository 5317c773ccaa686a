"""Task and run states, the allowed transitions and the trigger rules (pure)."""
from __future__ import annotations

from dataclasses import dataclass

PENDING = "pending"
QUEUED = "queued"
RUNNING = "running"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
UPSTREAM_FAILED = "upstream_failed"
SKIPPED = "skipped"
CANCELED = "canceled"

TASK_STATES = (PENDING, QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED,
               UPSTREAM_FAILED, SKIPPED, CANCELED)
TERMINAL = frozenset({SUCCEEDED, FAILED, UPSTREAM_FAILED, SKIPPED, CANCELED})
RUN_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)

# Every task state write is checked against this table.
# Ended tasks may go back to pending/queued only when `qflow retry` resumes a run.
_RESUME = frozenset({PENDING, QUEUED})
TRANSITIONS: dict[str, frozenset[str]] = {
    # A mapped node ends from pending: it never runs itself, its elements do.
    PENDING: frozenset({QUEUED, UPSTREAM_FAILED, SKIPPED, CANCELED, SUCCEEDED, FAILED}),
    QUEUED: frozenset({RUNNING, CANCELED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, RETRYING, CANCELED}),
    RETRYING: frozenset({RUNNING, CANCELED}),
    SUCCEEDED: _RESUME,
    FAILED: _RESUME,
    UPSTREAM_FAILED: _RESUME,
    SKIPPED: _RESUME,
    CANCELED: _RESUME,
}
ACTIVE = frozenset({PENDING, QUEUED, RUNNING, RETRYING})

# Every run state write is checked against this one. A run is queued while held back by
# max_active_runs, running once admitted; `qflow retry` makes an ended run run again.
RUN_ENDED = frozenset({SUCCEEDED, FAILED, CANCELED})
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING}) | RUN_ENDED,
    RUNNING: RUN_ENDED,
    SUCCEEDED: frozenset({RUNNING}),
    FAILED: frozenset({RUNNING}),
    CANCELED: frozenset({RUNNING}),
}


class TransitionError(Exception):
    """A state write that the transitions table does not allow."""


def check_transition(old: str, new: str) -> None:
    """Raise TransitionError unless ``old -> new`` is allowed."""
    if new not in TRANSITIONS.get(old, frozenset()):
        raise TransitionError(f"task state {old!r} cannot become {new!r}")


def sources_of(new: str) -> tuple[str, ...]:
    """States from which ``new`` may be reached (for conditional updates)."""
    return tuple(s for s in TASK_STATES if new in TRANSITIONS[s])


def check_run_transition(old: str, new: str) -> None:
    """Raise TransitionError unless a run may go from ``old`` to ``new``."""
    if new not in RUN_TRANSITIONS.get(old, frozenset()):
        raise TransitionError(f"run state {old!r} cannot become {new!r}")


def run_sources_of(new: str) -> tuple[str, ...]:
    """Run states from which ``new`` may be reached, except a resumed run's return to
    running, which only `qflow retry` asks for (by naming the state it expects)."""
    return tuple(s for s in (QUEUED, RUNNING) if new in RUN_TRANSITIONS[s])


TRIGGER_RULES = ("all_success", "all_done", "all_failed", "one_success", "one_failed",
                 "none_failed", "none_failed_min_one_success", "always")

# What a trigger rule decides about a pending task.
WAIT, RUN, SKIP, UPSTREAM = "wait", "run", SKIPPED, UPSTREAM_FAILED


@dataclass(frozen=True)
class Upstream:
    """How a task's parents have ended so far."""

    total: int
    succeeded: int = 0
    failed: int = 0           # failed or upstream_failed
    skipped: int = 0          # skipped or canceled

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped


def decide(rule: str, up: Upstream) -> str:
    """Decide, per Airflow's semantics, whether a pending task runs, waits or ends.

    Returns ``"run"``, ``"wait"``, ``"skipped"`` or ``"upstream_failed"``.
    """
    if rule == "always" or up.total == 0:
        return RUN
    all_done = up.done == up.total
    if rule == "one_success":
        if up.succeeded:
            return RUN
        if not all_done:
            return WAIT
        return SKIP if up.skipped == up.total else UPSTREAM
    if rule == "one_failed":
        if up.failed:
            return RUN
        return SKIP if all_done else WAIT
    if not all_done:
        return WAIT
    if rule == "all_done":
        return RUN
    if rule == "all_success":
        if up.failed:
            return UPSTREAM
        return SKIP if up.skipped else RUN
    if rule == "all_failed":
        return RUN if up.failed == up.total else SKIP
    if rule == "none_failed":
        return UPSTREAM if up.failed else RUN
    if rule == "none_failed_min_one_success":
        if up.failed:
            return UPSTREAM
        return RUN if up.succeeded else SKIP
    raise ValueError(f"unknown trigger rule {rule!r}")


def run_state(failed: int, canceled: int) -> str:
    """Final state of a run whose tasks have all ended."""
    if failed:
        return FAILED
    if canceled:
        return CANCELED
    return SUCCEEDED
