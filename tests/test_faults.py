"""Fault injection: killed, paused and lost workers, broker and DB outages, several hosts,
forged messages. Private Redis and PostgreSQL instances, so the shared ones are untouched."""
from __future__ import annotations

import functools
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import conftest
import fault_flows  # noqa: F401 - registers the workflows in this process too
import flows  # noqa: F401
import pytest
import servers
import sqlalchemy as sa
from conftest import ROOT, Cluster, _missing, attempt_rows, start_cluster

from qflow.store import read

APP = f"{ROOT / 'tests' / 'flows.py'},{ROOT / 'tests' / 'fault_flows.py'}"
LOST_TIMEOUT = 3.0
LIVENESS = dict(QFLOW_WORKER_LOST_TIMEOUT=str(LOST_TIMEOUT), QFLOW_HEARTBEAT_INTERVAL="0.5",
                QFLOW_MAX_REDELIVERIES="2", QFLOW_REQUEUE_AFTER="4")


class Faults:
    """A two-worker cluster on a private Redis that tests may restart."""

    def __init__(self, pg_server_url: str, folder: Path):
        self.redis = servers.start_redis()
        self.cluster = start_cluster(self.redis.url, pg_server_url, folder, 2, app=APP,
                                     **LIVENESS)
        self.rt = self.cluster.runtime()

    def restart_redis(self) -> None:
        port = self.redis.port
        self.redis.stop()
        self.redis = servers.start_redis(port=port)

    def stop(self) -> None:
        self.cluster.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def faults(pg_server_url, tmp_path_factory):
    f = Faults(pg_server_url, tmp_path_factory.mktemp("faults"))
    yield f
    f.stop()


# Faults are caught in the act: look often.
wait_for = functools.partial(conftest.wait_for, interval=0.05)


def pid_lines(path: Path) -> list[list[int]]:
    if not path.exists():
        return []
    return [[int(x) for x in line.split()] for line in path.read_text().splitlines() if line]


def get_run(rt, run_id: str) -> dict:
    with rt.store.read() as conn:
        return read.get_run(conn, run_id)


def start_held(faults, tmp_path, seconds: float = 3.0):
    pidfile, counter = tmp_path / "pids", tmp_path / "counter"
    run_id = faults.rt.engine.trigger("held", {"pidfile": str(pidfile),
                                               "counter": str(counter), "seconds": seconds})
    wait_for(lambda: pid_lines(pidfile), what="the task to start")
    worker = wait_for(lambda: get_run(faults.rt, run_id)["tasks"][0]["worker"])
    return run_id, pidfile, counter, worker.split("@")[0]


def restart_worker(faults, name: str) -> None:
    faults.cluster.workers[name].wait(10)
    faults.cluster.start_worker(name, "-c", "2")
    faults.cluster.wait_ready(names=[name])


def assert_doctor_clean(env: dict[str, str]) -> None:
    """`qflow doctor`, run as a user runs it once the fault is over: every unfinished
    task has a live owner or a message in flight, and nothing else is stuck."""
    out = subprocess.run(["qflow", "doctor"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout.split(":")[0]) == (0, "ok"), out.stdout + out.stderr


def test_a_killed_worker_s_task_finishes_elsewhere_and_releases_once(faults, tmp_path):
    run_id, _, counter, victim = start_held(faults, tmp_path)
    killed_at = time.monotonic()
    faults.cluster.signal_worker(victim, signal.SIGKILL)
    run = faults.rt.engine.wait(run_id, timeout=60)
    assert run["state"] == "succeeded"
    assert time.monotonic() - killed_at < LOST_TIMEOUT + 3.0 + 6.0
    rows = attempt_rows(faults.rt, run_id, "hold")
    assert [(r.number, r.state, r.error_type) for r in rows] == [
        (1, "failed", "WorkerLost"), (2, "succeeded", None)]
    assert not rows[1].worker.startswith(victim + "@")
    assert counter.read_text() == "x"                       # downstream ran once
    restart_worker(faults, victim)
    assert_doctor_clean(faults.cluster.env)


def test_a_killed_pool_process_is_a_new_attempt_and_a_task_killing_every_worker_gives_up(
        faults, tmp_path):
    run_id, pidfile, counter, _ = start_held(faults, tmp_path)
    os.kill(pid_lines(pidfile)[0][0], signal.SIGKILL)       # the pool process only
    assert faults.rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    assert [(r.number, r.error_type) for r in attempt_rows(faults.rt, run_id, "hold")] == [
        (1, "WorkerLost"), (2, None)]
    assert counter.read_text() == "x"

    run_id = faults.rt.engine.trigger("suicidal")
    run = faults.rt.engine.wait(run_id, timeout=60)
    assert run["state"] == "failed"
    task = get_run(faults.rt, run_id)["tasks"][0]
    assert task["attempts"] == 3                              # 1 + max_redeliveries
    assert "gave up after 2 redeliveries" in task["error"]
    assert_doctor_clean(faults.cluster.env)


def test_a_pool_process_killed_in_a_child_it_followed_into_is_a_new_attempt_of_that_child(
        faults, tmp_path):
    run_id = faults.rt.engine.trigger("dies_after_tick", {"marker": str(tmp_path / "died")})
    # Its worker still heartbeats: only the lost pool process tells that die_once is gone.
    assert faults.rt.engine.wait(run_id, timeout=LOST_TIMEOUT * 5)["state"] == "succeeded"
    died = attempt_rows(faults.rt, run_id, "die_once")
    assert [(r.number, r.error_type) for r in died] == [(1, "WorkerLost"), (2, None)]
    tick = attempt_rows(faults.rt, run_id, "tick")
    assert died[0].celery_id == tick[0].celery_id          # run after tick, no message
    assert_doctor_clean(faults.cluster.env)


def hold_a_retry(faults, tmp_path) -> tuple[str, str, str]:
    """A task whose retry is due in 3 s: returns the run, the worker that took the retry's
    message (Celery keeps it until it is due) and that message's id."""
    run_id = faults.rt.engine.trigger("retried_later", {"marker": str(tmp_path / "failed")})
    inspect = faults.rt.celery.control.inspect(timeout=0.5)

    def holder():
        for worker, held in (inspect.scheduled() or {}).items():
            for entry in held:
                if entry["request"]["args"][0] == run_id:
                    return worker.split("@")[0], entry["request"]["id"]
        return None
    return (run_id, *wait_for(holder, timeout=10, what="a worker to hold the retry"))


def test_a_retry_held_by_a_killed_worker_is_sent_again(faults, tmp_path):
    # The message left the broker when the worker took it: qflow sends the retry again
    # itself (requeue_after), without waiting for Redis to redeliver it.
    run_id, victim, message_id = hold_a_retry(faults, tmp_path)
    killed_at = time.monotonic()
    faults.cluster.signal_worker(victim, signal.SIGKILL)
    assert faults.rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    assert time.monotonic() - killed_at < 3.0 + 4.0 + 6.0      # due + requeue_after + slack
    rows = attempt_rows(faults.rt, run_id, "fails_once")
    assert [(r.number, r.state) for r in rows] == [(1, "failed"), (2, "succeeded")]
    assert not rows[1].worker.startswith(victim + "@") and rows[1].celery_id != message_id
    restart_worker(faults, victim)
    assert_doctor_clean(faults.cluster.env)


def test_a_retry_held_by_a_worker_stopped_warm_goes_back_to_its_queue(faults, tmp_path):
    run_id, holder, message_id = hold_a_retry(faults, tmp_path)
    faults.cluster.workers[holder].terminate()                 # warm shutdown
    assert faults.rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    rows = attempt_rows(faults.rt, run_id, "fails_once")
    assert [(r.number, r.state) for r in rows] == [(1, "failed"), (2, "succeeded")]
    assert not rows[1].worker.startswith(holder + "@")
    assert rows[1].celery_id == message_id                    # the same message, not a resend
    restart_worker(faults, holder)
    assert_doctor_clean(faults.cluster.env)


def test_a_broker_restart_mid_run_loses_nothing(faults):
    run_id = faults.rt.engine.trigger("wide", {"width": 200, "seconds": 0.02})
    wait_for(lambda: get_run(faults.rt, run_id)["tasks_done"] >= 40, what="40 tasks")
    faults.restart_redis()                                    # every queued message is gone
    run = faults.rt.engine.wait(run_id, timeout=120)
    assert run["state"] == "succeeded"
    with faults.rt.store.read() as conn:
        assert read.results(conn, run_id, ["join"])["join"] == list(range(200))
    assert_doctor_clean(faults.cluster.env)


def test_db_connections_dropped_mid_run_do_not_lose_outcomes(faults):
    run_id = faults.rt.engine.trigger("wide", {"width": 200, "seconds": 0.01})
    database = sa.engine.make_url(faults.cluster.database_url).database
    admin = sa.create_engine(faults.cluster.database_url, isolation_level="AUTOCOMMIT")
    kills = 0
    for _ in range(6):
        time.sleep(0.4)
        with admin.connect() as conn:
            kills += conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).scalar()
    admin.dispose()
    assert kills > 0
    run = faults.rt.engine.wait(run_id, timeout=120)
    assert run["state"] == "succeeded"
    with faults.rt.store.read() as conn:
        assert read.results(conn, run_id, ["join"])["join"] == list(range(200))
    assert_doctor_clean(faults.cluster.env)


def test_a_paused_worker_s_task_is_redone_elsewhere_and_its_late_report_refused(
        faults, tmp_path):
    run_id, pidfile, counter, victim = start_held(faults, tmp_path, seconds=2.0)
    faults.cluster.signal_worker(victim, signal.SIGSTOP)
    try:
        run = faults.rt.engine.wait(run_id, timeout=60)
    finally:
        faults.cluster.signal_worker(victim, signal.SIGCONT)
    assert run["state"] == "succeeded"
    log = faults.cluster.folder / f"{victim}.log"
    wait_for(lambda: "refused: no longer current" in log.read_text(), timeout=20,
             what="the stale report to be refused")
    rows = attempt_rows(faults.rt, run_id, "hold")
    assert [(r.number, r.state, r.error_type) for r in rows] == [
        (1, "failed", "WorkerLost"), (2, "succeeded", None)]
    with faults.rt.store.read() as conn:
        assert read.results(conn, run_id, ["hold"]) == {"hold": 2}
    assert counter.read_text() == "x"
    assert_doctor_clean(faults.cluster.env)


def test_a_forged_pickle_message_is_refused_and_never_executed(faults, tmp_path):
    from kombu import Connection

    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(target),))

    with Connection(faults.redis.url) as conn:
        producer = conn.Producer(serializer="pickle")
        producer.publish(Evil(), routing_key="default", exchange="",
                         headers={"task": "qflow.execute", "id": "forged-1",
                                  "shadow": "forged"})
    logs = [faults.cluster.folder / f"{w}.log" for w in faults.cluster.workers]
    wait_for(lambda: any("untrusted content" in p.read_text() for p in logs), timeout=20,
             what="a worker to refuse the message")
    assert not target.exists()
    assert pickle.dumps(Evil())          # the payload itself is a real pickle
    assert_doctor_clean(faults.cluster.env)


# -- several hosts -----------------------------------------------------------------------
HOSTS = {"qflowh1": ("10.213.1.1", "10.213.1.2"), "qflowh2": ("10.213.2.1", "10.213.2.2")}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def hosts():
    """Two network namespaces, each joined to this host by a veth pair."""
    if os.geteuid() != 0 or subprocess.run(["ip", "netns", "list"],
                                           capture_output=True).returncode != 0:
        _missing(RuntimeError("network namespaces need root and iproute2 (apt-get install "
                              "iproute2)"))
    for ns, (host_ip, ns_ip) in HOSTS.items():
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        subprocess.run(["ip", "link", "delete", f"{ns}a"], capture_output=True)
        _ip("netns", "add", ns)
        _ip("link", "add", f"{ns}a", "type", "veth", "peer", "name", f"{ns}b")
        _ip("link", "set", f"{ns}b", "netns", ns)
        _ip("addr", "add", f"{host_ip}/24", "dev", f"{ns}a")
        _ip("link", "set", f"{ns}a", "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", f"{ns}b")
        _ip("netns", "exec", ns, "ip", "link", "set", f"{ns}b", "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
    yield HOSTS
    for ns in HOSTS:
        subprocess.run(["ip", "link", "delete", f"{ns}a"], capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_workers_on_two_hosts_share_a_run(hosts, tmp_path):
    host_ips = [h for h, _ in hosts.values()]
    # Reachable from other hosts, so protected by a password (which qflow must honour).
    redis = servers.start_redis(bind=" ".join(["127.0.0.1", *host_ips]), password="s3cret")
    pg = servers.start_postgres(listen=",".join(["127.0.0.1", *host_ips]),
                                trust_net="10.213.0.0/16")
    clusters = []
    try:
        first = start_cluster(redis.url, pg.url, tmp_path, 0, app=APP)
        clusters.append(first)
        for ns, (host_ip, _) in hosts.items():
            (tmp_path / ns).mkdir()
            remote = Cluster(redis.url.replace("127.0.0.1", host_ip),
                             first.database_url.replace("127.0.0.1", host_ip), APP,
                             tmp_path / ns)
            remote.prefix = ["ip", "netns", "exec", ns]
            remote.start_worker(ns, "-c", "2")
            remote.wait_ready()
            clusters.append(remote)
        rt = first.runtime()
        run_id = rt.engine.trigger("wide", {"width": 200, "seconds": 0.01})
        assert rt.engine.wait(run_id, timeout=120)["state"] == "succeeded"
        run = get_run(rt, run_id)
        assert {t["worker"].split("@")[0] for t in run["tasks"]} == set(hosts)
        logs = "".join((tmp_path / ns / f"{ns}.log").read_text() for ns in hosts)
        assert "s3cret" not in logs
        assert_doctor_clean(first.env)
    finally:
        for c in clusters:
            c.stop()
        redis.stop()
        pg.stop()
