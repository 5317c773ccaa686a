"""async tasks on one worker process, subprocess isolation and shell tasks, on real workers."""
from __future__ import annotations

import subprocess
import time

import flows  # noqa: F401
import pytest
from conftest import qflow_env, run_id_in, start_cluster

from qflow.store import read
from qflow.worker.isolation import ShellError, fill_command


@pytest.fixture(scope="module")
def single(redis_url, pg_server_url, tmp_path_factory):
    """One worker with one process (-c 1)."""
    folder = tmp_path_factory.mktemp("single")
    c = start_cluster(redis_url.rsplit("/", 1)[0] + "/15", pg_server_url, folder, 0)
    c.start_worker("solo", "-c", "1")
    c.wait_ready()
    yield c
    c.stop()


def test_two_hundred_async_tasks_overlap_in_one_worker_process(single):
    rt = single.runtime()
    started = time.monotonic()
    run_id = rt.engine.trigger("napping", {"n": 200, "seconds": 0.5})
    assert rt.engine.wait(run_id, timeout=90)["state"] == "succeeded"
    took = time.monotonic() - started
    with rt.store.read() as conn:
        naps = read.results(conn, run_id, ["join"])["join"]
    assert [n[0] for n in naps] == list(range(200))
    assert len({n[3] for n in naps}) == 1                    # one process ran them all
    assert took < 200 * 0.5 / 4, took                       # far below 100 s one by one
    logs = subprocess.run(["qflow", "logs", run_id, "nap__7"], env=single.env,
                          capture_output=True, text=True).stdout
    assert "nap 7 done" in logs


def test_a_subprocess_task_that_exits_fails_cleanly_and_the_worker_survives(single):
    rt = single.runtime()
    run_id = rt.engine.trigger("crashing", {"code": 3})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "failed"
    with rt.store.read() as conn:
        run = read.get_run(conn, run_id)
        value = read.results(conn, run_id, ["isolated"])["isolated"]
    by_node = {t["node"]: t for t in run["tasks"]}
    assert by_node["crash"]["error"] == ("SubprocessDied: task process exited with code 3 "
                                         "without a result")
    assert by_node["const"]["state"] == "upstream_failed"
    assert value["double"] == 42 and value["pid"] != value["parent"]
    assert single.workers["solo"].poll() is None                # the worker lives on
    logs = subprocess.run(["qflow", "logs", run_id, "isolated"], env=single.env,
                          capture_output=True, text=True).stdout
    assert "in the child" in logs


def test_a_subprocess_task_s_exception_keeps_its_type_for_retry_on(single, tmp_path):
    rt = single.runtime()
    counter = tmp_path / "count"
    run_id = rt.engine.trigger("isolated_errors", {"counter": str(counter)})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "failed"
    with rt.store.read() as conn:
        task = read.get_run(conn, run_id)["tasks"][0]
    assert task["attempts"] == 2 and task["error"] == "KeyError: 'missing key'"
    assert counter.read_text() == "xx"


def test_shell_tasks_store_their_output_and_a_failing_command_fails(single):
    rt = single.runtime()
    run_id = rt.engine.trigger("shelling", {"name": "qflow"})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "failed"
    with rt.store.read() as conn:
        run = read.get_run(conn, run_id)
        value = read.results(conn, run_id, ["echo_words"])["echo_words"]
    assert value == {"command": "echo hello, qflow && echo to-stderr >&2", "returncode": 0,
                     "stdout": "hello, qflow\n"}
    failed = {t["node"]: t for t in run["tasks"]}["failing_command"]
    assert failed["error"].startswith("ShellError: command exited with 2: ls: cannot access")
    logs = subprocess.run(["qflow", "logs", run_id, "echo_words"], env=single.env,
                          capture_output=True, text=True).stdout
    assert "hello, qflow" in logs and "to-stderr" in logs
    logs = subprocess.run(["qflow", "logs", run_id, "failing_command"], env=single.env,
                          capture_output=True, text=True).stdout
    assert "partial output" in logs


# -- placeholders: a value is one argument, never more shell syntax ------------------------
INJECTION = "orders; touch {marker} && echo $(touch {marker}2) `touch {marker}3` it's"

SHELL_FLOW = '''
from qflow import shell, workflow

dbt = shell("echo selecting {model}", name="dbt_run")
argv = shell(["printf", "[%s]\\\\n", "--select={model}"], name="argv_run")


@workflow
def dbt_flow(model: str = "orders"):
    dbt(model=model)
    argv(model=model)
'''


def test_a_shell_placeholder_cannot_run_a_second_command(tmp_path):
    marker = tmp_path / "pwned"
    value = INJECTION.format(marker=marker)
    flow = tmp_path / "dbt_flow.py"
    flow.write_text(SHELL_FLOW)
    env = qflow_env(QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/qflow.db")
    done = subprocess.run(["qflow", "-A", str(flow), "run", "dbt_flow", "-p", f"model={value}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []
    run_id = run_id_in(done.stdout)

    def logs(node: str) -> str:
        return subprocess.run(["qflow", "-A", str(flow), "logs", run_id, node], env=env,
                              cwd=tmp_path, capture_output=True, text=True).stdout

    assert f"selecting {value}\n" in logs("dbt_run")            # echoed, not executed
    assert f"[--select={value}]\n" in logs("argv_run")          # one argv item


def test_placeholders_fill_a_list_command_item_by_item():
    assert fill_command(["grep", "-e", "{pattern}", "{path}"], (), {
        "pattern": "a b; rm -rf /", "path": "/tmp/x y"}) == [
        "grep", "-e", "a b; rm -rf /", "/tmp/x y"]
    assert fill_command("wc -l {path}", (), {"path": "x y"}) == "wc -l 'x y'"
    assert fill_command("echo {0} {rows}", ("$HOME",), {"rows": [1, 2]}) == \
        "echo '$HOME' '[1, 2]'"
    with pytest.raises(ShellError, match="needs a value for 'model'"):
        fill_command(["dbt", "--select", "{model}"], (), {})
