"""End to end: real Redis, real PostgreSQL, two separate `qflow worker` processes."""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import fault_flows  # noqa: F401
import flows  # noqa: F401 - registers the workflows in this process too
import pytest

from qflow.store import read


def run_and_wait(rt, workflow: str, params: dict | None = None, timeout: float = 60) -> dict:
    run_id = rt.engine.trigger(workflow, params or {})
    rt.engine.wait(run_id, timeout=timeout)
    with rt.store.read() as conn:
        return read.get_run(conn, run_id)


def results(rt, run_id: str, nodes: list[str]) -> dict:
    with rt.store.read() as conn:
        return read.results(conn, run_id, nodes)


@pytest.fixture(scope="module", params=["redis", "amqp"])
def broker_cluster(request):
    """The end-to-end tests run on Redis and on RabbitMQ."""
    return request.getfixturevalue("cluster" if request.param == "redis" else "amqp_cluster")


@pytest.fixture(scope="module")
def rt(broker_cluster):
    return broker_cluster.runtime()


def test_a_diamond_runs_on_the_workers(rt):
    run = run_and_wait(rt, "diamond", {"x": 2})
    assert run["state"] == "succeeded"
    assert results(rt, run["run_id"], ["add__2"]) == {"add__2": 2 + 10 + 2 + 20}
    times = {t["node"]: t for t in run["tasks"]}
    assert times["const"]["finished_at"] <= times["add"]["started_at"]
    assert times["add__1"]["finished_at"] <= times["add__2"]["started_at"]


def test_a_fan_out_fan_in_uses_both_worker_processes(rt):
    run = run_and_wait(rt, "fan", {"width": 40})
    assert run["state"] == "succeeded"
    assert results(rt, run["run_id"], ["join"])["join"] == [i + 1 for i in range(40)]
    hosts = {t["worker"].split("@")[0] for t in run["tasks"]}
    assert hosts == {"w1", "w2"}


def test_a_chain_passes_each_value_to_the_next(rt):
    run = run_and_wait(rt, "chain", {"length": 30})
    assert run["state"] == "succeeded"
    assert results(rt, run["run_id"], ["add__29"]) == {"add__29": 30}
    # Each hop ran in the process of its parent (follow_seconds), not from a message of
    # its own: the tasks share their parents' Celery ids.
    messages = {t["celery_id"] for t in run["tasks"]}
    assert len(messages) <= len(run["tasks"]) // 2


def test_twenty_fan_in_runs_at_once_run_each_child_exactly_once(rt, tmp_path):
    marker = tmp_path / "child-runs.txt"
    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(lambda _: rt.engine.trigger(
            "fan_in", {"marker": str(marker), "width": 50}), range(20)))
    for run_id in run_ids:
        assert rt.engine.wait(run_id, timeout=120)["state"] == "succeeded"
    lines = marker.read_text().splitlines()
    assert Counter(line.split()[0] for line in lines) == Counter({r: 1 for r in run_ids})
    assert all(line.split()[2] == "50" for line in lines)


def test_a_failed_task_fails_the_run_and_trigger_wait_exits_1(broker_cluster):
    cluster = broker_cluster
    out = subprocess.run(["qflow", "trigger", "failing", "--wait"], env=cluster.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    run_id = out.stdout.splitlines()[0]
    status = json.loads(subprocess.run(["qflow", "status", run_id, "--json"], env=cluster.env,
                                       capture_output=True, text=True).stdout)
    assert status["state"] == "failed"
    assert {t["node"]: t["state"] for t in status["tasks"]}["add"] == "upstream_failed"


def test_the_cli_triggers_waits_and_reports_on_the_cluster(broker_cluster):
    cluster = broker_cluster
    out = subprocess.run(["qflow", "trigger", "diamond", "-p", "x=3", "--wait", "--json"],
                         env=cluster.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    status = json.loads(subprocess.run(["qflow", "status", run_id, "--json"], env=cluster.env,
                                       capture_output=True, text=True).stdout)
    assert status["state"] == "succeeded" and status["params"] == {"x": 3}
    assert all(t["worker"] and t["attempts"] == 1 for t in status["tasks"])
    runs = json.loads(subprocess.run(["qflow", "runs", "--workflow", "diamond", "--json"],
                                     env=cluster.env, capture_output=True, text=True).stdout)
    assert run_id in [r["run_id"] for r in runs] and "tasks" not in runs[0]


def test_workers_name_tasks_after_workflow_and_node(broker_cluster, rt):
    cluster = broker_cluster
    run = run_and_wait(rt, "chain", {"length": 1})
    logs = "".join((cluster.folder / f"{w}.log").read_text() for w in cluster.workers)
    assert "chain.const[" in logs and "chain.add[" in logs    # add: run after const
    assert run["state"] == "succeeded"


def test_an_urgent_task_jumps_the_queue(broker_cluster, tmp_path):
    import time

    from conftest import ROOT
    cluster = broker_cluster
    rt = cluster.runtime()
    marker = tmp_path / "order.txt"
    run_id = rt.engine.trigger("priorities", {"marker": str(marker)})   # urgent sent last
    cluster.env["QFLOW_APP"] = f"{cluster.app},{ROOT / 'tests' / 'fault_flows.py'}"
    try:
        time.sleep(0.5)
        cluster.start_worker("prio", "-Q", "prio", "-c", "1")
        assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    finally:
        cluster.env["QFLOW_APP"] = cluster.app
        worker = cluster.workers.pop("prio")
        worker.terminate()
        worker.wait(20)
    assert marker.read_text().splitlines()[0] == "urgent"
