"""When a failed attempt is tried again, and after how long (pure)."""
from __future__ import annotations

import random

from qflow.errors import Fail


def retry_in(options: dict, tries: int, exc: BaseException,
             retry_on: tuple[type[BaseException], ...] | None = None) -> float | None:
    """Seconds to wait before the next attempt, or None when the task fails for good.

    ``options`` are the task's row options: ``retries``, ``retry_delay`` (first delay),
    ``retry_backoff`` (factor per attempt), ``max_retry_delay`` (cap), ``retry_jitter``
    (spread each delay at random over its upper half). ``tries``: how many attempts have
    failed since the task last started afresh (``qflow retry`` resets the count, so each
    resume has the full budget again).
    """
    if isinstance(exc, Fail):
        return None
    if retry_on and not isinstance(exc, retry_on):
        return None
    if tries > options.get("retries", 0):
        return None
    delay = float(options.get("retry_delay", 0)) * float(
        options.get("retry_backoff", 1)) ** (tries - 1)
    cap = options.get("max_retry_delay")
    if cap is not None:
        delay = min(delay, float(cap))
    if options.get("retry_jitter"):
        delay = random.uniform(delay / 2, delay)
    return delay
