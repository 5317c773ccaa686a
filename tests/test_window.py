"""Bounded dispatch (``dispatch_window``): a run never has more than its window of tasks
sent at once; the rest wait queued in the DB and go out, highest priority first, as
tasks end. Against real SQLite and PostgreSQL with messages drained by hand, then with
real workers on a private Redis."""
from __future__ import annotations

import signal
import threading
import time

import flows  # noqa: F401 - registers the workflows
import pytest
import servers
from conftest import new_pg_database, start_cluster
from sqlalchemy import select
from test_store import StubDispatcher, migrated, run_of

from qflow.config import Config
from qflow.core.records import Outcome
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.store import attempts, audit, flushing, read
from qflow.store.models import runs, tasks


def _engines(db_url: str):
    """Engines on one fresh DB whose runs have the given dispatch_window."""
    store = migrated(db_url)

    def make(window: int, **settings) -> Engine:
        return Engine(Config(database_url=db_url, dispatch_window=window, **settings),
                      store, StubDispatcher())
    yield make
    store.dispose()


@pytest.fixture
def windowed(db_url):
    """Engines on one fresh DB (SQLite and PostgreSQL) whose runs have the given
    dispatch_window."""
    yield from _engines(db_url)


@pytest.fixture
def windowed_pg(pg_server_url):
    """As ``windowed``, on PostgreSQL only (what only its server does)."""
    yield from _engines(new_pg_database(pg_server_url))


def step(engine: Engine) -> str | None:
    """Run the oldest message sent; its node, or None if it was not to be run."""
    item = engine.dispatcher.sent.pop(0)
    done = Executor(engine).execute(item.run_id, item.node, item.attempt, worker="test")
    return None if done is None else item.node


def drain(engine: Engine) -> tuple[list[str], int]:
    """Run messages in the order they were sent until none is left: (nodes run, most
    messages ever waiting at once)."""
    ran, most = [], len(engine.dispatcher.sent)
    while engine.dispatcher.sent:
        node = step(engine)
        if node is not None:
            ran.append(node)
        most = max(most, len(engine.dispatcher.sent))
    return ran, most


def counters(engine: Engine, run_id: str) -> tuple[int, int]:
    with engine.store.read() as conn:
        row = conn.execute(select(runs.c.in_flight, runs.c.backlog)
                           .where(runs.c.id == run_id)).one()
    return row.in_flight, row.backlog


def held_back(engine: Engine, run_id: str) -> set[str]:
    with engine.store.read() as conn:
        return set(conn.execute(select(tasks.c.node).where(
            tasks.c.run_id == run_id, tasks.c.held_back.is_(True))).scalars())


def test_a_wide_run_sends_its_window_and_the_rest_as_tasks_end(windowed):
    engine = windowed(3)
    run_id = engine.trigger("fan", {"width": 8})
    assert [d.node for d in engine.dispatcher.sent] == ["const", "const__1", "const__2"]
    assert held_back(engine, run_id) == {f"const__{i}" for i in range(3, 8)}
    assert {t["state"] for t in run_of(engine, run_id)["tasks"]
            if t["node"].startswith("const")} == {"queued"}
    ran, most = drain(engine)
    assert most == 3
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert sorted(ran) == sorted(t["node"] for t in run["tasks"])      # each once
    assert {t["attempts"] for t in run["tasks"]} == {1}
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["join"]) == {"join": list(range(1, 9))}
    assert counters(engine, run_id) == (0, 0) and not held_back(engine, run_id)


def test_a_run_without_a_window_sends_every_ready_task_at_once(windowed):
    engine = windowed(0)
    run_id = engine.trigger("fan", {"width": 8})
    assert len(engine.dispatcher.sent) == 8 and not held_back(engine, run_id)
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"


def test_the_window_sends_the_highest_priority_first_children_included(windowed, registry):
    from qflow import task, workflow

    @task
    def routine(i: int) -> int:
        return i

    @task(priority=9)
    def urgent(i: int) -> int:
        return i

    @workflow
    def mixed():
        first = routine(0)
        urgent(first)            # released while routine tasks wait: it goes first
        urgent(1)
        routine(1)
        routine(2)

    engine = windowed(1)
    run_id = engine.trigger("mixed")
    assert [d.node for d in engine.dispatcher.sent] == ["urgent__1"]
    ran, most = drain(engine)
    assert ran == ["urgent__1", "routine", "urgent", "routine__1", "routine__2"]
    assert most == 1 and run_of(engine, run_id)["state"] == "succeeded"


def test_a_retry_keeps_its_place_and_the_others_wait_for_it(windowed, registry, tmp_path):
    from qflow import task, workflow

    @task
    def one(i: int) -> int:
        return i

    @workflow
    def unlucky(counter: str):
        flows.flaky(counter, 2)              # fails twice, then succeeds
        one(1)
        one(2)

    engine = windowed(1)
    run_id = engine.trigger("unlucky", {"counter": str(tmp_path / "n")})
    ran, most = drain(engine)
    assert ran == ["flaky", "flaky", "flaky", "one", "one__1"] and most == 1
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert [t["attempts"] for t in run["tasks"]] == [3, 1, 1]


def test_a_task_waiting_for_a_pool_slot_holds_its_place_and_no_message(windowed, registry):
    from qflow import task, workflow

    @task(pool="narrow")
    def pooled(i: int) -> int:
        return i

    @workflow
    def crowded():
        for i in range(5):
            pooled(i)

    engine = windowed(2, pools="narrow=1")
    run_id = engine.trigger("crowded")
    # Two places: one task holds the pool's slot and is sent, one waits for the slot.
    assert [d.node for d in engine.dispatcher.sent] == ["pooled"]
    assert counters(engine, run_id) == (2, 3)
    ran, most = drain(engine)
    assert sorted(ran) == ["pooled"] + [f"pooled__{i}" for i in range(1, 5)] and most == 1
    assert run_of(engine, run_id)["state"] == "succeeded"
    assert counters(engine, run_id) == (0, 0)


def test_a_map_s_elements_wait_for_places_like_any_task(windowed):
    engine = windowed(2)
    run_id = engine.trigger("mapped", {"n": 6, "factor": 10})
    ran, most = drain(engine)
    assert most <= 2
    assert sorted(n for n in ran if n.startswith("scale[")) == [f"scale[{i}]" for i in range(6)]
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["total_of"]) == {"total_of": 6 + 10 * 15}
    assert counters(engine, run_id) == (0, 0)


def follow_first(engine: Engine) -> list[str]:
    """Run the oldest message sent as a worker that follows (runs what it is handed
    itself); the nodes it ran, from the task events it reports."""
    from qflow.engine.dispatch import Follow
    ran: list[str] = []
    item = engine.dispatcher.sent.pop(0)

    def report(kind: str, **fields) -> None:
        if kind == "task-received":
            ran.append(fields["name"].split(".", 1)[1])
    Executor(engine).execute(item.run_id, item.node, item.attempt, worker="test",
                             follow=Follow(item.queue or engine.config.default_queue,
                                           time.monotonic() + 60, report))
    return [item.node, *ran]


def ran_once_to(engine: Engine, run_id: str, total: int) -> None:
    """The mapped run succeeded, every task ran once, its places all given back."""
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert {t["attempts"] for t in run["tasks"] if t["node"] != "scale"} == {1}
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["total_of"]) == {"total_of": total}
    assert counters(engine, run_id) == (0, 0)


def test_a_worker_that_follows_runs_the_held_back_elements_it_frees_places_for(windowed):
    engine = windowed(20)            # a top-up waits for 2 free places (a tenth)
    run_id = engine.trigger("mapped", {"n": 25, "factor": 10})
    assert sorted([step(engine), step(engine)]) == ["const", "numbers"]
    first = [f"scale[{i}]" for i in range(20)]
    assert [d.node for d in engine.dispatcher.sent] == first
    # Each element that ends hands its place to the next one waiting, run here: no
    # message, and never more than the window out (the others' messages still wait).
    assert follow_first(engine) == ["scale[0]", *(f"scale[{i}]" for i in range(20, 25))]
    assert [d.node for d in engine.dispatcher.sent] == first[1:]
    assert counters(engine, run_id) == (19, 0) and held_back(engine, run_id) == set()
    drain(engine)
    ran_once_to(engine, run_id, 25 + 10 * 300)


def test_a_worker_that_follows_runs_the_held_back_roots_of_a_plain_fan_out_too(
        windowed_pg, registry):
    """Tasks without children (each one statement to record when its run is not
    crowded) hand their places on as a map's elements do, once the run is crowded: on
    PostgreSQL, where such outcomes commit without waiting for the disk."""
    from qflow import task, workflow

    @task
    def lone(i: int) -> int:
        return i

    @workflow
    def lone_fan(width: int = 8):
        for i in range(width):
            lone(i)

    engine = windowed_pg(3)
    run_id = engine.trigger("lone_fan", {"width": 8})
    assert [d.node for d in engine.dispatcher.sent] == ["lone", "lone__1", "lone__2"]
    # The first outcome this process records counts the run (crowded: tasks wait), and
    # tops its window up with a message.
    assert step(engine) == "lone"
    assert [d.node for d in engine.dispatcher.sent] == ["lone__1", "lone__2", "lone__3"]
    # Then each task that ends hands its place to the next one waiting, run here.
    assert follow_first(engine) == ["lone__1", "lone__4", "lone__5", "lone__6", "lone__7"]
    assert [d.node for d in engine.dispatcher.sent] == ["lone__2", "lone__3"]
    assert counters(engine, run_id) == (2, 0) and held_back(engine, run_id) == set()
    drain(engine)
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded" and {t["attempts"] for t in run["tasks"]} == {1}
    assert counters(engine, run_id) == (0, 0)


def test_a_place_is_not_handed_on_in_a_window_that_shrank_meanwhile(windowed):
    engine = windowed(3)
    run_id = engine.trigger("mapped", {"n": 6, "factor": 10})
    assert sorted([step(engine), step(engine)]) == ["const", "numbers"]
    with engine.store.write() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id).values(dispatch_window=1))
    assert follow_first(engine) == ["scale[0]"]
    assert counters(engine, run_id) == (2, 3)
    assert held_back(engine, run_id) == {"scale[3]", "scale[4]", "scale[5]"}
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"
    assert counters(engine, run_id) == (0, 0)


def test_an_outcome_whose_flush_lost_its_connection_is_recorded_again_once(
        windowed_pg, monkeypatch):
    engine = windowed_pg(2)
    assert flushing.flushes(engine.store)          # the server takes the flush statement
    lost = []

    def committed_then_lost(conn, *args):
        """finish_lightly, whose commit a server crash then lost."""
        class Lost(Exception):
            pass
        try:
            with conn.begin_nested():
                lost.append((args[1], attempts.finish(conn, *args)))
                raise Lost
        except Lost:
            return lost[-1][1]
    committed_then_lost.policy = flushing.finish_lightly.policy
    monkeypatch.setattr(flushing, "finish_lightly", committed_then_lost)
    monkeypatch.setattr(flushing, "flushes", lambda store: True)
    monkeypatch.setattr(flushing, "flush", lambda store: False)
    run_id = engine.trigger("mapped", {"n": 5, "factor": 10})
    assert sorted([step(engine), step(engine)]) == ["const", "numbers"]
    assert follow_first(engine) == ["scale[0]", "scale[2]", "scale[3]", "scale[4]"]
    drain(engine)
    # Committed so (and lost) while elements waited for places; recorded again durably
    assert [node for node, _ in lost] == ["scale[0]", "scale[2]", "scale[3]"]
    ran_once_to(engine, run_id, 5 + 10 * 10)


def test_held_back_tasks_are_neither_re_sent_nor_reported_nor_run_by_a_stray_message(
        windowed):
    engine = windowed(2, requeue_after=0.01)
    run_id = engine.trigger("fan", {"width": 6})
    sent = [d.node for d in engine.dispatcher.sent]
    time.sleep(0.05)                         # the two sent ones now look stale
    engine.dispatcher.sent.clear()
    Upkeep(Executor(engine)).reconcile()
    assert sorted(d.node for d in engine.dispatcher.sent) == sorted(sent)
    with engine.store.read() as conn:
        assert sum(audit.queued_by_queue(conn, 0).values()) == 2
        assert audit.idle_windows(conn) == []
    stray = Executor(engine).execute(run_id, "const__5", 1, worker="test")
    assert stray is None and "const__5" in held_back(engine, run_id)
    drain(engine)
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded" and {t["attempts"] for t in run["tasks"]} == {1}


def test_places_a_lost_top_up_left_free_are_filled_by_the_reconciler(windowed, registry):
    from qflow import task, workflow

    @task
    def one(i: int) -> int:
        return i

    @workflow
    def three():
        for i in range(3):
            one(i)

    engine = windowed(1)
    run_id = engine.trigger("three")
    first = engine.dispatcher.sent.pop(0)
    # The first task's outcome commits, then its worker dies before the top-up.
    with engine.store.write() as conn:
        attempts.claim(conn, run_id, first.node, 1, "test", None)
    done = engine.store.transact(attempts.finish, run_id, first.node, 1,
                                 Outcome("succeeded", result="0"), False, False)
    assert done.top_up and counters(engine, run_id) == (0, 2)
    with engine.store.read() as conn:
        assert [f.kind for f in audit.idle_windows(conn)] == ["held_back"]
    assert Upkeep(Executor(engine)).reconcile() == 1
    assert counters(engine, run_id) == (1, 1)
    # The top-up committed, then its worker died before publishing: the message is lost,
    # and the stale re-send (here after 10 ms) sends it again.
    engine.dispatcher.sent.clear()
    time.sleep(0.05)
    impatient = windowed(1, requeue_after=0.01)
    assert Upkeep(Executor(impatient)).reconcile() == 1
    drain(impatient)
    assert run_of(engine, run_id)["state"] == "succeeded"
    with engine.store.read() as conn:
        assert audit.idle_windows(conn) == []
    assert counters(engine, run_id) == (0, 0)


def test_a_canceled_run_forgets_its_held_back_tasks_and_resumes_within_its_window(
        windowed):
    engine = windowed(2)
    run_id = engine.trigger("fan", {"width": 6})
    engine.cancel(run_id)
    assert run_of(engine, run_id)["state"] == "canceled"
    assert not held_back(engine, run_id) and counters(engine, run_id)[1] == 0
    engine.dispatcher.sent.clear()
    engine.resume(run_id)
    assert len(engine.dispatcher.sent) == 2 and len(held_back(engine, run_id)) == 4
    ran, most = drain(engine)
    assert most == 2 and run_of(engine, run_id)["state"] == "succeeded"
    assert counters(engine, run_id) == (0, 0)


def test_a_negative_window_is_refused():
    from qflow.config import load_config
    from qflow.errors import UserError
    with pytest.raises(UserError, match="dispatch_window"):
        load_config(env={"QFLOW_DISPATCH_WINDOW": "-1"})


# -- real workers ---------------------------------------------------------------------
LIVENESS = dict(QFLOW_WORKER_LOST_TIMEOUT="3", QFLOW_HEARTBEAT_INTERVAL="0.5",
                QFLOW_REQUEUE_AFTER="4")


@pytest.fixture(scope="module")
def window_cluster(pg_server_url, tmp_path_factory):
    """Two workers on a Redis of their own, and a client whose runs have a window."""
    redis = servers.start_redis()
    cluster = start_cluster(redis.url, pg_server_url, tmp_path_factory.mktemp("window"), 2,
                            **LIVENESS)
    yield cluster
    cluster.stop()
    redis.stop()


def client(cluster, window: int):
    from qflow.runtime import Runtime
    return Runtime(Config(broker_url=cluster.broker_url, database_url=cluster.database_url,
                          app=cluster.app, wait_poll_interval=0.05, dispatch_window=window))


class QueueWatch(threading.Thread):
    """The most messages seen waiting in the default queue (all its priority lists)."""

    def __init__(self, broker_url: str):
        import redis
        super().__init__(daemon=True)
        self.redis, self.most, self.stop = redis.Redis.from_url(broker_url), 0, False

    def run(self) -> None:
        while not self.stop:
            keys = self.redis.keys("default*")
            self.most = max(self.most, sum(self.redis.llen(k) for k in keys))
            time.sleep(0.01)


def watched(rt, broker_url: str, workflow: str, params: dict) -> tuple[str, dict, int]:
    """Trigger a run and wait for it to end, watching the broker: (run id, run, the most
    messages seen waiting)."""
    watch = QueueWatch(broker_url)
    watch.start()
    run_id = rt.engine.trigger(workflow, params)
    run = rt.engine.wait(run_id, timeout=300)
    watch.stop = True
    watch.join()
    return run_id, run, watch.most


def test_a_fan_out_of_2000_with_a_window_of_50_never_has_more_than_50_messages_waiting(
        window_cluster):
    rt = client(window_cluster, 50)
    run_id, run, most = watched(rt, window_cluster.broker_url, "fan", {"width": 1000})
    assert run["state"] == "succeeded"                      # 1,000 roots, 2,001 tasks
    tasks_seen = run_of(rt.engine, run_id)["tasks"]
    assert len(tasks_seen) == 2001 and {t["attempts"] for t in tasks_seen} == {1}
    assert 0 < most <= 50
    with rt.store.read() as conn:
        assert read.results(conn, run_id, ["join"]) == {"join": list(range(1, 1001))}


def test_a_worker_killed_mid_run_does_not_shrink_the_window(window_cluster):
    from conftest import wait_for
    rt = client(window_cluster, 20)
    run_id = rt.engine.trigger("fan", {"width": 300})
    wait_for(lambda: run_of(rt.engine, run_id)["tasks_done"] >= 100, timeout=120,
             interval=0.05, what="100 tasks done")
    window_cluster.signal_worker("w1", signal.SIGKILL)
    run = rt.engine.wait(run_id, timeout=180)
    assert run["state"] == "succeeded"
    assert counters(rt.engine, run_id) == (0, 0)
    window_cluster.workers["w1"].wait(10)
    window_cluster.start_worker("w1", "-c", "2")
    window_cluster.wait_ready(names=["w1"])


def test_a_run_whose_tasks_never_wait_takes_no_hand_over_statement(windowed_pg, monkeypatch):
    """A worker that follows asks for a held-back task to hand its place to only in a
    run whose tasks wait for places: the claim read the run's backlog already."""
    engine = windowed_pg(100)
    calls: list[tuple] = []
    real = attempts.hand_over
    monkeypatch.setattr(attempts, "hand_over", lambda *args: calls.append(args) or real(*args))
    run_id = engine.trigger("mapped", {"n": 6, "factor": 10})
    ran = []
    while engine.dispatcher.sent:
        ran += follow_first(engine)
    assert run_of(engine, run_id)["state"] == "succeeded" and len(ran) >= 2
    assert calls == []
