"""Seeing what runs: Flower, progress, status, runs, graphs of runs and task logs."""
from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, qflow_env, run_id_in, wait_for
from servers import free_port, wait_port
from test_cli import assert_one_line_error, qflow

FLOWS = str(ROOT / "tests" / "flows.py")


def on_cluster(cluster, *args: str, cwd: Path, timeout: float = 60, **env: str):
    return qflow(*args, cwd=cwd, env={**cluster.env, **env}, timeout=timeout)


def status_json(run_id: str, cwd: Path, env: dict | None = None) -> dict:
    out = qflow("status", run_id, "--json", cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


# -- Flower ---------------------------------------------------------------------------------
@pytest.fixture
def flower(cluster, tmp_path):
    """`qflow flower` on a free port, with basic auth from the config; its base URL."""
    port = free_port()
    log = open(tmp_path / "flower.log", "w")
    proc = subprocess.Popen(["qflow", "flower", f"--port={port}", "--address=127.0.0.1"],
                            env={**cluster.env, "QFLOW_FLOWER_BASIC_AUTH": "admin:s3cret"},
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()




def test_flower_lists_a_runs_tasks_by_workflow_and_node_with_the_run_id(cluster, flower,
                                                                        tmp_path):
    auth = ("admin", "s3cret")
    assert http_get(f"{flower}/api/tasks")[0] == 401
    # Flower is listening to events once it has seen a worker's heartbeat.
    wait_for(lambda: 'flower_worker_online{worker="w1@' in http_get(f"{flower}/metrics")[1],
             timeout=20,
             what="a worker heartbeat in Flower")

    out = on_cluster(cluster, "trigger", "diamond", "-p", "x=2", "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[0]
    tasks = {t["node"]: t["celery_id"] for t in status_json(run_id, tmp_path, cluster.env)
             ["tasks"]}

    def seen() -> dict | None:
        # A task a worker ran right after its parent (following a chain) is listed under
        # an id of its own, its args naming its run and node as a message's would.
        listed = json.loads(http_get(f"{flower}/api/tasks", auth)[1])
        mine = {uuid: t for uuid, t in listed.items() if run_id in (t.get("args") or "")}
        done = len(mine) == 4 and all(t["state"] == "SUCCESS" for t in mine.values())
        return mine if done else None

    listed = wait_for(seen, timeout=20, what="the run's tasks in Flower")
    assert {t["name"] for t in listed.values()} == {
        "diamond.const", "diamond.add", "diamond.add__1", "diamond.add__2"}
    for t in listed.values():
        assert f"'{t['name'].split('.', 1)[1]}'" in t["args"]
        assert t["worker"].split("@")[0] in ("w1", "w2")
    assert tasks["const"] in listed                  # a message's task: the same id

    text = on_cluster(cluster, "status", run_id, cwd=tmp_path).stdout
    assert "CELERY ID" in text and all(uuid in text for uuid in tasks.values())
    metrics = http_get(f"{flower}/metrics")[1]
    assert 'task="diamond.add__2"' in metrics and "flower_task_runtime_seconds" in metrics


# -- task logs ------------------------------------------------------------------------------
def test_logs_show_what_each_attempt_printed_and_logged_on_workers(cluster, tmp_path):
    out = on_cluster(cluster, "trigger", "chatter", "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[0]

    first = on_cluster(cluster, "logs", run_id, "chatty", "--attempt", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("== chatty  attempt 1  failed  w")
    assert first.stdout.count("chatty print 0 of attempt 1\n") == 1      # not twice
    assert "chatty print 1 of attempt 1" in first.stdout
    assert "INFO flows.chatty: chatty info of attempt 1" in first.stdout
    assert "WARNING flows.chatty: chatty warning of attempt 1" in first.stdout
    assert "-- error: ValueError: first attempt fails" in first.stdout
    assert "attempt 2" not in first.stdout and "chatty__1" not in first.stdout

    second = on_cluster(cluster, "logs", run_id, "chatty", "--attempt", "2", cwd=tmp_path)
    assert "== chatty  attempt 2  succeeded" in second.stdout
    assert "chatty print 0 of attempt 2" in second.stdout and "of attempt 1" not in second.stdout

    every = on_cluster(cluster, "logs", run_id, cwd=tmp_path).stdout
    headers = re.findall(r"^== (\S+)  attempt (\d)  (\w+)", every, re.M)
    assert sorted(headers) == [("chatty", "1", "failed"), ("chatty", "2", "succeeded"),
                               ("chatty__1", "1", "failed"), ("chatty__1", "2", "succeeded"),
                               ("join", "1", "succeeded")]
    assert "(no output)" in every                                         # join printed nothing
    rows = json.loads(on_cluster(cluster, "logs", run_id, "chatty__1", "--json",
                                 cwd=tmp_path).stdout)
    assert [(r["attempt"], r["state"]) for r in rows] == [(1, "failed"), (2, "succeeded")]
    assert "chatty__1 print 1 of attempt 2" in rows[1]["log"]

    assert_one_line_error(on_cluster(cluster, "logs", run_id, "nope", cwd=tmp_path), 2,
                          f"run {run_id} has no task 'nope'")
    assert_one_line_error(on_cluster(cluster, "logs", run_id, "chatty", "--attempt", "3",
                                     cwd=tmp_path), 2, "chatty of run")


def test_embedded_tasks_running_together_keep_their_own_logs_capped_at_log_max_bytes(
        tmp_path):
    out = qflow("-A", FLOWS, "run", "chatter", "-p", "width=4", "-p", "lines=300",
                cwd=tmp_path, env=qflow_env(QFLOW_LOG_MAX_BYTES="2000"))
    assert out.returncode == 0, out.stderr
    run_id = run_id_in(out.stdout)
    assert "chatty__2 info of attempt" not in out.stderr     # INFO captured, not shown
    assert "chatty__2 warning of attempt 2" in out.stderr     # what showed still shows
    nodes = ("chatty", "chatty__1", "chatty__2", "chatty__3")
    logs = qflow("logs", run_id, "--json", cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    rows = json.loads(logs.stdout)
    assert sorted((r["node"], r["attempt"]) for r in rows if r["node"] != "join") == [
        (node, attempt) for node in nodes for attempt in (1, 2)]
    for node in nodes:
        for row in (r for r in rows if r["node"] == node):
            log = row["log"]
            assert log.startswith(f"{node} print 0 of attempt {row['attempt']}\n")
            assert f"{node} print 299 of attempt {row['attempt']}\n" in log   # and the tail
            assert f"{node} warning of attempt {row['attempt']}" in log
            assert "bytes cut: the log is capped at log_max_bytes=2000" in log
            assert len(log.encode()) < 2000 + 200
            for other in set(nodes) - {node}:
                assert not re.search(rf"(^|\n){other} ", log), (node, other)


# -- progress, status and runs ---------------------------------------------------------------
def test_status_and_runs_print_json_with_timings_and_filters(tmp_path):
    out = qflow("-A", FLOWS, "run", "diamond", cwd=tmp_path)
    run_id = run_id_in(out.stdout)
    status = status_json(run_id, tmp_path)
    assert [t["node"] for t in status["tasks"]] == ["const", "add", "add__1", "add__2"]
    assert all(re.fullmatch(r"[0-9a-f-]{36}", t["celery_id"]) for t in status["tasks"])
    summary = status["summary"]
    assert summary["critical_path"][0] == "const" and summary["critical_path"][-1] == "add__2"
    assert len(summary["critical_path"]) == 3
    assert {s["node"] for s in summary["slowest"]} == {"const", "add", "add__1", "add__2"}
    assert summary["duration_seconds"] >= summary["critical_path_seconds"] >= 0
    text = qflow("status", run_id, cwd=tmp_path).stdout
    assert "critical path  const -> add" in text and "slowest" in text

    failed = qflow("-A", FLOWS, "run", "failing", cwd=tmp_path).stdout.split()[1]
    runs = json.loads(qflow("runs", "--json", cwd=tmp_path).stdout)
    assert [r["run_id"] for r in runs] == [failed, run_id]
    assert "tasks" not in runs[0] and runs[1]["duration_seconds"] >= 0

    def listed(*args: str) -> list[str]:
        out = qflow("runs", "--json", *args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return [r["run_id"] for r in json.loads(out.stdout)]

    assert listed("--workflow", "diamond") == [run_id]
    assert listed("--state", "failed", "--since", "1h") == [failed]
    assert listed("--until", "2000-01-01") == []
    assert_one_line_error(qflow("runs", "--since", "yesterday", cwd=tmp_path), 2,
                          "--since: 'yesterday' is neither an age like 30m")


def test_status_watch_follows_a_run_until_it_ends(cluster, tmp_path):
    import flows  # noqa: F401 - registers the workflows in this process too
    gate = tmp_path / "open"
    run_id = cluster.runtime().engine.trigger("gate", {"path": str(gate)})
    watch = subprocess.Popen(["qflow", "status", run_id, "--watch", "--interval", "0.1"],
                             cwd=tmp_path, env=cluster.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    rescue = threading.Timer(120, gate.touch)      # never hang: end the run at the latest
    rescue.start()
    seen = ""
    while not re.search(r"^  gated\s+running\s+1\s+w\d@", seen, re.M):
        line = watch.stdout.readline()               # the table, reprinted on each change
        assert line, (seen, watch.stderr.read())
        seen += line
    gate.touch()                                     # now let the run end
    rescue.cancel()
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    tables = re.split(r"\n(?=run [0-9a-f]{32}  workflow)", (seen + out).strip())  # per change
    assert tables[0].startswith(f"run {run_id}  workflow gate  ")
    assert tables[-1].startswith(f"run {run_id}  workflow gate  succeeded")
    assert "critical path  gated -> const" in tables[-1]

    failed = qflow("-A", FLOWS, "run", "failing", cwd=tmp_path).stdout.split()[1]
    out = qflow("status", failed, "--watch", "--json", cwd=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout)["state"] == "failed"


def test_graph_of_a_run_shows_each_tasks_state_in_text_dot_and_mermaid(tmp_path):
    run_id = qflow("-A", FLOWS, "run", "failing", cwd=tmp_path).stdout.split()[1]
    text = qflow("graph", run_id, cwd=tmp_path).stdout
    assert text.splitlines()[0] == "run of workflow failing (4 tasks)"
    assert re.search(r"^  failed\s+boom  <- const$", text, re.M)
    assert re.search(r"^  upstream_failed\s+add  <- boom$", text, re.M)
    dot = qflow("graph", run_id, "--format", "dot", cwd=tmp_path).stdout
    assert '"boom" [label="boom\\nfailed", fillcolor="#ef9a9a"' in dot
    mermaid = qflow("graph", run_id, "--format", "mermaid", cwd=tmp_path).stdout
    assert "classDef upstream_failed" in mermaid and '["boom<br/>failed"]' in mermaid
    assert_one_line_error(qflow("graph", "0" * 32, cwd=tmp_path), 2, "unknown run '000")


# -- the capture itself ---------------------------------------------------------------------
def test_capture_routes_each_threads_output_and_restores_the_process_afterwards():
    from qflow.worker.capture import Capture

    root = logging.getLogger()
    level, stdout = root.level, sys.stdout
    root.setLevel(logging.WARNING)
    texts: dict[int, str | None] = {}

    def work(i: int) -> None:
        with Capture(10_000) as cap:
            for k in range(20):
                print(f"thread {i} line {k}")
                logging.getLogger("t").info("thread %s record %s", i, k)
                time.sleep(0.001)
        texts[i] = cap.text

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert root.level == logging.WARNING and sys.stdout is stdout
    finally:
        root.setLevel(level)
    for i, text in texts.items():
        assert text.count(f"thread {i} line") == 20
        assert text.count(f"INFO t: thread {i} record") == 20
        assert all(f"thread {j} " not in text for j in range(4) if j != i)
    with Capture(0) as cap:
        print("nothing kept")
    assert cap.text is None


def test_capture_keeps_the_head_and_tail_of_a_long_log():
    from qflow.worker.capture import Capture

    with Capture(100) as cap:
        for k in range(1000):
            sys.stderr.write(f"é{k:04d}\n")
    head, tail = cap.text.split("[... ", 1)
    assert head.startswith("é0000\né0001\n") and cap.text.endswith("é0999\n")
    assert len(head.encode()) <= 51 and len(tail.split("...]\n", 1)[1].encode()) <= 50
    assert "bytes cut: the log is capped at log_max_bytes=100" in tail


def test_flower_settings_and_log_level_come_from_the_config():
    from qflow.broker.flower import flower_env
    from qflow.config import Config, load_config
    from qflow.errors import UserError

    assert flower_env(Config()) == {"FLOWER_MAX_TASKS": "10000",
                                    "FLOWER_PURGE_OFFLINE_WORKERS": "600"}
    assert flower_env(Config(flower_basic_auth="a:b,c:d", flower_max_tasks=50,
                             flower_purge_offline_workers=0)) == {
        "FLOWER_MAX_TASKS": "50", "FLOWER_BASIC_AUTH": "a:b,c:d"}
    with pytest.raises(UserError, match="setting 'log_level' must be a logging level"):
        load_config(env={"QFLOW_LOG_LEVEL": "loud"})
