"""Nothing stuck, nothing run twice: outcomes that cannot be written, orphaned attempts,
held runs and pools against stray messages, the DB's clock, and `qflow doctor`.

Against real SQLite and PostgreSQL; messages go to a stub dispatcher and are run by hand.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import time

import pytest
from conftest import new_pg_database
from sqlalchemy import select, text, update
from test_store import StubDispatcher

from qflow.config import Config
from qflow.core.records import Outcome
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.store import Store, attempts, liveness, read
from qflow.store.migrate import ensure_schema, upgrade
from qflow.store.models import attempts as attempt_rows
from qflow.store.models import runs, tasks, workers


def _engine(db_url: str):
    store = Store(db_url)
    if store.dialect == "sqlite":
        ensure_schema(store)
    else:
        upgrade(store)
    yield Engine(Config(database_url=db_url, worker_lost_timeout=30), store,
                 StubDispatcher())
    store.dispose()


@pytest.fixture
def engine(db_url):
    yield from _engine(db_url)


@pytest.fixture
def pg_engine(pg_server_url):
    """PostgreSQL only: what SQLite (one host, text of any length) cannot show."""
    yield from _engine(new_pg_database(pg_server_url))


def ago(seconds: float) -> dt.datetime:
    """The store's naive UTC, ``seconds`` ago."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=seconds)


def run_all(engine: Engine) -> None:
    executor = Executor(engine)
    while engine.dispatcher.sent:
        item = engine.dispatcher.sent.pop(0)
        executor.execute(item.run_id, item.node, item.attempt, worker="w1")


def status(engine: Engine, run_id: str) -> dict:
    with engine.store.read() as conn:
        run = read.get_run(conn, run_id)
    return {**run, "by_node": {t["node"]: t for t in run["tasks"]}}


def test_a_nul_byte_in_output_or_error_is_recorded_and_the_run_ends(engine, registry):
    @registry.task
    def noisy() -> int:
        print("bin\x00ary")
        return 1

    @registry.task
    def broken(x: int) -> int:
        raise ValueError("bad\x00value")

    @registry.workflow
    def nul_bytes():
        broken(noisy())

    run_id = engine.trigger("nul_bytes")
    run_all(engine)
    run = status(engine, run_id)
    assert run["state"] == "failed"
    assert run["by_node"]["noisy"]["state"] == "succeeded"
    assert run["by_node"]["broken"]["state"] == "failed"
    assert "bad\\x00value" in run["by_node"]["broken"]["error"]
    with engine.store.read() as conn:
        logs = conn.execute(select(attempt_rows.c.log).join(
            tasks, tasks.c.id == attempt_rows.c.task_id).where(
            tasks.c.run_id == run_id, tasks.c.node == "noisy")).scalars().all()
    assert any("bin\\x00ary" in (text or "") for text in logs)


def test_an_outcome_the_db_refuses_is_recorded_as_a_failure_not_left_running(pg_engine,
                                                                              registry):
    engine = pg_engine

    long_name = type("E" * 300, (Exception,), {})      # longer than error_type's column

    @registry.task
    def odd() -> int:
        raise long_name("boom")

    @registry.workflow
    def refused():
        odd()

    run_id = engine.trigger("refused")
    run_all(engine)
    task = status(engine, run_id)["by_node"]["odd"]
    assert task["state"] == "failed"
    assert "could not be recorded" in task["error"]


def test_an_attempt_whose_worker_left_without_it_is_found_lost(engine):
    run_id = engine.trigger("diamond", {"x": 1})
    first = engine.dispatcher.sent.pop(0)
    # A worker claimed it, could not record its outcome, then stopped cleanly (which
    # removes its row): nothing heartbeats for the attempt any more.
    engine.store.transact(attempts.claim, run_id, first.node, 1, "gone@host", None)
    assert Upkeep(Executor(engine)).sweep() == 0          # not yet: it may be starting
    with engine.store.write() as conn:
        conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.node == first.node)
                     .values(started_at=ago(60)))
    assert Upkeep(Executor(engine)).sweep() == 1
    task = status(engine, run_id)["by_node"][first.node]
    assert task["state"] == "retrying" and task["attempts"] == 1     # redelivered
    assert [d.node for d in engine.dispatcher.sent] == [first.node]     # sent again


def test_a_stray_message_cannot_start_a_held_run_or_skip_a_pool(engine, registry):
    @registry.task(pool="one")
    def guarded() -> int:
        return 1

    @registry.workflow(max_active_runs=1)
    def single(x: int = 0):
        guarded()

    engine.set_pool("one", 1)
    first = engine.trigger("single")
    held = engine.trigger("single")
    assert [d.run_id for d in engine.dispatcher.sent] == [first]
    # The held run's root is queued but has no message, and the reconciler knows it:
    # however long it waits, it is not sent until its run is admitted.
    stale = engine.store.transact(liveness.take_stale, 0.0)
    assert [d.run_id for d in stale] == [first]
    # A forged message for the held run's task is refused.
    assert engine.store.transact(attempts.claim, held, "guarded", 1, "w1", None) is None
    assert status(engine, held)["state"] == "queued"
    # Nor may a task that waits for its pool slot be claimed.
    engine.set_pool("one", 0)
    with engine.store.write() as conn:
        conn.execute(update(tasks).where(tasks.c.run_id == first)
                     .values(holding=False))
    assert engine.store.transact(attempts.claim, first, "guarded", 1, "w1", None) is None


def test_a_retry_message_that_comes_early_is_refused(engine, registry):
    @registry.task(retries=1, retry_delay=600)
    def flaky() -> int:
        raise OSError("later")

    @registry.workflow
    def waiting():
        flaky()

    run_id = engine.trigger("waiting")
    item = engine.dispatcher.sent.pop(0)
    Executor(engine).execute(run_id, item.node, 1, worker="w1")
    again = engine.dispatcher.sent.pop(0)
    assert again.attempt == 2 and again.countdown == 600
    assert engine.store.transact(attempts.claim, run_id, "flaky", 2, "w1", None) is None
    assert status(engine, run_id)["by_node"]["flaky"]["state"] == "retrying"


def test_heartbeats_use_the_db_clock_not_the_workers(pg_engine, monkeypatch):
    engine = pg_engine
    skewed = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=2)
    monkeypatch.setattr(liveness, "utcnow", lambda: skewed)
    engine.store.transact(liveness.heartbeat, "w-skewed", 1, skewed)
    with engine.store.read() as conn:
        seen = conn.execute(select(workers.c.last_seen).where(
            workers.c.name == "w-skewed")).scalar_one()
    assert abs(seen - dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)) \
        < dt.timedelta(minutes=1)


def test_doctor_lists_what_has_no_owner_and_is_clean_otherwise(engine, tmp_path):
    env = {**os.environ, "QFLOW_DATABASE_URL": engine.config.database_url,
           "QFLOW_WORKER_LOST_TIMEOUT": "30"}
    env.pop("QFLOW_BROKER_URL", None)
    clean = subprocess.run(["qflow", "doctor"], env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    run_id = engine.trigger("diamond", {"x": 1})
    first = engine.dispatcher.sent.pop(0)
    engine.store.transact(attempts.claim, run_id, first.node, 1, "gone@host", None)
    found = subprocess.run(["qflow", "doctor", "--json"], env=env, capture_output=True,
                           text=True, cwd=tmp_path)
    assert found.returncode == 1, found.stderr
    kinds = {(f["kind"], f["node"]) for f in json.loads(found.stdout)}
    assert ("lost_owner", first.node) in kinds
    with engine.store.write() as conn:         # a run left open with nothing to do
        conn.execute(update(runs).where(runs.c.id == run_id).values(created_at=ago(300)))
        conn.execute(update(tasks).where(tasks.c.run_id == run_id).values(state="canceled"))
    found = subprocess.run(["qflow", "doctor"], env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert found.returncode == 1 and "open_run: " + run_id in found.stdout


def test_the_reconciler_does_not_resend_a_backlog_the_broker_still_holds(engine):
    engine.config = dataclasses.replace(engine.config, requeue_after=60)
    run_id = engine.trigger("fan", {"width": 3})
    sent = len(engine.dispatcher.sent)
    with engine.store.write() as conn:
        conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.state == "queued")
                     .values(queued_at=ago(120)))
    upkeep = Upkeep(Executor(engine))
    assert upkeep.config.requeue_after == 60
    engine.dispatcher.waiting = lambda queue: sent        # all still in the queue
    assert upkeep.reconcile() == 0
    engine.dispatcher.waiting = lambda queue: sent - 1    # one message went missing
    assert upkeep.reconcile() == sent                     # the queue's stale tasks again


def test_an_outcome_whose_claim_a_db_crash_lost_is_still_recorded(engine):
    """The claim commits without waiting for the disk; if a crash loses it after the task
    ran, the task's report still counts (instead of the task running a second time)."""
    run_id = engine.trigger("chain", {"length": 1})
    first = engine.dispatcher.sent.pop(0)
    engine.store.transact(attempts.claim, run_id, first.node, 1, "w1", None)
    with engine.store.write() as conn:             # what the crash leaves: never claimed
        conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.node == first.node)
                     .values(state="queued", attempts=0, worker=None, started_at=None))
    finished = engine.store.transact(attempts.finish, run_id, first.node, 1,
                                     Outcome("succeeded", result="0"))
    assert finished is not None
    task = status(engine, run_id)["by_node"][first.node]
    assert (task["state"], task["attempts"]) == ("succeeded", 1)
    # A report for an attempt that another claim superseded is still refused.
    assert engine.store.transact(attempts.finish, run_id, first.node, 1,
                                 Outcome("succeeded", result="0")) is None


def _has_tasks(conn) -> bool:
    return bool(conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'qflow_tasks'")
                             ).first())


KILLED_FLOW = '''
import time
from qflow import context, task, workflow

@task
def slow_first_time(seconds: float) -> int:
    if context().attempt == 1:
        time.sleep(seconds)
    return context().attempt

@workflow
def interrupted(seconds: float = 60):
    slow_first_time(seconds)
'''


def test_a_run_whose_qflow_run_was_killed_is_finished_by_the_next_one(tmp_path):
    """`qflow run` is killed with SIGKILL while a task runs; the next `qflow run` in the
    same place finds the attempt lost (its process is gone) and finishes that run too."""
    (tmp_path / "flow.py").write_text(KILLED_FLOW)
    env = {k: v for k, v in os.environ.items()
           if k not in ("QFLOW_BROKER_URL", "QFLOW_DATABASE_URL")}
    cmd = ["qflow", "-A", "flow.py", "run", "interrupted"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    store = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "qflow.db").exists():
                store = store or Store(f"sqlite:///{tmp_path}/qflow.db")
                with store.read() as conn:
                    running = conn.execute(text(          # the schema may not exist yet
                        "SELECT run_id FROM qflow_tasks WHERE state = 'running'")
                        ).scalars().all() if _has_tasks(conn) else []
                if running:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the task never started")
        killed_run = running[0]
    finally:
        first.kill()
        first.wait()
    second = subprocess.run([*cmd, "-p", "seconds=3"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    with store.read() as conn:
        run = read.get_run(conn, killed_run)
    assert run["state"] == "succeeded"
    assert run["tasks"][0]["attempts"] == 2
    store.dispose()


def test_a_sweeper_just_back_from_an_outage_does_not_take_silence_for_death(engine):
    """After a DB outage every worker's heartbeat is old only because none could write
    it: a sweeper that has not itself reached the DB for worker_lost_timeout leaves
    silent workers alone (a restarted or known-dead one is still swept)."""
    from qflow.engine.upkeep import Maintenance

    run_id = engine.trigger("diamond", {"x": 1})
    first = engine.dispatcher.sent.pop(0)
    engine.store.transact(liveness.heartbeat, "w-busy", 1, ago(300))
    engine.store.transact(attempts.claim, run_id, first.node, 1, "w-busy", None)
    with engine.store.write() as conn:      # its heartbeat, 2 minutes old (the outage)
        conn.execute(update(workers).where(workers.c.name == "w-busy")
                     .values(last_seen=ago(120)))
    upkeep = Upkeep(Executor(engine))
    back = Maintenance(upkeep, "w-sweeper")
    back.beat()                                # reached the DB just now
    assert back.sweep() == 0
    assert status(engine, run_id)["by_node"][first.node]["state"] == "running"
    back._reached_since -= engine.config.worker_lost_timeout      # time passes
    assert back.sweep() == 1
