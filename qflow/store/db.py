"""Engines and transactions: WAL + busy timeout + BEGIN IMMEDIATE on SQLite, pooled PostgreSQL."""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from qflow.errors import UnreachableError, UserError, hide_password, one_line
from qflow.store.plain import BUSY_TIMEOUT_MS

log = logging.getLogger("qflow.store")

_RETRY_SQLSTATES = {"40001", "40P01"}     # serialization failure, deadlock detected


class Store:
    """The results DB of one process. Create the engine lazily: workers fork."""

    def __init__(self, url: str, pool_size: int = 5, retry_seconds: float = 0.0):
        self.url = url
        self.pool_size = pool_size
        # How long a write keeps retrying while the DB is unreachable (workers wait out a
        # DB restart instead of losing an outcome; the CLI fails at once).
        self.retry_seconds = retry_seconds
        # The alert kinds written to the outbox with the state change they report (the
        # engine sets them from the notifiers configured; see qflow.store.outbox).
        self.outbox: frozenset[str] = frozenset()
        self._engines: dict[tuple[bool, bool], Engine] = {}
        self._kept = _Kept()
        self._pid = 0
        self.dialect = _dialect_of(url)

    @property
    def engine(self) -> Engine:
        """The engine of durable transactions (and reads)."""
        return self._engine_for(durable=True)

    def _engine_for(self, durable: bool, autocommit: bool = False) -> Engine:
        if self._pid != os.getpid():
            # A forked child must not reuse the parent's pooled connections.
            for engine in self._engines.values():
                engine.dispose(close=False)
            self._engines, self._pid, self._kept = {}, os.getpid(), _Kept()
        if self.dialect == "sqlite":
            # One engine: WAL + synchronous=NORMAL already; every write is a transaction.
            durable, autocommit = True, False
        key = (durable, autocommit)
        if key not in self._engines:
            self._engines[key] = self._make_engine(durable, autocommit)
        return self._engines[key]

    def _make_engine(self, durable: bool, autocommit: bool) -> Engine:
        try:
            if self.dialect == "sqlite":
                return _sqlite_engine(self.url)
            options: dict = {}
            if not durable:
                # Writes a crash may lose without harm use their own pool whose sessions
                # do not wait for the disk at commit (set once per connection, not per
                # transaction: that would cost a round trip each time).
                options["connect_args"] = {"options": "-c synchronous_commit=off"}
            if autocommit:
                # Set once per engine: switching a pooled connection to autocommit and
                # back costs more Python than the statement it saves a BEGIN for.
                options["isolation_level"] = "AUTOCOMMIT"
            # Workers (which retry) skip the pre-ping, a round trip per transaction: a
            # connection the server dropped fails its first statement and transact()
            # retries on a fresh one. Short-lived clients keep it.
            return create_engine(self.url, pool_pre_ping=not self.retry_seconds,
                                 pool_size=self.pool_size, max_overflow=self.pool_size,
                                 **options)
        except (NoSuchModuleError, ImportError) as exc:
            raise UserError(f"database URL {hide_password(self.url)}: {one_line(exc)} "
                            "(for PostgreSQL: pip install 'qflow[postgres]')") from None

    def dispose(self) -> None:
        self._kept.close_all()
        for engine in self._engines.values():
            engine.dispose()
        self._engines, self._kept = {}, _Kept()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (a deferred transaction, rolled back at the end), in
        which every statement sees the DB as the first one did: SQLite's deferred
        transaction does, PostgreSQL's at REPEATABLE READ (READ COMMITTED would let a
        count read in several statements, say a map's counters then its moving tasks,
        see a task that moved in between twice or not at all). A read-only transaction
        at that level never fails to serialise."""
        with self._connect() as conn:
            if self.dialect == "postgresql":
                # Set on the pooled connection before its transaction begins; the pool
                # puts the default back when it is returned.
                conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def read_once(self, fn: Callable, *args):
        """``fn(conn, *args)``, a read of one statement: on PostgreSQL on this thread's kept
        autocommit connection (no pre-ping, BEGIN, ROLLBACK: a client polls many runs),
        again on a fresh one if the kept one was lost meanwhile; else in :meth:`read`."""
        if self.dialect != "postgresql":
            with self.read() as conn:
                return fn(conn, *args)
        for last in (False, True):
            try:
                with self._autocommitted(durable=True) as conn:
                    return fn(conn, *args)
            except DBAPIError as exc:
                if last or not _disconnected(exc, self.dialect):
                    raise

    @contextmanager
    def write(self, durable: bool = True, autocommit: bool = False) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success.

        ``durable=False`` lets PostgreSQL acknowledge the commit before it is flushed to
        disk: for writes that a crash may lose without harm, because something else
        redoes them (a lost claim leaves the task queued; the reconciler re-sends it).
        ``autocommit=True`` (PostgreSQL) commits each statement on its own, saving the
        BEGIN and COMMIT round trips: for writers whose statements are each complete.
        """
        if autocommit and self.dialect == "postgresql":
            with self._autocommitted(durable) as conn:
                conn.execution_options(qflow_outbox=self.outbox)
                yield conn
            return
        with self._connect(durable) as conn:
            conn.execution_options(qflow_write=True, qflow_outbox=self.outbox)
            with conn.begin():
                yield conn

    def transact(self, fn, *args, retries: int = 8):
        """Run ``fn(conn, *args)`` in a write transaction, with the policy ``fn`` declares
        (see :func:`query`; by default durable, one transaction, simply repeated).

        Deadlocks and a busy SQLite are retried ``retries`` times; a lost or refused
        connection is retried with backoff for ``retry_seconds``. The whole transaction
        runs again each time, so ``fn`` must only touch the DB. After a lost connection
        the first try may have committed all the same: ``in_doubt`` (same arguments)
        then runs instead of ``fn``, for writes that cannot simply be repeated.
        """
        policy: Policy = getattr(fn, "policy", _DEFAULT)
        deadline = float("inf") if policy.patient else time.monotonic() + self.retry_seconds
        conflicts = outages = 0
        call = fn
        while True:
            try:
                with self.write(policy.durable, policy.autocommit) as conn:
                    return call(conn, *args)
            except DBAPIError as exc:
                if _retryable(exc) and conflicts < retries:
                    conflicts += 1
                    time.sleep(min(0.5, 0.01 * 2 ** conflicts) * random.random())
                    continue
                if not _disconnected(exc, self.dialect) or time.monotonic() >= deadline:
                    raise
                reason: object = exc.orig or exc
            except UnreachableError as exc:
                if time.monotonic() >= deadline:
                    raise
                reason = exc
            outages += 1
            call = policy.in_doubt or fn
            log.warning("results DB unreachable (%s); retrying", one_line(reason))
            time.sleep(min(5.0, 0.1 * 2 ** outages))

    @contextmanager
    def _connect(self, durable: bool = True) -> Iterator[Connection]:
        with self._open(self._engine_for(durable)) as conn:
            yield conn

    def _open(self, engine: Engine) -> Connection:
        try:
            return engine.connect()
        except OperationalError as exc:
            raise UnreachableError("results DB", self.url, exc.orig or exc) from None
        except DatabaseError as exc:
            if self.dialect != "sqlite":
                raise
            # A corrupt, truncated or foreign file fails the connection's first PRAGMA.
            raise UnreachableError("results DB", self.url,
                                   f"{one_line(exc.orig or exc)} (not a usable SQLite "
                                   "database: corrupt, truncated or another kind of "
                                   "file)") from None

    @contextmanager
    def _autocommitted(self, durable: bool) -> Iterator[Connection]:
        """This thread's connection of the autocommit engine, kept checked out between
        calls (a worker sends two such statements per task; a pool checkout and check-in
        costs about as much Python as one of them; see :class:`_Kept`). Dropped after any
        error, so the next call starts from a fresh one."""
        engine = self._engine_for(durable, autocommit=True)       # forgets them after fork
        slot = "durable" if durable else "relaxed"
        conn = self._kept.get(slot) or self._open(engine)
        try:
            yield conn
        except BaseException:
            self._kept.drop(slot, conn)
            raise
        self._kept.used(slot, conn)

    def ping(self) -> None:
        """Raise UnreachableError unless the DB answers."""
        with self.read() as conn:
            conn.execute(text("SELECT 1"))


# Seconds a kept autocommit connection may sit unused before it is pinged before use.
PING_IDLE = 1.0


class _Kept:
    """Each thread's kept connections of the autocommit engines, by slot, and when each
    was last used; every thread's, to close them all. One that sat idle for
    :data:`PING_IDLE` seconds is pinged before it is used again, as the pool pings one it
    hands out (the server may have dropped it meanwhile): a busy worker or a client
    triggering many runs sends no ping."""

    def __init__(self):
        self.local = threading.local()
        self.all: set[Connection] = set()

    def get(self, slot: str) -> Connection | None:
        """This thread's connection for ``slot``; None if it has none, or none that
        answers."""
        conn, used = getattr(self.local, slot, None) or (None, 0.0)
        if conn is None or conn.closed:
            return None
        if time.monotonic() - used > PING_IDLE:
            try:
                conn.exec_driver_sql("SELECT 1")
            except DBAPIError:
                self.drop(slot, conn)
                return None
        return conn

    def used(self, slot: str, conn: Connection) -> None:
        setattr(self.local, slot, (conn, time.monotonic()))
        self.all.add(conn)

    def drop(self, slot: str, conn: Connection) -> None:
        setattr(self.local, slot, None)
        self.all.discard(conn)
        conn.close()

    def close_all(self) -> None:
        for conn in self.all:
            conn.close()


@dataclass(frozen=True)
class Policy:
    """How :meth:`Store.transact` runs a write query (see :meth:`Store.write`).

    ``durable=False``: the commit may be lost in a server crash without harm. ``autocommit``:
    each statement is complete on its own. ``in_doubt``: what to run instead after a lost
    connection, for a write that may have committed and cannot simply be repeated.
    ``patient``: wait out an outage however long it lasts (a worker's outcome: dropping
    it would leave its task running under a live worker, whom no sweeper suspects)."""

    durable: bool = True
    autocommit: bool = False
    in_doubt: Callable | None = None
    patient: bool = False      # retry through an outage of any length, not retry_seconds


_DEFAULT = Policy()


def query(durable: bool = True, autocommit: bool = False, in_doubt: Callable | None = None,
          patient: bool = False):
    """Declare a write query's transaction policy where it is defined, so its callers
    just ``store.transact(fn, ...)`` and a reader of ``fn`` sees how it commits."""
    def mark(fn):
        fn.policy = Policy(durable, autocommit, in_doubt, patient)
        return fn
    return mark


def _dialect_of(url: str) -> str:
    """The URL's backend name; UserError for a URL that does not parse or a bad port."""
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError):
        raise UserError(f"bad database URL {hide_password(url)} (expected e.g. "
                        "postgresql+psycopg://user:password@host:5432/db or "
                        "sqlite:////path/to/qflow.db)") from None
    if port is not None and not 0 < port < 65536:
        raise UserError(f"bad database URL {hide_password(url)}: port {port} is not "
                        "between 1 and 65535")
    return parsed.get_backend_name()


def _disconnected(exc: DBAPIError, dialect: str) -> bool:
    """A lost or refused connection, as opposed to an error in the statement."""
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if dialect == "sqlite":          # SQLite reports SQL errors as OperationalError too
        return any(s in str(exc.orig) for s in ("locked", "unable to open", "disk I/O"))
    if "number of parameters must be between" in str(exc.orig):
        return False                 # psycopg refused the statement before sending it
    return isinstance(exc, OperationalError)


def _retryable(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)


def _sqlite_engine(url: str) -> Engine:
    db = make_url(url).database
    if db and db != ":memory:":
        Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000,
                                              "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A deferred transaction that reads then writes fails at once with "database is
        # locked", ignoring the busy timeout; writers take the lock up front instead.
        write = conn.get_execution_options().get("qflow_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
