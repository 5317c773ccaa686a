"""Failure handling on real workers: retries, timeouts, trigger rules, branches, resume,
cancel and fail-fast."""
from __future__ import annotations

import os
import subprocess
import time

import flows  # noqa: F401 - registers the workflows in this process too
import pytest
from conftest import attempt_rows

from qflow.store import read


@pytest.fixture(scope="module")
def rt(cluster):
    return cluster.runtime()


def run_and_wait(rt, workflow: str, params: dict | None = None, timeout: float = 60) -> dict:
    run_id = rt.engine.trigger(workflow, params or {})
    rt.engine.wait(run_id, timeout=timeout)
    with rt.store.read() as conn:
        return read.get_run(conn, run_id)


def states(run: dict) -> dict[str, str]:
    return {t["node"]: t["state"] for t in run["tasks"]}


def test_a_task_failing_twice_then_succeeding_is_retried_with_backoff(rt, tmp_path):
    counter = str(tmp_path / "flaky")
    run = run_and_wait(rt, "retrying", {"counter": counter, "failures": 2})
    assert run["state"] == "succeeded"
    assert run["tasks"][0]["attempts"] == 3
    rows = attempt_rows(rt, run["run_id"], "flaky")
    assert [(r.number, r.state) for r in rows] == [(1, "failed"), (2, "failed"),
                                                   (3, "succeeded")]
    assert rows[0].error_type == "ConnectionError" and "attempt 1 failed" in rows[0].error
    assert "raise ConnectionError" in rows[0].traceback and rows[0].worker
    gaps = [(rows[i + 1].started_at - rows[i].finished_at).total_seconds() for i in (0, 1)]
    assert 0.5 <= gaps[0] < 1.5 and 1.0 <= gaps[1] < 2.0, gaps      # 0.5 s, then 0.5 × 2


def test_fail_and_exceptions_outside_retry_on_are_not_retried(rt, tmp_path):
    run = run_and_wait(rt, "hopeless", {"counter": str(tmp_path / "a"),
                                        "picky_counter": str(tmp_path / "b")})
    assert run["state"] == "failed"
    by_node = {t["node"]: t for t in run["tasks"]}
    assert by_node["give_up"]["attempts"] == 1 and by_node["picky"]["attempts"] == 1
    assert by_node["give_up"]["error"] == "Fail: bad input, retrying will not help"
    assert (tmp_path / "a").read_text() == "x" and (tmp_path / "b").read_text() == "x"


def test_a_task_past_its_timeout_fails_and_the_worker_goes_on(rt):
    started = time.monotonic()
    run = run_and_wait(rt, "timing_out", {"seconds": 30})
    assert time.monotonic() - started < 10
    assert run["state"] == "failed"
    assert run["tasks"][0]["error"] == "TaskTimeout: task exceeded its timeout of 1s"
    again = run_and_wait(rt, "timing_out", {"seconds": 0.1})
    assert again["state"] == "succeeded"


def test_a_task_ignoring_its_timeout_is_killed_at_the_hard_limit(rt):
    started = time.monotonic()
    run = run_and_wait(rt, "ignoring_timeout", {"seconds": 60})
    assert time.monotonic() - started < 20
    assert run["state"] == "failed"
    assert run["tasks"][0]["error"] == ("TaskTimeout: task exceeded its timeout of 1s and "
                                        "was killed")
    assert run_and_wait(rt, "diamond")["state"] == "succeeded"    # the pool recovered


def test_every_trigger_rule_with_one_succeeded_and_one_failed_parent(rt):
    got = states(run_and_wait(rt, "rules"))
    assert {k: v for k, v in got.items() if k.startswith("after_")} == {
        "after_all_success": "upstream_failed", "after_all_done": "succeeded",
        "after_all_failed": "skipped", "after_one_success": "succeeded",
        "after_one_failed": "succeeded", "after_none_failed": "upstream_failed",
        "after_none_failed_min_one_success": "upstream_failed", "after_always": "succeeded"}


@pytest.mark.parametrize("value, taken, skipped", [(50, "big_path", "small_path"),
                                                   (5, "small_path", "big_path")])
def test_a_branch_follows_one_path_and_skips_the_other(rt, value, taken, skipped):
    run = run_and_wait(rt, "branching", {"value": value})
    got = states(run)
    assert got[taken] == "succeeded" and got[skipped] == "skipped"
    assert got["merge_paths"] == "succeeded" and run["state"] == "succeeded"
    assert got["slow"] == got["const"] == ("succeeded" if taken == "big_path" else "skipped")
    with rt.store.read() as conn:
        assert read.results(conn, run["run_id"], ["merge_paths"])["merge_paths"] == [
            f"{taken.split('_')[0]} {value}"]


def test_a_fixed_run_resumes_with_qflow_retry_without_rerunning_what_succeeded(
        rt, cluster, tmp_path):
    counter, flag = str(tmp_path / "upstream"), str(tmp_path / "fixed")
    run = run_and_wait(rt, "fixable", {"upstream_counter": counter, "flag": flag})
    assert run["state"] == "failed"
    assert states(run) == {"counted": "succeeded", "needs_fix": "failed",
                           "add": "upstream_failed"}
    open(flag, "w").close()                                      # the fix
    out = subprocess.run(["qflow", "retry", run["run_id"], "--wait"], env=cluster.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    with rt.store.read() as conn:
        after = read.get_run(conn, run["run_id"])
        assert read.results(conn, run["run_id"], ["add"]) == {"add": 3}
    assert after["state"] == "succeeded"
    assert open(counter).read() == "x"                          # upstream ran once in all
    assert {t["node"]: t["attempts"] for t in after["tasks"]} == {
        "counted": 1, "needs_fix": 2, "add": 1}
    again = subprocess.run(["qflow", "retry", run["run_id"]], env=cluster.env,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "only a failed or canceled run can be retried" in \
        again.stderr


def test_cancel_terminates_the_running_task_and_cancels_the_run(rt, cluster, tmp_path):
    pidfile = tmp_path / "pid"
    run_id = rt.engine.trigger("cancelable", {"pidfile": str(pidfile)})
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    out = subprocess.run(["qflow", "cancel", run_id], env=cluster.env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"run {run_id} canceled" in out.stdout
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the task's process was not terminated"
        time.sleep(0.1)
    with rt.store.read() as conn:
        run = read.get_run(conn, run_id)
    assert run["state"] == "canceled"
    assert states(run) == {"long_task": "canceled", "const": "canceled"}
    twice = subprocess.run(["qflow", "cancel", run_id], env=cluster.env, capture_output=True,
                           text=True)
    assert twice.returncode == 2 and "already ended (canceled)" in twice.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:            # a zombie is as good as gone
        return fh.read().split()[2] != "Z"


def test_fail_fast_cancels_what_has_not_started(rt):
    run = run_and_wait(rt, "fast_failing")
    got = states(run)
    assert run["state"] == "failed"
    assert got["boom"] == "failed" and got["const"] == "canceled"
    assert got["const__1"] == "canceled"
