"""Logs at scale: with ``log_store = "results"`` what tasks print goes to the result store
(encrypted with the key), not to the results DB; `qflow logs`, the web console's log view
and pruning work as before. Real workers on a private Redis, PostgreSQL, and Podman for
the container task that prints while it runs.
"""
from __future__ import annotations

import subprocess

import log_flows  # noqa: F401 - registers the workflows here too
import pytest
import servers
from conftest import ROOT, Cluster, new_pg_database, qflow_env, wait_for
from test_containers import images  # noqa: F401 - the fixture building the test images

from qflow.config import Config
from qflow.results import crypto
from qflow.runtime import Runtime

APP = str(ROOT / "tests" / "log_flows.py")
MARKER = "marker-5f3a"


@pytest.fixture(scope="module")
def logged(pg_server_url, tmp_path_factory):
    """One `qflow worker -c 2` keeping logs in a result store, with a key."""
    redis = servers.start_redis()
    folder = tmp_path_factory.mktemp("log-store")
    (folder / "results").mkdir()
    c = Cluster(redis.url, new_pg_database(pg_server_url), APP, folder,
                QFLOW_RESULT_STORE=(folder / "results").as_uri(),
                QFLOW_ENCRYPTION_KEY=crypto.new_key(), QFLOW_LOG_STORE="results",
                QFLOW_CONTAINER_RUNTIME="podman", QFLOW_HEARTBEAT_INTERVAL="1")
    subprocess.run(["qflow", "db", "upgrade"], env=c.env, check=True, capture_output=True)
    c.start_worker("w1", "-c", "2")
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()
        redis.stop()


def runtime(c: Cluster) -> Runtime:
    return Runtime(Config(broker_url=c.broker_url, database_url=c.database_url, app=c.app,
                          result_store=c.env["QFLOW_RESULT_STORE"],
                          encryption_key=c.env["QFLOW_ENCRYPTION_KEY"],
                          log_store="results", wait_poll_interval=0.1))


def qflow(c: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qflow", *args], env=c.env, cwd=c.folder, capture_output=True,
                          text=True, timeout=60)


def logs_in_db(rt: Runtime, run_id: str, table: str = "qflow_attempts") -> list:
    """The log column of the run's rows in ``table`` (attempts, or live logs)."""
    with rt.store.read() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            f"SELECT l.log FROM {table} l JOIN qflow_tasks t ON t.id = l.task_id "
            "WHERE t.run_id = %s", (run_id,))]


def objects(c: Cluster, run_id: str) -> dict[str, bytes]:
    run = c.folder / "results" / run_id
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_logs_of_finished_attempts_come_from_the_store_encrypted_and_go_with_the_run(
        logged):
    rt = runtime(logged)
    run_id = rt.engine.trigger("log_chatter", {"word": MARKER, "lines": 3})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    assert logs_in_db(rt, run_id) == [None, None]         # two attempts, no log in the DB
    stored = objects(logged, run_id)
    assert {"chatty/1.log", "chatty/2.log"} <= set(stored)
    assert all(MARKER.encode() not in data for data in stored.values())

    shown = qflow(logged, "logs", run_id, "chatty")
    assert shown.returncode == 0, shown.stderr
    for attempt in (1, 2):
        assert f"{MARKER} line 2 of attempt {attempt}" in shown.stdout
        assert f"{MARKER} logged by attempt {attempt}" in shown.stdout
    assert f"{MARKER} failed on purpose" in shown.stdout          # the error, as before
    followed = qflow(logged, "logs", run_id, "--follow")     # an ended run: all, then stop
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.count(f"{MARKER} line 0 of attempt") == 2
    assert "-- chatty attempt 1 failed" in followed.stdout
    assert followed.stdout.rstrip().endswith("-- chatty attempt 2 succeeded")
    # What the web console's log view and its API serve.
    from qflow.client import task_log
    assert f"{MARKER} line 0 of attempt 2" in task_log(rt.store, run_id, "chatty")["text"]
    first = task_log(rt.store, run_id, "chatty", 1)["text"]
    assert "attempt 1" in first and "attempt 2" not in first

    # Without the key the CLI says the log is encrypted instead of failing.
    env = dict(logged.env, QFLOW_ENCRYPTION_KEY=crypto.new_key())
    other = subprocess.run(["qflow", "logs", run_id, "chatty"], env=env, cwd=logged.folder,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and MARKER not in other.stdout
    assert "(encrypted: this process has no key that opens it)" in other.stdout

    with rt.store.write() as conn:
        conn.exec_driver_sql("UPDATE qflow_runs SET created_at = created_at - interval "
                             "'3 days', finished_at = finished_at - interval '3 days' "
                             "WHERE id = %s", (run_id,))
    pruned = qflow(logged, "db", "prune", "--older-than", "1d")
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted 1 run(s)")
    assert not (logged.folder / "results" / run_id).exists()


def test_a_container_task_s_live_log_is_in_the_store_encrypted_while_it_runs(
        logged, images):  # noqa: F811 - the imported fixture
    rt = runtime(logged)
    run_id = rt.engine.trigger("box_ticking", {"ticks": 5})          # 10 s
    follow = subprocess.Popen(["qflow", "logs", run_id, "ticker", "--follow"],
                              env=logged.env, cwd=logged.folder, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    seen = wait_for(lambda: (lambda out: out if "tick 2" in out else None)(
        qflow(logged, "logs", run_id, "ticker").stdout), 30, "tick 2 in qflow logs")
    assert " running " in seen and "tick 5" not in seen
    assert logs_in_db(rt, run_id, "qflow_live_logs") == [None]   # the row only marks it
    live = objects(logged, run_id)["ticker/1.log"]
    assert live.startswith(crypto.MAGIC) and b"tick" not in live
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    assert logs_in_db(rt, run_id) == [None, None]                # ticker, double_ticks
    assert logs_in_db(rt, run_id, "qflow_live_logs") == []
    final = qflow(logged, "logs", run_id, "ticker").stdout
    assert "tick 5" in final and "succeeded" in final and final.count("\ntick 1\n") == 1
    assert b"tick" not in objects(logged, run_id)["ticker/1.log"]
    followed, errors = follow.communicate(timeout=60)       # it ends with the run
    assert follow.returncode == 0, errors
    ticks = [line for line in followed.splitlines() if line.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(1, 6)]         # each once, in order
    assert followed.rstrip().endswith("-- ticker attempt 1 succeeded")


def test_log_store_results_without_a_result_store_is_a_one_line_error(tmp_path):
    out = subprocess.run(["qflow", "runs"], cwd=tmp_path, capture_output=True, text=True,
                         env=qflow_env(QFLOW_LOG_STORE="results"), timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "log_store" in out.stderr and "result_store" in out.stderr
    bad = subprocess.run(["qflow", "runs"], cwd=tmp_path, capture_output=True, text=True,
                         env=qflow_env(QFLOW_LOG_STORE="s3"), timeout=60)
    assert bad.returncode == 2 and "must be db or results" in bad.stderr
