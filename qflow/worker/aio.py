"""``async def`` tasks: one event loop per worker process, so many I/O-bound tasks overlap.

The Celery task that starts an async task hands the coroutine to this process' loop and
returns; the loop records the outcome when the coroutine ends. At most
``async_concurrency`` coroutines run per process (the next Celery task waits for a free
place). Because the Celery message is acknowledged before the coroutine ends, the loop
heartbeats under its own name (``worker/pid``): if the process dies, the sweeper requeues
its coroutines' attempts like those of any lost worker.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Awaitable, Callable

log = logging.getLogger("qflow.aio")


class LoopRunner:
    """An event loop in a daemon thread of this process."""

    def __init__(self, limit: int, heartbeat: Callable[[], None] | None, interval: float):
        self.loop = asyncio.new_event_loop()
        self.slots = threading.BoundedSemaphore(limit)
        self.pending: set = set()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="qflow-async", daemon=True)
        self.thread.start()
        if heartbeat is not None:
            asyncio.run_coroutine_threadsafe(self._beat(heartbeat, interval), self.loop)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _beat(self, heartbeat: Callable[[], None], interval: float) -> None:
        while True:
            try:
                await self.loop.run_in_executor(None, heartbeat)
            except Exception:  # noqa: BLE001 - keep beating through DB blips
                log.exception("async loop heartbeat failed")
            await asyncio.sleep(interval)

    def submit(self, job: Callable[[], Awaitable[Any]]) -> None:
        """Start ``job()`` on the loop once a place is free (blocks until then)."""
        self.slots.acquire()
        future = asyncio.run_coroutine_threadsafe(job(), self.loop)
        with self._lock:
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future) -> None:
        with self._lock:
            self.pending.discard(future)
        self.slots.release()
        if not future.cancelled() and future.exception() is not None:
            log.error("async task wrapper failed", exc_info=future.exception())

    def drain(self, timeout: float) -> None:
        """Wait for the running coroutines (at worker shutdown)."""
        with self._lock:
            futures = list(self.pending)
        for future in futures:
            try:
                future.result(timeout)
            except Exception:  # noqa: BLE001 - already logged by _done
                pass


_runners: dict[int, LoopRunner] = {}
_runners_lock = threading.Lock()


def runner(limit: int, heartbeat: Callable[[], None] | None, interval: float) -> LoopRunner:
    """This process' loop (a forked child gets its own)."""
    with _runners_lock:
        found = _runners.get(os.getpid())
        if found is None:
            found = _runners[os.getpid()] = LoopRunner(limit, heartbeat, interval)
        return found


def current() -> LoopRunner | None:
    return _runners.get(os.getpid())
