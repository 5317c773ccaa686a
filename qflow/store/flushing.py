"""Outcomes of a crowded run, committed without holding its row through a disk flush.

Every task of a run counts itself on the run's row, and a map's element on the map's
row too, in its outcome's transaction. A commit that waits for the disk holds those
row locks through the WAL flush, so the tasks of one run, on however many workers, ended
one flush at a time (~4 ms on this machine's disk: at most ~250 a second). Committed
without waiting, then flushed by a statement of its own, the locks go at the commit and
the flushes of all processes overlap. The outcome is on disk before the worker acts on
it all the same: publishes what it released, runs the task it was handed, returns the
message; a flush that lost its connection (a server crash may have lost the outcome) is
followed by the outcome recorded again, durably, refused as stale if it had been kept.
"""
from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from qflow.core.records import Finished, Outcome
from qflow.store.attempts import finish
from qflow.store.db import Store, query
from qflow.store.window import waiting


@query(durable=False, patient=True)
def finish_lightly(conn: Connection, run_id: str, node: str, attempt: int, outcome: Outcome,
                   fail_fast: bool = False, top_up: bool = True, hand_on: bool = False,
                   children: tuple[str, ...] | None = None, release: bool = False
                   ) -> Finished | None:
    """:func:`~qflow.store.attempts.finish`, committed without waiting for the disk;
    the caller makes it durable with :func:`flush` before it acts on it, and records it
    again with ``finish`` if the flush failed (see the module)."""
    return finish(conn, run_id, node, attempt, outcome, fail_fast, top_up, hand_on, children,
                  release)


def crowded(run_id: str) -> bool:
    """Whether this run's tasks waited for places in its window when this process last
    counted one: a run wider than its window, whose tasks end side by side on all the
    workers, each locking the run's row, where :func:`finish_lightly` pays. (A chain's
    hop would only pay a statement more for it.)"""
    return waiting(run_id) is True


def lightly(store: Store, run_id: str) -> bool:
    """Whether an outcome of this run is committed with :func:`finish_lightly`: a
    :func:`crowded` run on a store whose server takes :func:`flush` (asked once per
    process and store)."""
    if not crowded(run_id):
        return False
    if store.url not in _FLUSHES:
        _FLUSHES[store.url] = flushes(store)
    return _FLUSHES[store.url]


_FLUSHES: dict[str, bool] = {}


def flush(store: Store) -> bool:
    """Wait until everything committed so far without waiting for the disk (by any
    session: the WAL is one sequence) is on it (PostgreSQL): a WAL record written in a
    transaction of its own, which commits durably and so flushes the WAL up to it, in
    one statement. False if that failed (a lost connection: a server crash may have
    lost those commits; or a server that refuses it: see :func:`flushes`)."""
    try:
        with store.write(autocommit=True) as conn:
            conn.execute(_FLUSH)
    except DBAPIError:
        return False
    return True


def flushes(store: Store) -> bool:
    """Whether :func:`flush` works on this store (PostgreSQL, once it has answered)."""
    return store.dialect == "postgresql" and flush(store)


# A logical-decoding message is a WAL record any user may write, in the transaction (so
# that it has an id and its commit waits for the disk); nothing reads it but a slot.
_FLUSH = text("SELECT pg_logical_emit_message(true, 'qflow', '')")
