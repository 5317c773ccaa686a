"""Assets: a producer's success updates an asset, the workflows scheduled on it start.

In process against real SQLite and PostgreSQL (messages drained by hand, the scheduler's
asset step called directly), then as a user runs it: `qflow scheduler` and `qflow worker`
processes on a private Redis and a fresh PostgreSQL database, `qflow assets touch`,
`status --json` and the API's touch endpoint.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import asset_flows
import pytest
from conftest import ROOT, Cluster, new_pg_database, qflow_env, wait_for
from test_cli import assert_one_line_error, qflow
from test_store import StubDispatcher, drain, engine, run_of  # noqa: F401 - engine fixture
from test_web_api import Api, InProcessServer

from qflow import Asset, client, task, workflow
from qflow.authoring import OptionError
from qflow.core.records import Outcome
from qflow.engine import scheduler as S
from qflow.engine.client import Engine
from qflow.errors import UserError
from qflow.store import Store, attempts, read
from qflow.store.migrate import upgrade
from qflow.web.auth import WebSettings

APP = str(ROOT / "tests" / "asset_flows.py")


def consumer_runs(engine: Engine, name: str = "refresh_dashboard") -> list[dict]:
    return [run_of(engine, r["run_id"]) for r in client.run_list(engine.store, name, limit=1000)]


def updates_of(engine: Engine, name: str = "warehouse.sales") -> int:
    rows = {a["asset"]: a for a in client.asset_list(engine.store)}
    return rows[name]["updates"] if name in rows else 0


def produce(engine: Engine, n: int = 1) -> str:
    run_id = engine.trigger("produce_sales", {"n": n})
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"
    return run_id


def fire(scheduler: S.Scheduler, name: str = "refresh_dashboard") -> list[S.Fired]:
    wdef = scheduler.engine.workflow(name)
    return scheduler.fire_assets(wdef, wdef.options["assets"], S.now_aware())


# -- in process ------------------------------------------------------------------------------
def test_a_success_records_one_update_and_a_repeated_report_records_none(engine):
    run_id = produce(engine)
    assert updates_of(engine) == 1
    with engine.store.write() as conn:          # the same outcome reported again
        assert attempts.finish(conn, run_id, "load_sales", 1, Outcome("succeeded", "1")) is None
    listed = {a["asset"]: a for a in client.asset_list(engine.store)}["warehouse.sales"]
    assert listed["updates"] == 1 and listed["run_id"] == run_id
    assert listed["node"] == "load_sales"
    assert listed["producers"] == ["asset_flows.load_sales"]
    assert listed["consumers"] == ["needs_both", "refresh_dashboard"]


def test_updates_before_the_consumer_starts_make_one_run_that_names_each(engine):
    sched = S.Scheduler(engine)
    assert fire(sched) == []                  # first seen now: only later updates count
    producers = [produce(engine, n) for n in range(3)]
    fired = fire(sched)
    assert [f.outcome for f in fired] == [S.CREATED]
    assert fire(sched) == []                  # nothing new since that run
    drain(engine)
    (run,) = consumer_runs(engine)
    assert run["state"] == "succeeded" and run["run_id"] == fired[0].run_id
    assert [(t["asset"], t["run_id"]) for t in run["triggered_by"]] == \
        [("warehouse.sales", p) for p in producers]
    produce(engine)                           # a later update starts one more run
    assert [f.outcome for f in fire(sched)] == [S.CREATED]
    assert len(consumer_runs(engine)) == 2


def test_a_workflow_on_two_assets_starts_once_both_were_updated(engine):
    sched = S.Scheduler(engine)
    fire(sched, "needs_both")
    produce(engine)
    assert fire(sched, "needs_both") == []
    client.touch_asset(engine.store, "warehouse.prices")
    (fired,) = fire(sched, "needs_both")
    drain(engine)
    run = run_of(engine, fired.run_id)
    assert run["state"] == "succeeded"
    assert sorted((t["asset"], t["run_id"] is None) for t in run["triggered_by"]) == \
        [("warehouse.prices", True), ("warehouse.sales", False)]


def test_a_paused_consumer_waits_and_its_updates_stay_for_when_it_is_unpaused(engine):
    sched = S.Scheduler(engine)
    fire(sched)
    client.set_paused(engine.store, "refresh_dashboard", True)
    produce(engine)
    assert fire(sched) == []
    client.set_paused(engine.store, "refresh_dashboard", False)
    assert [f.outcome for f in fire(sched)] == [S.CREATED]


def test_two_schedulers_at_once_never_start_two_runs_for_the_same_updates(engine):
    other = Store(engine.store.url)             # its own connections, like a 2nd process
    schedulers = [S.Scheduler(engine),
                  S.Scheduler(Engine(engine.config, other, StubDispatcher()))]
    fire(schedulers[0])
    barrier = threading.Barrier(2)
    made: list[S.Fired] = []

    def race(s: S.Scheduler) -> None:
        for _ in range(5):
            barrier.wait()
            made.extend(f for f in fire(s) if f.outcome == S.CREATED)

    for _ in range(3):
        produce(engine)
        threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    other.dispose()
    runs = consumer_runs(engine)
    assert len(runs) == len(made) == 3
    consumed = Counter(t["run_id"] for r in runs for t in r["triggered_by"])
    assert len(consumed) == 3 and set(consumed.values()) == {1}


def test_bad_outlets_schedules_and_names_are_refused_when_declared(registry):
    with pytest.raises(UserError, match="outlets must be a list of Asset"):
        task(outlets=["warehouse.sales"])(lambda: None)
    with pytest.raises(OptionError, match="schedule must be a cron string, an interval, or a "
                                          "list of Asset"):
        workflow(schedule=[asset_flows.sales, "0 17 * * *"])(lambda: None)
    with pytest.raises(UserError, match="bad asset name 'two words'"):
        Asset("two words")


def test_assets_touch_of_an_unknown_name_exits_2_and_the_listing_shows_the_rest(tmp_path):
    env = qflow_env(QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/q.db", QFLOW_APP=APP)
    assert_one_line_error(qflow("assets", "touch", "warehouse.nope", cwd=tmp_path, env=env),
                          2, "unknown asset 'warehouse.nope'")
    out = qflow("assets", "touch", "warehouse.sales", cwd=tmp_path, env=env)
    assert out.returncode == 0 and "asset warehouse.sales updated" in out.stdout, out.stderr
    rows = json.loads(qflow("assets", "--json", cwd=tmp_path, env=env).stdout)
    assert [(r["asset"], r["updates"], r["run_id"]) for r in rows] == [
        ("warehouse.prices", 0, None), ("warehouse.sales", 1, None)]
    table = qflow("assets", cwd=tmp_path, env=env).stdout
    assert "warehouse.sales" in table and "outside" in table and "never" in table
    assert qflow("pause", "refresh_dashboard", cwd=tmp_path, env=env).returncode == 0
    listed = qflow("workflows", cwd=tmp_path, env=env).stdout
    assert "on updates of warehouse.sales, paused" in listed
    assert "on updates of warehouse.prices, warehouse.sales" in listed


# -- as a user runs it -----------------------------------------------------------------------
class AssetCluster(Cluster):
    """A `qflow worker` and two `qflow scheduler` processes on asset_flows.py."""

    def __init__(self, redis_url: str, pg_server_url: str, folder: Path):
        broker = redis_url.rsplit("/", 1)[0] + "/6"          # a Redis DB of its own
        super().__init__(broker, new_pg_database(pg_server_url), APP, folder,
                         QFLOW_SCHEDULER_INTERVAL="1")
        self.store = Store(self.database_url)
        upgrade(self.store)

    def start_scheduler(self, name: str) -> None:
        log = open(self.folder / f"{name}.log", "a")
        self.workers[name] = subprocess.Popen(["qflow", "scheduler", "-l", "DEBUG"],
                                              env=self.env, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=self.folder)

    def qflow(self, *args: str):
        return qflow(*args, cwd=self.folder, env=self.env)

    def consumers(self) -> list[dict]:
        with self.store.read() as conn:
            return [read.get_run(conn, r["run_id"])
                    for r in read.list_runs(conn, "refresh_dashboard", limit=1000)]

    def status(self, run_id: str) -> dict:
        out = self.qflow("status", run_id, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def produce(self) -> str:
        out = self.qflow("trigger", "produce_sales", "--wait", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[0])["run_id"]

    def stop(self) -> None:
        super().stop()
        self.store.dispose()


def test_producer_consumer_bursts_two_schedulers_and_external_touches(
        redis_url, pg_server_url, tmp_path):
    c = AssetCluster(redis_url, pg_server_url, tmp_path)
    rt = c.runtime()
    c.start_worker("w1", "-c", "2")
    c.wait_ready()
    server = None
    try:
        c.start_scheduler("s1")
        c.start_scheduler("s2")
        for name in ("s1", "s2"):
            wait_for(lambda n=name: "scheduler started" in (tmp_path / f"{n}.log").read_text(),
                     what=f"{name} started")
        time.sleep(1.5)                          # both have seen the consumer

        # One update: the consumer runs within the interval and a few seconds, once.
        producer = c.produce()
        done = time.monotonic()
        first = wait_for(lambda: [r for r in c.consumers() if r["state"] == "succeeded"],
                         timeout=6, what="the consumer's run")
        assert time.monotonic() - done < 6
        time.sleep(2)
        assert [r["run_id"] for r in c.consumers()] == [first[0]["run_id"]]
        shown = c.status(first[0]["run_id"])            # as `qflow status --json` shows it
        assert [(t["asset"], t["run_id"]) for t in shown["triggered_by"]] == \
            [("warehouse.sales", producer)]

        # 20 updates in a burst: at most one run per scheduler chance (1 s) while it lasts.
        before = len(c.consumers())
        start = time.monotonic()
        burst = [rt.engine.trigger("produce_sales", {"n": i}) for i in range(20)]
        for run_id in burst:
            assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
        time.sleep(3)                                   # the last updates' run starts
        chances = (time.monotonic() - start) / 1.0 + 1  # every tick of the whole window
        runs = c.consumers()
        assert 1 <= len(runs) - before <= chances
        consumed = Counter(t["run_id"] for r in runs for t in r["triggered_by"])
        assert set(consumed) == {producer, *burst}, "an update started no run"
        assert set(consumed.values()) == {1}, "an update started two runs"

        # An update from outside, by the CLI and by the API.
        assert_one_line_error(c.qflow("assets", "touch", "warehouse.nope"), 2,
                              "unknown asset 'warehouse.nope'")
        assert c.qflow("assets", "touch", "warehouse.sales").returncode == 0
        wait_for(lambda: len(c.consumers()) == len(runs) + 1, timeout=6,
                 what="the run an external touch starts")
        server = InProcessServer(rt, WebSettings(tokens=("tok-123",)))
        api = Api(f"http://127.0.0.1:{server.port}")
        status, body, _ = api.post("/qflow/api/v1/assets/warehouse.nope/touch")
        assert status == 404 and body == {"error": "unknown asset 'warehouse.nope'"}
        status, body, _ = api.post("/qflow/api/v1/assets/warehouse.sales/touch")
        assert status == 200 and body["asset"] == "warehouse.sales", body
        wait_for(lambda: len(c.consumers()) == len(runs) + 2, timeout=6,
                 what="the run the API's touch starts")
        touched = [r for r in c.consumers() if r["triggered_by"][0]["run_id"] is None]
        assert len(touched) == 2
    finally:
        if server is not None:
            server.stop()
        c.stop()
    for name in ("s1", "s2"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
