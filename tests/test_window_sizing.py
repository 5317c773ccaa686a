"""``dispatch_window = "auto"``: a run's window is a multiple of the live workers'
processes on its queues, between a floor and a cap, and follows workers as they come and
go. Against real SQLite and PostgreSQL with workers' heartbeats written by hand and
messages drained by hand, then with real workers on a private Redis."""
from __future__ import annotations

import time

import pytest
import servers
from conftest import start_cluster, wait_for
from sqlalchemy import Engine, event, select
from test_store import run_of
from test_window import (  # noqa: F401 - windowed: a fixture
    LIVENESS,
    QueueWatch,
    counters,
    drain,
    step,
    watched,
    windowed,
)

from qflow.config import load_config
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.errors import UserError
from qflow.store import liveness, sizing
from qflow.store.models import runs

# 2 places per process, at least 3, at most 8.
AUTO = dict(dispatch_window_per_slot=2, dispatch_window_min=3, dispatch_window_max=8)


@pytest.fixture
def auto(windowed, monkeypatch):  # noqa: F811
    """An engine whose runs' windows follow the workers; each trigger reads them anew."""
    monkeypatch.setattr(sizing, "CACHE_SECONDS", 0.0)
    return windowed("auto", **AUTO)


def beat(engine, name: str, queues: str, processes: int | None) -> None:
    """A worker ``name`` serving ``queues`` with ``processes`` says it is alive."""
    engine.store.transact(liveness.heartbeat, name, 1, liveness.utcnow(), queues, processes)


def leaves(engine, name: str) -> None:
    engine.store.transact(liveness.forget, name, 1)


def window_of(engine, run_id: str) -> int | None:
    with engine.store.read() as conn:
        return conn.execute(select(runs.c.dispatch_window)
                            .where(runs.c.id == run_id)).scalar_one()


def reconcile(engine) -> int:
    return Upkeep(Executor(engine)).reconcile()


def test_auto_sizes_a_new_run_from_the_live_processes_on_its_queues(auto):
    engine = auto
    alone = engine.trigger("fan", {"width": 20})
    assert window_of(engine, alone) == 3                     # no worker yet: the floor
    assert len(engine.dispatcher.sent) == 3
    beat(engine, "w1", "default", 2)
    beat(engine, "w2", "other", 8)                           # not the run's queue
    beat(engine, "w3", "default,other", 1)                   # counted once
    beat(engine, "loop", None, None)                         # an async loop: no queues
    assert window_of(engine, engine.trigger("fan", {"width": 20})) == 2 * (2 + 1)
    beat(engine, "w4", "default", 4)
    assert window_of(engine, engine.trigger("fan", {"width": 20})) == 8      # the cap


def test_a_run_on_two_queues_counts_the_workers_of_either_once(auto, registry):
    from qflow import task, workflow

    @task(queue="gpu")
    def render(i: int) -> int:
        return i

    @task
    def plain(i: int) -> int:
        return i

    @workflow
    def two_queues():       # more tasks than the floor: a smaller run is not bounded
        for i in range(2):
            render(i)
            plain(i)

    @workflow
    def gpu_only():
        for i in range(4):
            render(i)

    beat(auto, "w1", "default", 1)
    beat(auto, "w2", "gpu", 1)
    beat(auto, "w3", "gpu,default", 1)
    beat(auto, "w4", "cpu", 8)                               # neither
    assert window_of(auto, auto.trigger("two_queues")) == 2 * 3
    leaves(auto, "w2")
    leaves(auto, "w3")
    assert window_of(auto, auto.trigger("gpu_only")) == 3       # nobody serves gpu: the floor


def test_a_run_that_cannot_outgrow_the_least_window_is_not_bounded(auto, registry):
    """Three tasks and a floor of 3: whatever the workers, the window never holds them
    back, so nothing is counted for the run (unless a map could grow it)."""
    from qflow import task, workflow

    @task
    def plain(i: int) -> int:
        return i

    @task
    def total(values: list) -> int:
        return sum(values)

    @workflow
    def three():
        for i in range(3):
            plain(i)

    @workflow
    def mapped():
        total(plain.map([1, 2]))

    @workflow
    def four():
        total([plain(i) for i in range(3)])

    beat(auto, "w1", "default", 1)                           # a window of 3
    small = auto.trigger("three")
    assert window_of(auto, small) is None and len(auto.dispatcher.sent) == 3
    assert counters(auto, small) == (0, 0)                   # nothing counted for it
    assert window_of(auto, auto.trigger("mapped")) == 3
    bigger = auto.trigger("four")                            # four tasks, three roots
    assert window_of(auto, bigger) == 3 and counters(auto, bigger) == (3, 0)
    drain(auto)
    assert {run_of(auto, r)["state"] for r in (small, bigger)} == {"succeeded"}


def test_a_worker_not_heard_from_within_the_lost_timeout_does_not_count(windowed,  # noqa: F811
                                                                         monkeypatch):
    monkeypatch.setattr(sizing, "CACHE_SECONDS", 0.0)
    engine = windowed("auto", worker_lost_timeout=0.2, **AUTO)
    beat(engine, "w1", "default", 2)
    assert window_of(engine, engine.trigger("fan", {"width": 20})) == 4
    time.sleep(0.5)
    assert window_of(engine, engine.trigger("fan", {"width": 20})) == 3


def test_an_auto_window_follows_workers_and_never_takes_back_a_message(auto,
                                                                      windowed):  # noqa: F811
    engine = auto
    run_id = engine.trigger("fan", {"width": 20})
    kept = windowed(3).trigger("fan", {"width": 20})
    assert len(engine.dispatcher.sent) == 3
    beat(engine, "w1", "default", 2)
    assert reconcile(engine) == 1                          # grown to 4: one more sent
    assert window_of(engine, run_id) == 4 and len(engine.dispatcher.sent) == 4
    beat(engine, "w2", "default", 2)
    reconcile(engine)
    assert window_of(engine, run_id) == 8 and len(engine.dispatcher.sent) == 8
    assert window_of(engine, kept) == 3                    # a number stays what it was
    leaves(engine, "w2")
    reconcile(engine)
    assert window_of(engine, run_id) == 4 and len(engine.dispatcher.sent) == 8
    for _ in range(4):                                     # 8 out: nothing more goes
        step(engine)                                       # until fewer than 4 are
    assert len(engine.dispatcher.sent) == 4 and counters(engine, run_id)[0] == 4
    ran, most = drain(engine)
    assert most == 4
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded" and {t["attempts"] for t in run["tasks"]} == {1}
    assert counters(engine, run_id) == (0, 0)


def test_a_burst_of_triggers_reads_the_live_workers_once(windowed):  # noqa: F811
    engine = windowed("auto", **AUTO)
    seen = []
    listen = (Engine, "before_cursor_execute", lambda conn, cursor, stmt, *_: seen.append(stmt))
    event.listen(*listen)
    try:
        for _ in range(5):
            engine.trigger("fan", {"width": 2})
    finally:
        event.remove(*listen)
    assert sum("FROM qflow_workers" in stmt for stmt in seen) == 1


@pytest.mark.parametrize("setting, value", [
    ("QFLOW_DISPATCH_WINDOW", "lots"), ("QFLOW_DISPATCH_WINDOW", "-1"),
    ("QFLOW_DISPATCH_WINDOW_MIN", "0"), ("QFLOW_DISPATCH_WINDOW_PER_SLOT", "0")])
def test_a_bad_window_setting_is_one_line_naming_it(setting, value):
    with pytest.raises(UserError, match=setting[6:].lower()) as caught:
        load_config(env={setting: value})
    assert "\n" not in str(caught.value)


def test_the_window_setting_reads_auto_or_a_number_from_file_and_environment(tmp_path):
    path = tmp_path / "qflow.toml"
    path.write_text("dispatch_window = 500\ndispatch_window_max = 50\n"
                    "dispatch_window_min = 10\n")
    assert load_config(str(path), env={}).window() == 500
    assert load_config(str(path), env={"QFLOW_DISPATCH_WINDOW": "AUTO"}).window().cap == 50
    assert load_config(env={"QFLOW_DISPATCH_WINDOW": "0"}).window() is None
    assert load_config(env={}).dispatch_window == "auto"
    with pytest.raises(UserError, match="dispatch_window_min"):
        load_config(env={"QFLOW_DISPATCH_WINDOW_MAX": "20"})          # under the floor


# -- real workers ---------------------------------------------------------------------
# 10 places per process, at least 5: one `qflow worker -c 2` makes 20, two make 40.
SIZING = dict(QFLOW_DISPATCH_WINDOW="auto", QFLOW_DISPATCH_WINDOW_PER_SLOT="10",
              QFLOW_DISPATCH_WINDOW_MIN="5", **LIVENESS)


@pytest.fixture
def bare(pg_server_url, tmp_path):
    """A Redis and a migrated database with no worker yet; workers the test starts stop
    with it."""
    redis = servers.start_redis()
    cluster = start_cluster(redis.url, pg_server_url, tmp_path, 0, **SIZING)
    yield cluster
    cluster.stop()
    redis.stop()


def client(cluster):
    from qflow.runtime import Runtime
    env = {k: v for k, v in cluster.env.items() if k.startswith("QFLOW_")}
    return Runtime(load_config(env=env, wait_poll_interval=0.05))


def start(cluster, name: str) -> None:
    cluster.start_worker(name, "-c", "2")
    cluster.wait_ready(names=[name])


def test_a_run_triggered_before_any_worker_completes_once_one_starts(bare):
    rt = client(bare)
    run_id = rt.engine.trigger("fan", {"width": 100})
    assert window_of(rt.engine, run_id) == 5
    assert rt.engine.dispatcher.waiting("default") == 5
    start(bare, "w1")
    run = rt.engine.wait(run_id, timeout=120)
    assert run["state"] == "succeeded" and run["tasks_done"] == 201
    assert window_of(rt.engine, run_id) == 20                # resized while it ran


def test_with_one_worker_of_two_processes_the_broker_holds_at_most_twenty(bare):
    start(bare, "w1")
    rt = client(bare)
    run_id, run, most = watched(rt, bare.broker_url, "fan", {"width": 1000})
    assert run["state"] == "succeeded" and run["tasks_done"] == 2001
    assert window_of(rt.engine, run_id) == 20
    assert 0 < most <= 20
    assert {t["attempts"] for t in run_of(rt.engine, run_id)["tasks"]} == {1}


def test_a_second_worker_joining_raises_the_bound(bare):
    start(bare, "w1")
    rt = client(bare)
    run_id = rt.engine.trigger("slow_fan", {"width": 600, "seconds": 0.05})
    assert window_of(rt.engine, run_id) == 20
    watch = QueueWatch(bare.broker_url)
    start(bare, "w2")
    watch.start()
    wait_for(lambda: window_of(rt.engine, run_id) == 40, timeout=10, interval=0.05,
             what="the window grown to 40")
    run = rt.engine.wait(run_id, timeout=300)
    watch.stop = True
    watch.join()
    assert run["state"] == "succeeded" and run["tasks_done"] == 601
    assert 20 < watch.most <= 40
    workers = {t["worker"].split("@")[0] for t in run_of(rt.engine, run_id)["tasks"]}
    assert workers == {"w1", "w2"}
