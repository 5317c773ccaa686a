"""Wires config, store, Celery app and engine together, once per process."""
from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from qflow.config import Config
from qflow.errors import NoResultsDB, UserError
from qflow.store.plain import sqlite_database

# Celery, the engine, Alembic and SQLAlchemy are imported by what needs them: `qflow
# status` reads without any of them (bench/cli_startup.py).
if TYPE_CHECKING:
    from qflow.engine.client import Engine
    from qflow.engine.executor import Executor
    from qflow.engine.upkeep import Upkeep
    from qflow.store import Store


class Runtime:
    """Everything a command needs, built lazily from one Config."""

    def __init__(self, config: Config):
        self.config = config

    @cached_property
    def store(self) -> Store:
        from qflow.store.db import Store

        refuse_private_sqlite(self.config)
        _ = self.results            # installed first: the store's readers decode with it
        return Store(self.config.database_url, pool_size=self.config.db_pool_size)

    @cached_property
    def results(self):
        """How return values, logs, errors and secrets are kept and read back (the
        result store and the keys); this process's, for the store's readers."""
        from qflow.results import codec

        return codec.install(codec.for_config(self.config))

    @cached_property
    def celery(self):
        from qflow.broker.app import make_celery

        return make_celery(self.config, lambda: self.executor)

    @cached_property
    def engine(self) -> Engine:
        from qflow.broker.app import CeleryDispatcher
        from qflow.engine.client import Engine

        return Engine(self.config, self.store, CeleryDispatcher(self.celery, self.config))

    @cached_property
    def executor(self) -> Executor:
        from qflow.engine.executor import Executor

        return Executor(self.engine)

    @cached_property
    def upkeep(self) -> Upkeep:
        from qflow.engine.upkeep import Upkeep

        return Upkeep(self.executor)

    def ready_store(self, migrate: bool = True) -> Store:
        """The store, reachable and with an up-to-date schema.

        Commands that only read pass ``migrate=False``: they neither create a SQLite file
        nor migrate a DB (another qflow version may be using it), and raise
        :class:`NoResultsDB` when there is nothing to read yet.
        """
        from qflow.store.migrate import check_schema, ensure_schema

        if not migrate:
            path = sqlite_path(self.config.database_url)
            if path is not None and not path.exists():
                raise NoResultsDB(f"no results DB at {path} (nothing has run here yet, or "
                                  "QFLOW_DATABASE_URL points elsewhere)")
        self.store.ping()
        if migrate:
            ensure_schema(self.store)
        else:
            check_schema(self.store)
        return self.store

    def warnings(self, run_id: str) -> list[str]:
        """Why the run's waiting tasks may never start, in words a user can act on: a
        queue no live worker serves, or messages its workers refuse as unsigned (see
        :func:`qflow.store.status.warnings`)."""
        if self.config.embedded:            # the embedded worker serves every queue
            return []
        from qflow.store import status

        with self.store.read() as conn:
            return status.warnings(conn, run_id, self.config)

    @contextmanager
    def embedded(self) -> Iterator[None]:
        """Run an in-process worker when no broker is configured; no-op otherwise."""
        if not self.config.embedded:
            yield
            return
        from qflow.broker.app import embedded_worker
        from qflow.engine.upkeep import Maintenance
        from qflow.store.liveness import take_stale

        self.results.check()        # a missing result store fails here, not per task
        with embedded_worker(self.celery, self.config.embedded_concurrency) as name:
            # Heartbeats, so that a later `qflow run` knows this one's attempts are owned,
            # and the sweeper, which finds those of an earlier one that was killed.
            self.executor.name = name
            upkeep = Maintenance(self.upkeep, name)
            upkeep.beat()
            self.upkeep.bury_local_dead()
            upkeep.start()
            try:
                # A fresh in-memory broker: whatever an earlier process left queued in the
                # DB has no message any more, so send it again (a duplicate cannot run
                # twice).
                self.engine.publish(self.store.transact(take_stale, 0.0))
                yield
            finally:
                upkeep.stop()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for another DB or an in-memory one)."""
    if not url.startswith("sqlite"):
        return None
    database = sqlite_database(url)             # the usual URLs, without SQLAlchemy
    if database is None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            database = make_url(url).database
        except (ArgumentError, ValueError):     # the Store says what is wrong with it
            return None
    return Path(database).expanduser() if database and database != ":memory:" else None


def refuse_private_sqlite(config: Config) -> None:
    """With a real broker every process must share one results DB: a relative SQLite path
    names a different file in each process's directory, and an in-memory one is private,
    so a cluster would split silently (tasks skipped, runs queued for ever)."""
    url = config.database_url
    if config.embedded or not url.startswith("sqlite"):
        return
    path = sqlite_path(url)
    if path is not None and path.is_absolute():
        return
    raise UserError(f"the results DB {url} is private to each process (a relative or "
                    "in-memory SQLite path), but a broker is set: use PostgreSQL or an "
                    "absolute path such as sqlite:////srv/qflow/qflow.db")
