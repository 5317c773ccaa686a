"""Run a task function under a time limit.

In a prefork (or solo) worker the task runs in the process' main thread, where SIGALRM
interrupts it; elsewhere (the embedded threads pool) the function runs in a helper thread
and is abandoned when it overruns, since a thread cannot be killed. Celery's hard
``time_limit`` (set on each message a little above the timeout) kills a prefork child that
ignores the alarm.
"""
from __future__ import annotations

import contextvars
import signal
import threading
from typing import Any, Callable

from qflow.errors import TaskTimeout


def call_with_timeout(fn: Callable, args: list, kwargs: dict, timeout: float | None) -> Any:
    if not timeout:
        return fn(*args, **kwargs)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, args, kwargs, timeout)
    return _with_thread(fn, args, kwargs, timeout)


def _with_alarm(fn: Callable, args: list, kwargs: dict, timeout: float) -> Any:
    def on_alarm(_signum, _frame):
        raise TaskTimeout(timeout)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _with_thread(fn: Callable, args: list, kwargs: dict, timeout: float) -> Any:
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="qflow-task")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TaskTimeout(timeout)
    if "error" in box:
        raise box["error"]
    return box.get("value")
