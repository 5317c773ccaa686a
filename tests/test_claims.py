"""Claims and crashes (README): with ``durable_claims``, a claim that returned is on disk,
so a PostgreSQL crash right after it cannot put the task back in its queue while it runs.

The server is this module's own (the test kills it), with stock durability, and its WAL
writer's delay at the maximum (10 s): a commit that does not wait for the disk is then
still only in the server's shared memory when it dies, as it may be in any crash.
"""
from __future__ import annotations

import threading

import pytest
import servers
from conftest import _missing, new_pg_database
from test_store import StubDispatcher

from qflow.config import Config
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.store import Store, read
from qflow.store.migrate import upgrade


@pytest.fixture(scope="module")
def crashable_pg():
    try:
        pg = servers.start_postgres(durable=True, settings="-c wal_writer_delay=10000")
    except servers.ServerMissing as exc:
        _missing(exc)
    yield pg
    pg.stop()


def test_a_durable_claim_survives_a_postgresql_crash_right_after_it(crashable_pg,
                                                                    registry):
    url = new_pg_database(crashable_pg.url)
    store = Store(url, retry_seconds=60)            # as in a worker: it waits the DB out
    upgrade(store)
    engine = Engine(Config(database_url=url, durable_claims=True), store, StubDispatcher())
    crashed, go_on = threading.Event(), threading.Event()

    @registry.task
    def crash_the_db() -> int:
        crashable_pg.crash()         # the claim returned a moment ago: the task runs
        crashed.set()
        go_on.wait(60)
        return 7

    @registry.workflow
    def crashing():
        crash_the_db()

    run_id = engine.trigger("crashing")
    first = engine.dispatcher.sent.pop(0)
    worker = threading.Thread(target=Executor(engine).execute, daemon=True,
                              args=(first.run_id, first.node, first.attempt),
                              kwargs={"worker": "w1", "celery_id": "c1"})
    worker.start()
    try:
        assert crashed.wait(60), "the task never started"
        crashable_pg.start()
        reader = Store(url)
        with reader.read() as conn:
            task = read.get_run(conn, run_id)["tasks"][0]
        assert (task["state"], task["attempts"], task["worker"]) == ("running", 1, "w1")
    finally:
        go_on.set()
    worker.join(60)                  # the outcome is recorded once the DB is back
    with reader.read() as conn:
        run = read.get_run(conn, run_id)
    assert run["state"] == "succeeded" and run["tasks"][0]["attempts"] == 1
    reader.dispose()
    store.dispose()
