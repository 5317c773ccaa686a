"""Wires config, store, Celery app and engine together, once per process."""
from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from typing import Iterator

from qflow.broker.app import CeleryDispatcher, embedded_worker, make_celery
from qflow.config import Config
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.store import Store
from qflow.store.liveness import take_stale
from qflow.store.migrate import ensure_schema


class Runtime:
    """Everything a command needs, built lazily from one Config."""

    def __init__(self, config: Config):
        self.config = config

    @cached_property
    def store(self) -> Store:
        return Store(self.config.database_url, pool_size=self.config.db_pool_size)

    @cached_property
    def celery(self):
        return make_celery(self.config, lambda: self.executor)

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.config, self.store, CeleryDispatcher(self.celery, self.config))

    @cached_property
    def executor(self) -> Executor:
        return Executor(self.engine)

    @cached_property
    def upkeep(self) -> Upkeep:
        return Upkeep(self.executor)

    def ready_store(self) -> Store:
        """The store, reachable and with an up-to-date schema."""
        self.store.ping()
        ensure_schema(self.store)
        return self.store

    @contextmanager
    def embedded(self) -> Iterator[None]:
        """Run an in-process worker when no broker is configured; no-op otherwise."""
        if not self.config.embedded:
            yield
            return
        with embedded_worker(self.celery, self.config.embedded_concurrency):
            # A fresh in-memory broker: whatever an earlier process left queued in the DB
            # has no message any more, so send it again (a duplicate cannot run twice).
            self.engine.publish(self.store.transact(take_stale, 0.0))
            yield
