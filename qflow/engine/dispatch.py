"""The seam between the engine and the broker: what publishes messages, and when a worker
may run a released child itself instead of publishing it."""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Protocol

from qflow.core.records import Dispatch


class PublishError(Exception):
    """The broker could not take these messages."""

    def __init__(self, unsent: list[Dispatch], reason: object):
        self.unsent = unsent
        super().__init__(str(reason))


class Dispatcher(Protocol):
    """Publishes task messages (ids only) to workers, and stops running ones."""

    def publish(self, items: list[Dispatch]) -> None: ...

    def check(self) -> None: ...

    def revoke(self, celery_ids: list[str]) -> None: ...

    def waiting(self, queue: str) -> int | None:
        """How many messages wait in ``queue`` on the broker (None: cannot tell)."""


@dataclasses.dataclass(frozen=True)
class Follow:
    """Lets a worker run a task's released child itself, in the same process, instead of
    publishing it: a chain's next hop then skips the broker round trip. Only a child
    that goes to the message's own queue, now, with no time limit, and only until
    ``deadline`` (``time.monotonic()``), so a long chain still yields to other messages
    and a message never outlives Celery's hard limit."""

    queue: str
    deadline: float
    # While the worker sends task events (Flower watches): sends one event of a task run
    # here, as the worker would for a message (``report("task-started", uuid=..., ...)``);
    # its ``later`` and ``flush``, if it has them, hold events to send with the next ones.
    report: Callable[..., None] | None = None

    def takes(self, item: Dispatch, default_queue: str) -> bool:
        return ((item.queue or default_queue) == self.queue and not item.countdown
                and item.timeout is None and time.monotonic() < self.deadline)
