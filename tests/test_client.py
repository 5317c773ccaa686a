"""`from qflow import Client`: trigger, wait, status, result, runs, retry and cancel from
Python, on the embedded default (SQLite, in-process worker) and on a real cluster."""
from __future__ import annotations

import json
import subprocess
import time

import flows  # noqa: F401 - registers the workflows in this process too
import pytest
from conftest import qflow_env

from qflow import Client
from qflow.errors import UserError


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("client") / "qflow.db"
    with Client(database_url=f"sqlite:///{db}", wait_poll_interval=0.05) as c:
        yield c


def test_trigger_and_wait_return_the_status_of_qflow_status_json(client):
    run_id = client.trigger("diamond", {"x": 2})
    run = client.wait(run_id, timeout=30)
    assert run["state"] == "succeeded" and run["params"] == {"x": 2}
    assert {t["node"] for t in run["tasks"]} == {"const", "add", "add__1", "add__2"}
    out = subprocess.run(["qflow", "status", run_id, "--json"], capture_output=True,
                         text=True, env=qflow_env(QFLOW_DATABASE_URL=client.config.database_url))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == run == client.status(run_id)


def test_result_reads_a_node_or_the_last_leaf(client):
    run_id = client.trigger("diamond", {"x": 2})
    client.wait(run_id, timeout=30)
    assert client.result(run_id, "add__2") == 2 + 10 + 2 + 20
    assert client.result(run_id) == 2 + 10 + 2 + 20          # add__2 is the only leaf
    assert client.result(run_id, "const") == 2


def test_a_failed_task_has_no_result_and_unknown_things_are_user_errors(client):
    run_id = client.trigger("failing")
    assert client.wait(run_id, timeout=30)["state"] == "failed"
    with pytest.raises(UserError, match="has no result"):
        client.result(run_id, "boom")
    with pytest.raises(UserError, match="has no task 'nope'"):
        client.result(run_id, "nope")
    with pytest.raises(UserError, match="unknown run"):
        client.status("0" * 32)
    with pytest.raises(UserError, match="unknown workflow 'nope'"):
        client.trigger("nope")
    with pytest.raises(UserError, match="parameter 'x'"):
        client.trigger("diamond", {"x": "not a number"})


def test_runs_lists_the_newest_first_with_filters(client):
    made = [client.trigger("diamond", {"x": i}) for i in range(3)]
    for run_id in made:
        client.wait(run_id, timeout=30)
    rows = client.runs(workflow="diamond", limit=3)
    assert [r["run_id"] for r in rows] == made[::-1]
    assert all(r["workflow"] == "diamond" and "tasks" not in r for r in rows)
    assert all(r["state"] == "failed" for r in client.runs(state="failed"))


def test_retry_from_a_node_and_cancel_of_an_ended_run(client):
    run_id = client.trigger("diamond", {"x": 1})
    client.wait(run_id, timeout=30)
    with pytest.raises(UserError, match="only a failed or canceled run"):
        client.retry(run_id)
    assert client.retry(run_id, from_node="add__2") == 1
    run = client.wait(run_id, timeout=30)
    attempts = {t["node"]: t["attempts"] for t in run["tasks"]}
    assert run["state"] == "succeeded" and attempts["add__2"] == 2 and attempts["add"] == 1
    with pytest.raises(UserError, match="already ended"):
        client.cancel(run_id)


def test_wait_gives_up_after_its_timeout(client, tmp_path):
    run_id = client.trigger("retrying", {"counter": str(tmp_path / "n"), "failures": 2})
    with pytest.raises(TimeoutError):
        client.wait(run_id, timeout=0.2)
    assert client.wait(run_id, timeout=30)["state"] == "succeeded"


def test_the_client_reads_the_config_file_and_the_environment(tmp_path, monkeypatch):
    db = tmp_path / "from-file.db"
    config = tmp_path / "qflow.toml"
    config.write_text(f'[qflow]\ndatabase_url = "sqlite:///{db}"\n')
    with Client(str(config)) as c:
        assert c.config.database_url == f"sqlite:///{db}"
        assert c.runs() == []
    monkeypatch.setenv("QFLOW_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("QFLOW_APP", "")
    with Client() as c:
        assert c.config.database_url == f"sqlite:///{tmp_path}/env.db"
    with Client(str(config), database_url=f"sqlite:///{tmp_path}/flag.db") as c:
        assert c.config.database_url == f"sqlite:///{tmp_path}/flag.db"


def test_on_a_cluster_the_client_triggers_waits_cancels_and_retries(cluster, tmp_path):
    with Client(broker_url=cluster.broker_url, database_url=cluster.database_url,
                wait_poll_interval=0.05) as c:
        run = c.wait(c.trigger("fan", {"width": 6}), timeout=60)
        assert run["state"] == "succeeded"
        assert c.result(run["run_id"], "join") == [1, 2, 3, 4, 5, 6]
        pidfile = tmp_path / "pid"
        run_id = c.trigger("cancelable", {"pidfile": str(pidfile)})
        deadline = time.monotonic() + 20
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.cancel(run_id)
        assert c.wait(run_id, timeout=30)["state"] == "canceled"
        assert c.retry(run_id) >= 1
        assert c.status(run_id)["state"] in ("queued", "running")
        c.cancel(run_id)
        assert c.wait(run_id, timeout=30)["state"] == "canceled"
