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
# A sensor between two pokes: not ended, holding no worker, its next poke due at queued_at.
SENSING = "sensing"

TASK_STATES = (PENDING, QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED,
               UPSTREAM_FAILED, SKIPPED, CANCELED, SENSING)
TERMINAL = frozenset({SUCCEEDED, FAILED, UPSTREAM_FAILED, SKIPPED, CANCELED})
RUN_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)

# Every task state write is checked against this table.
# Ended tasks may go back to pending/queued only when `qflow retry` resumes a run.
_RESUME = frozenset({PENDING, QUEUED})
TRANSITIONS: dict[str, frozenset[str]] = {
    # A mapped node ends from pending: it never runs itself, its elements do.
    PENDING: frozenset({QUEUED, UPSTREAM_FAILED, SKIPPED, CANCELED, SUCCEEDED, FAILED}),
    QUEUED: frozenset({RUNNING, CANCELED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, RETRYING, CANCELED, SENSING}),
    RETRYING: frozenset({RUNNING, CANCELED}),
    # A due poke of a sensor that gave its pool slots back is queued to take them again.
    SENSING: frozenset({RUNNING, QUEUED, CANCELED}),
    SUCCEEDED: _RESUME,
    FAILED: _RESUME,
    UPSTREAM_FAILED: _RESUME,
    SKIPPED: _RESUME,
    CANCELED: _RESUME,
}
ACTIVE = frozenset({PENDING, QUEUED, RUNNING, RETRYING, SENSING})

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
    """How a task's parents have ended so far.

    ``failed`` counts parents that ended failed or upstream_failed (Airflow treats both
    as failures under every rule). ``skipped`` counts parents that ended skipped or
    canceled: Airflow has no canceled task state (a run stopped by hand there leaves its
    unstarted tasks skipped), so a canceled parent skips its ``all_success`` children
    rather than failing them, and the run ends canceled rather than failed.
    """

    total: int
    succeeded: int = 0
    failed: int = 0           # failed or upstream_failed
    skipped: int = 0          # skipped or canceled

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def all_done(self) -> bool:
        return self.done >= self.total


def decide(rule: str, up: Upstream) -> str:
    """Decide, as Airflow's scheduler does, whether a pending task runs, waits or ends.

    It is asked again each time one more parent ends, and a task ends as soon as its
    rule settles it, without waiting for its other parents; the first decision other
    than ``"wait"`` is final. Returns ``"run"``, ``"wait"``, ``"skipped"`` or
    ``"upstream_failed"``.
    """
    if rule == "always" or up.total == 0:
        return RUN
    judge = _RULES.get(rule)
    if judge is None:
        raise ValueError(f"unknown trigger rule {rule!r}")
    return judge(up)


def _all_success(up: Upstream) -> str:
    # A failed parent fails it at once, a skipped one skips it at once: whichever ends
    # first decides (Airflow looks at failures first when it sees both together).
    if up.failed:
        return UPSTREAM
    if up.skipped:
        return SKIP
    return RUN if up.all_done else WAIT


def _all_failed(up: Upstream) -> str:
    if up.succeeded or up.skipped:
        return SKIP
    return RUN if up.all_done else WAIT


def _all_done(up: Upstream) -> str:
    return RUN if up.all_done else WAIT


def _one_success(up: Upstream) -> str:
    if up.succeeded:
        return RUN
    if not up.all_done:
        return WAIT
    return SKIP if up.skipped == up.total else UPSTREAM


def _one_failed(up: Upstream) -> str:
    if up.failed:
        return RUN
    return SKIP if up.all_done else WAIT


def _none_failed(up: Upstream) -> str:
    if up.failed:
        return UPSTREAM
    return RUN if up.all_done else WAIT


def _none_failed_min_one_success(up: Upstream) -> str:
    # Skipped only once every parent is (one may still succeed until then).
    if up.failed:
        return UPSTREAM
    if up.skipped == up.total:
        return SKIP
    return RUN if up.all_done else WAIT


_RULES = {"all_success": _all_success, "all_failed": _all_failed, "all_done": _all_done,
          "one_success": _one_success, "one_failed": _one_failed,
          "none_failed": _none_failed,
          "none_failed_min_one_success": _none_failed_min_one_success}


def run_state(failed: int, canceled: int) -> str:
    """Final state of a run whose tasks have all ended."""
    if failed:
        return FAILED
    if canceled:
        return CANCELED
    return SUCCEEDED
