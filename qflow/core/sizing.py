"""How big a run's dispatch window is when ``dispatch_window = "auto"``: a multiple of
the live workers' processes on the run's queues, between a floor and a cap (standard
library only; the store reads the workers, see qflow.store.sizing)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

AUTO = "auto"


@dataclass(frozen=True)
class AutoWindow:
    """``per_slot`` places per worker process that serves one of the run's queues and
    heartbeat within ``live_within`` seconds; at least ``floor`` (a run triggered before
    any worker is up still sends its first tasks) and at most ``cap``."""

    per_slot: int
    floor: int
    cap: int
    live_within: float
    default_queue: str                      # the queue of a task that names none

    def size(self, slots: int) -> int:
        return min(self.cap, max(self.floor, self.per_slot * slots))

    @property
    def least(self) -> int:
        """The smallest size it can take, whatever the workers."""
        return min(self.cap, self.floor)

    def queues_of(self, queues: Iterable[str | None]) -> str:
        """A run's queues as stored with it (sorted, comma-separated names)."""
        return ",".join(sorted({q or self.default_queue for q in queues}))


def slots_for(queues: str, workers: Iterable[tuple[str, int | None]]) -> int:
    """The processes of the ``workers`` (their comma-separated queues, concurrency) that
    serve at least one of ``queues``; a worker serving several of them counts once, one
    that did not say its concurrency (an older qflow) as none."""
    wanted = set(queues.split(","))
    return sum(n or 0 for served, n in workers
               if wanted & {q.strip() for q in served.split(",")})
