"""Sensors: poked until satisfied, ``sensing`` in between without a worker or a pool slot,
failing with SensorTimeout after their timeout; and the ready-made ones.

In process against real SQLite and PostgreSQL (messages run by hand), then on a real
Redis, PostgreSQL and one `qflow worker -c 1` process.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import json
import sqlite3
import threading
import time

import asset_flows  # noqa: F401 - registers the sensor workflows
import pytest
import servers
from conftest import ROOT, start_cluster, wait_for
from sqlalchemy import update
from test_cli import qflow
from test_store import drain, engine, run_of  # noqa: F401 - the engine fixture

from qflow import task, workflow
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.errors import UserError
from qflow.sensors import file_exists, http_ok, run_succeeded, sql_row
from qflow.store import audit, read
from qflow.store.models import tasks
from qflow.store.pools import listing

APP = str(ROOT / "tests" / "asset_flows.py")
T = dt.datetime(2026, 3, 1, 6, 0, tzinfo=dt.timezone.utc)


def poke(engine: Engine) -> str | None:
    """Run the next message once its countdown is over; the outcome's state."""
    item = engine.dispatcher.sent.pop(0)
    time.sleep(item.countdown)
    done = Executor(engine).execute(item.run_id, item.node, item.attempt, worker="test")
    return None if done is None else done.state


def task_of(engine: Engine, run_id: str, node: str) -> dict:
    return next(t for t in run_of(engine, run_id)["tasks"] if t["node"] == node)


# -- in process ------------------------------------------------------------------------------
def test_a_sensor_senses_without_a_worker_until_its_file_lands(engine, tmp_path):
    run_id = engine.trigger("wait_for_file", {"pattern": str(tmp_path / "in" / "*.csv")})
    assert poke(engine) == "sensing"
    sensor = task_of(engine, run_id, "landed")
    assert sensor["state"] == "sensing" and sensor["worker"] is None
    assert run_of(engine, run_id)["state"] == "running"          # sensing is not ended
    (again,) = engine.dispatcher.sent
    assert again.node == "landed" and again.attempt == 1 and again.countdown == 0.5
    assert poke(engine) == "sensing"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sales.csv").write_text("1\n")
    assert poke(engine) == "succeeded"
    drain(engine)
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["landed", "count"]) == {
            "landed": [str(tmp_path / "in" / "sales.csv")], "count": 1}
    assert task_of(engine, run_id, "landed")["attempts"] == 1     # pokes spend no retry


def test_a_sensor_past_its_timeout_fails_with_SensorTimeout_and_retries_first(
        engine, registry, tmp_path):
    @task.sensor(poke_interval=0.3, timeout=1, retries=1, retry_delay=0)
    def never_lands(pattern: str) -> list[str]:
        return file_exists(pattern)

    @workflow
    def never(pattern: str):
        never_lands(pattern)

    run_id = engine.trigger("never", {"pattern": str(tmp_path / "none")})
    started, states = time.monotonic(), []
    while engine.dispatcher.sent:
        states.append(poke(engine))
    took = time.monotonic() - started
    sensor = task_of(engine, run_id, "never_lands")
    assert run_of(engine, run_id)["state"] == "failed"
    assert sensor["state"] == "failed" and sensor["attempts"] == 2
    assert sensor["error"] == "SensorTimeout: sensor not satisfied after 1s (its timeout is 1s)"
    assert states.count("retrying") == 1 and states[-1] == "failed"
    assert 2.0 <= took < 6


def test_canceling_a_run_cancels_its_sensing_sensor(engine, tmp_path):
    run_id = engine.trigger("wait_for_file", {"pattern": str(tmp_path / "x")})
    assert poke(engine) == "sensing"
    assert engine.cancel(run_id) == "canceled"
    assert task_of(engine, run_id, "landed")["state"] == "canceled"
    assert poke(engine) is None                  # the pending poke finds nothing to do


def test_a_sensor_waits_for_another_workflows_run_of_the_same_logical_time(engine, registry):
    @task.sensor(poke_interval=0.2, timeout=30)
    def upstream(url: str) -> str | None:
        return run_succeeded("quick_flow", database_url=url)

    @workflow
    def after_quick(url: str):
        upstream(url)

    quick = registry.WORKFLOWS["quick_flow"] = asset_flows.quick_flow
    run_id = engine.create_run(engine.workflow("after_quick"), {"url": engine.store.url},
                               T).run_id
    assert poke(engine) == "sensing"
    other = engine.create_run(quick, {"i": 1}, T + dt.timedelta(hours=1)).run_id
    sensor_poke = engine.dispatcher.sent.pop(0)
    drain(engine)                                 # another logical time: still sensing
    engine.dispatcher.sent.append(sensor_poke)
    assert poke(engine) == "sensing"
    same = engine.create_run(quick, {"i": 2}, T).run_id
    sensor_poke = engine.dispatcher.sent.pop(0)
    drain(engine)
    engine.dispatcher.sent.append(sensor_poke)
    assert poke(engine) == "succeeded"
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["upstream"]) == {"upstream": same}
    assert same != other


@pytest.fixture
def gated(engine, registry):
    """The engine with a pool ``gate`` of 1 slot, used by the sensor of the workflow
    ``sense_gated`` and by the task of ``use_gate``."""
    engine.config = dataclasses.replace(engine.config, pools="gate=1")

    @task.sensor(poke_interval=0.3, timeout=60, pool="gate")
    def gated_sensor(pattern: str) -> list[str]:
        return file_exists(pattern)

    @task(pool="gate")
    def gated_task(i: int) -> int:
        return i

    @workflow
    def sense_gated(pattern: str):
        gated_sensor(pattern)

    @workflow
    def use_gate(i: int):
        gated_task(i)

    return engine


def gate(engine: Engine) -> tuple[int, int]:
    """(used, waiting) of the pool ``gate``, as `qflow pools` shows them."""
    with engine.store.read() as conn:
        row = next(p for p in listing(conn) if p["name"] == "gate")
    return row["used"], row["waiting"]


def test_a_pooled_sensor_holds_no_slot_between_pokes_and_waits_for_it_when_due(
        gated, tmp_path):
    engine = gated
    sensing = engine.trigger("sense_gated", {"pattern": str(tmp_path / "*.csv")})
    assert gate(engine) == (1, 0)                 # released: the sensor takes the slot
    assert poke(engine) == "sensing"
    assert gate(engine) == (0, 0)                 # between pokes it gives it back
    other = engine.trigger("use_gate", {"i": 7})
    assert gate(engine) == (1, 0)                 # so another task of the pool runs
    assert [d.node for d in engine.dispatcher.sent] == ["gated_sensor", "gated_task"]
    # The poke comes due while the other task holds the slot: it waits for the slot.
    assert poke(engine) is None
    assert task_of(engine, sensing, "gated_sensor")["state"] == "queued"
    assert gate(engine) == (1, 1)
    assert [d.node for d in engine.dispatcher.sent] == ["gated_task"]
    assert poke(engine) == "succeeded"            # its end admits the sensor's poke
    assert run_of(engine, other)["state"] == "succeeded"
    (again,) = engine.dispatcher.sent
    assert (again.node, again.attempt) == ("gated_sensor", 1)
    assert gate(engine) == (1, 0)
    assert poke(engine) == "sensing"
    assert gate(engine) == (0, 0)
    (tmp_path / "day.csv").write_text("1\n")
    assert poke(engine) == "succeeded"
    assert engine.dispatcher.sent == []
    assert gate(engine) == (0, 0)
    assert run_of(engine, sensing)["state"] == "succeeded"
    sensor = task_of(engine, sensing, "gated_sensor")
    assert sensor["attempts"] == 1                # pokes, and waits for the slot, spend none
    with engine.store.read() as conn:
        assert read.results(conn, sensing, ["gated_sensor"]) == {
            "gated_sensor": [str(tmp_path / "day.csv")]}


def test_canceling_a_pooled_sensor_sensing_or_waiting_for_its_slot_frees_no_slot_twice(
        gated, tmp_path):
    engine = gated
    pattern = {"pattern": str(tmp_path / "*.csv")}
    first = engine.trigger("sense_gated", pattern)
    assert poke(engine) == "sensing"
    engine.trigger("use_gate", {"i": 1})
    assert poke(engine) is None                   # first's poke waits for the slot
    second = engine.trigger("sense_gated", pattern)
    assert gate(engine) == (1, 2)
    assert engine.cancel(first) == "canceled"     # waiting: nothing to give back
    assert gate(engine) == (1, 1)
    assert poke(engine) == "succeeded"            # the task's end admits second's sensor
    assert gate(engine) == (1, 0)
    assert poke(engine) == "sensing"
    engine.trigger("use_gate", {"i": 2})
    assert gate(engine) == (1, 0)
    assert engine.cancel(second) == "canceled"    # sensing: it holds no slot to give back
    assert gate(engine) == (1, 0)
    assert [poke(engine) for _ in range(2)] == [None, "succeeded"]   # its stale poke, then
    assert gate(engine) == (0, 0)                                    # the task


def test_a_lost_poke_of_a_pooled_sensor_is_sent_again_by_the_reconciler(gated, tmp_path):
    engine = gated
    engine.config = dataclasses.replace(engine.config, requeue_after=60)
    run_id = engine.trigger("sense_gated", {"pattern": str(tmp_path / "*.csv")})
    assert poke(engine) == "sensing"
    engine.dispatcher.sent.clear()                # the broker lost the poke's message
    with engine.store.write() as conn:            # which was due two minutes ago
        conn.execute(update(tasks).where(tasks.c.run_id == run_id).values(
            queued_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            - dt.timedelta(seconds=120)))
    with engine.store.read() as conn:             # doctor: a task whose message is missing
        assert audit.queued_by_queue(conn, 60) == {None: 1}
    assert Upkeep(Executor(engine)).reconcile() == 1
    (again,) = engine.dispatcher.sent
    assert (again.node, again.attempt) == ("gated_sensor", 1)
    (tmp_path / "day.csv").write_text("1\n")
    assert poke(engine) == "succeeded"
    assert gate(engine) == (0, 0)
    assert task_of(engine, run_id, "gated_sensor")["attempts"] == 1


def test_bad_sensor_options_are_refused_when_declared():
    with pytest.raises(UserError, match="poke_interval must be a number of seconds > 0"):
        task.sensor(poke_interval=0)(lambda: True)
    with pytest.raises(UserError, match="mode must be one of reschedule"):
        task.sensor(mode="poke")(lambda: True)


def test_the_ready_made_sensors_say_not_yet_then_give_what_they_found(tmp_path):
    assert file_exists(str(tmp_path / "*.csv")) == []
    (tmp_path / "b.csv").touch()
    (tmp_path / "a.csv").touch()
    assert file_exists(str(tmp_path / "*.csv")) == [str(tmp_path / n) for n in ("a.csv",
                                                                               "b.csv")]
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE loads (day TEXT, rows INTEGER)")
    query = "SELECT day, rows FROM loads WHERE day = :day"
    assert sql_row(f"sqlite:///{db}", query, {"day": "2026-03-01"}) is None
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO loads VALUES ('2026-03-01', 42)")
    assert sql_row(f"sqlite:///{db}", query, {"day": "2026-03-01"}) == {
        "day": "2026-03-01", "rows": 42}


def test_http_ok_is_the_status_of_a_2xx_answer_and_false_otherwise():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            self.send_response(204 if self.path == "/ready" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert http_ok(base + "/ready") == 204
        assert http_ok(base + "/not-yet") is False
    finally:
        server.shutdown()
    assert http_ok(f"http://127.0.0.1:{servers.free_port()}/") is False   # nobody there


# -- as a user runs it -----------------------------------------------------------------------
def state_of(store, run_id: str, node: str) -> str:
    with store.read() as conn:
        return next(t["state"] for t in read.get_run(conn, run_id)["tasks"]
                    if t["node"] == node)


def test_a_sensing_task_leaves_a_single_process_worker_free_for_other_tasks(
        redis_url, pg_server_url, tmp_path):
    broker = redis_url.rsplit("/", 1)[0] + "/10"         # a Redis DB of its own
    c = start_cluster(broker, pg_server_url, tmp_path, 0, app=APP)
    c.start_worker("w1", "-c", "1")
    c.wait_ready()
    rt = c.runtime()
    try:
        pattern = str(tmp_path / "in" / "*.csv")
        waiting = rt.engine.trigger("wait_for_file", {"pattern": pattern})

        def sensor_state() -> str:
            return state_of(rt.store, waiting, "landed")

        wait_for(lambda: sensor_state() == "sensing", what="the sensor sensing")

        def shown() -> dict[str, str]:
            out = qflow("status", waiting, "--json", cwd=tmp_path, env=c.env).stdout
            return {t["node"]: t["state"] for t in json.loads(out)["tasks"]}
        # Each poke (every 0.5 s) runs for a moment: between two, status shows it sensing.
        wait_for(lambda: shown() == {"landed": "sensing", "count": "pending"},
                 what="qflow status showing the sensor sensing")
        # The one worker process runs other tasks while the sensor waits.
        others = [rt.engine.trigger("quick_flow", {"i": i}) for i in range(3)]
        for run_id in others:
            assert rt.engine.wait(run_id, timeout=20)["state"] == "succeeded"
        assert sensor_state() == "sensing"
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "day.csv").write_text("x\n")
        assert rt.engine.wait(waiting, timeout=20)["state"] == "succeeded"
        with rt.store.read() as conn:
            assert read.results(conn, waiting, ["count"]) == {"count": 1}
        # The timeout path: a clear failure, downstream not run.
        vain = rt.engine.trigger("wait_in_vain", {"pattern": str(tmp_path / "never")})
        run = rt.engine.wait(vain, timeout=20)
        with rt.store.read() as conn:
            tasks = {t["node"]: t for t in read.get_run(conn, vain)["tasks"]}
        assert run["state"] == "failed"
        assert tasks["landed_soon"]["error"].startswith("SensorTimeout: sensor not satisfied")
        assert tasks["count"]["state"] == "upstream_failed"
    finally:
        c.stop()
        rt.store.dispose()
    assert "Traceback" not in (tmp_path / "w1.log").read_text()


def test_a_sensing_sensor_leaves_its_pool_slot_to_other_tasks_on_a_real_worker(
        redis_url, pg_server_url, tmp_path):
    broker = redis_url.rsplit("/", 1)[0] + "/10"
    c = start_cluster(broker, pg_server_url, tmp_path, 0, app=APP)
    c.start_worker("w1", "-c", "1")
    c.wait_ready()
    rt = c.runtime()

    def gate() -> dict:
        out = qflow("pools", "--json", cwd=tmp_path, env=c.env).stdout
        return next(p for p in json.loads(out) if p["name"] == "gate")

    try:
        qflow("pools", "set", "gate", "1", cwd=tmp_path, env=c.env)
        pattern = str(tmp_path / "in" / "*.csv")
        waiting = rt.engine.trigger("wait_gated", {"pattern": pattern})
        wait_for(lambda: state_of(rt.store, waiting, "landed_gated") == "sensing",
                 what="the sensor sensing")
        # The pool's one slot is free between pokes: tasks of the pool run meanwhile.
        others = [rt.engine.trigger("quick_gated_flow", {"i": i}) for i in range(3)]
        for run_id in others:
            assert rt.engine.wait(run_id, timeout=20)["state"] == "succeeded"
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "day.csv").write_text("x\n")
        assert rt.engine.wait(waiting, timeout=20)["state"] == "succeeded"
        with rt.store.read() as conn:
            tasks = {t["node"]: t for t in read.get_run(conn, waiting)["tasks"]}
        assert tasks["landed_gated"]["attempts"] == 1 and tasks["count"]["state"] == "succeeded"
        assert (gate()["used"], gate()["waiting"]) == (0, 0)
    finally:
        c.stop()
        rt.store.dispose()
    assert "Traceback" not in (tmp_path / "w1.log").read_text()


def test_what_a_sensor_found_is_kept_like_any_value_sealed_with_the_key(engine, tmp_path):
    """With encryption_key set, a sensor's result (the paths it found: often data) is
    stored encrypted as any task's return value, and read back in clear with the key."""
    import dataclasses

    from qflow.results import codec
    from qflow.results.crypto import new_key
    from qflow.store.models import tasks

    engine.config = dataclasses.replace(engine.config, encryption_key=new_key())
    codec.install(codec.for_config(engine.config))
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "secret-sales.csv").write_text("1\n")
        run_id = engine.trigger("wait_for_file", {"pattern": str(tmp_path / "in" / "*.csv")})
        assert poke(engine) == "succeeded"
        with engine.store.read() as conn:
            stored = conn.execute(tasks.select().where(
                tasks.c.run_id == run_id, tasks.c.node == "landed")).one().result
            assert "secret-sales" not in stored
            assert read.results(conn, run_id, ["landed"]) == {
                "landed": [str(tmp_path / "in" / "secret-sales.csv")]}
    finally:
        codec.install(codec.for_config(dataclasses.replace(engine.config,
                                                           encryption_key="")))
