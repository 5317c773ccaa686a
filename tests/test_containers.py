"""Container tasks on real Podman, real workers, Redis and PostgreSQL (tests/container_flows.py).

The images are built here from local files (no registry is needed): a static busybox for
command tasks, and an empty root that mounts the host's Python and this repository for a
Python task with ``isolation="container"``.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import container_flows as flows
import pytest
import servers
from conftest import (
    ROOT,
    _missing,
    attempt_rows,
    qflow_env,
    run_id_in,
    start_cluster,
    wait_for,
)

from qflow.errors import Fail
from qflow.store import read
from qflow.worker import container, runtime_cli
from qflow.worker.runtime_cli import ContainerUnavailable

APP = str(ROOT / "tests" / "container_flows.py")
BUSYBOX_APPLETS = ("sh", "echo", "printf", "sleep", "ls", "cat", "true", "touch", "seq")


# -- images and clusters ----------------------------------------------------------------
def _podman_ready() -> None:
    if shutil.which("podman") is None:
        _missing(servers.ServerMissing("Podman is not installed: apt-get install podman "
                                       "runc busybox-static (see .ci/run)"))
    done = subprocess.run(["podman", "info"], capture_output=True, text=True)
    if done.returncode != 0:
        _missing(servers.ServerMissing(f"podman does not work here: {done.stderr.strip()}"))


def _import(name: str, members: dict[str, bytes | str | None], env_path: str) -> None:
    """``podman import`` a root filesystem: file -> bytes, symlink -> str, dir -> None."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for path, content in members.items():
            info = tarfile.TarInfo(path)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if path == "tmp" else 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    subprocess.run(["podman", "import", "-q", "-c", f"ENV PATH={env_path}", "-", name],
                   input=data.getvalue(), check=True, capture_output=True)


@pytest.fixture(scope="session")
def images():
    """The two test images, built from this host's files."""
    _podman_ready()
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        _missing(servers.ServerMissing("busybox is missing: apt-get install busybox-static"))
    dirs = {d: None for d in ("tmp", "etc", "proc", "sys", "dev", "run", "root")}
    _import(flows.BUSYBOX, {**dirs, "bin": None, "bin/busybox": busybox.read_bytes(),
                            **{f"bin/{a}": "busybox" for a in BUSYBOX_APPLETS}}, "/bin")
    links = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}
    path = ":".join(dict.fromkeys([f"{sys.prefix}/bin", f"{sys.base_prefix}/bin",
                                   "/usr/local/bin", "/usr/bin", "/bin"]))
    _import(flows.PYTHON, {**dirs, "usr": None, **links}, path)
    yield


def _cluster(redis_url: str, pg_server_url: str, folder: Path, db: int, workers: int, **env):
    return start_cluster(redis_url.rsplit("/", 1)[0] + f"/{db}", pg_server_url, folder,
                         workers, app=APP, QFLOW_CONTAINER_RUNTIME="podman",
                         QFLOW_HEARTBEAT_INTERVAL="1", **env)


@pytest.fixture(scope="module")
def boxed(images, redis_url, pg_server_url, tmp_path_factory):
    """Two prefork workers (-c 2) serving tests/container_flows.py."""
    c = _cluster(redis_url, pg_server_url, tmp_path_factory.mktemp("boxed"), 11, 2)
    yield c
    c.stop()


def _qflow(c, *args: str) -> str:
    done = subprocess.run(["qflow", *args], env=c.env, capture_output=True, text=True,
                          timeout=60)
    return done.stdout + done.stderr


def _containers(run_id: str, attempt: int | None = None) -> list[str]:
    filters = ["--filter", f"label=qflow.run={run_id}"]
    if attempt is not None:
        filters += ["--filter", f"label=qflow.attempt={attempt}"]
    done = subprocess.run(["podman", "ps", "-a", "-q", *filters], capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def _task(rt, run_id: str, node: str) -> dict:
    with rt.store.read() as conn:
        return {t["node"]: t for t in read.get_run(conn, run_id)["tasks"]}[node]


def _result(rt, run_id: str, node: str):
    with rt.store.read() as conn:
        return read.results(conn, run_id, [node])[node]


# -- command tasks ----------------------------------------------------------------------
def test_a_container_task_s_output_shows_in_qflow_logs_while_it_runs(boxed):
    rt = boxed.runtime()
    run_id = rt.engine.trigger("box_ticking", {"ticks": 12})          # 24 s
    seen = wait_for(lambda: (lambda out: out if "tick 2" in out else None)(
        _qflow(boxed, "logs", run_id, "ticker")), 30, "tick 2 in qflow logs")
    assert "tick 12" not in seen and " running " in seen         # while it runs
    assert _task(rt, run_id, "ticker")["state"] == "running"
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    assert _result(rt, run_id, "ticker") == {"ticks": 12}        # the last JSON line
    assert _result(rt, run_id, "double_ticks") == 24             # handed to a Python child
    final = _qflow(boxed, "logs", run_id, "ticker")
    assert "tick 12" in final and "succeeded" in final and final.count("\ntick 1\n") == 1
    assert _containers(run_id) == []


def test_a_parameter_with_shell_syntax_reaches_the_command_as_one_argument(boxed):
    rt = boxed.runtime()
    value = "x; touch /tmp/pwned"
    run_id = rt.engine.trigger("box_echoing", {"value": value})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    # result.json (written by the command) wins over stdout; /tmp holds only its own file.
    assert _result(rt, run_id, "show_arg") == {"arg": value, "tmp": "seen"}
    assert "argc=1" in _qflow(boxed, "logs", run_id, "show_arg")


def test_a_non_zero_exit_fails_with_the_code_and_stderr_and_is_retried(boxed):
    rt = boxed.runtime()
    run_id = rt.engine.trigger("box_failing", {})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "failed"
    task = _task(rt, run_id, "exit_three")
    assert task["attempts"] == 2                                  # retries=1
    assert task["error"] == "ContainerFailed: container exited with code 3: something broke"
    logs = _qflow(boxed, "logs", run_id, "exit_three")
    assert logs.count("\ntrying\n") == 2 and "something broke" in logs


def test_a_missing_image_fails_at_once_with_one_line_and_is_not_retried(boxed):
    rt = boxed.runtime()
    run_id = rt.engine.trigger("box_imageless", {})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "failed"
    task = _task(rt, run_id, "no_image")
    assert task["attempts"] == 1                                  # despite retries=3
    assert task["error"].startswith(
        "ContainerUnavailable: cannot create a container from "
        "'localhost/qflow-test-no-such-image:1' with podman: ")
    assert "image not known" in task["error"] and "\n" not in task["error"]


def test_a_timeout_stops_and_removes_the_container(boxed):
    rt = boxed.runtime()
    started = time.monotonic()
    run_id = rt.engine.trigger("box_overrunning", {"seconds": 300})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "failed"
    assert time.monotonic() - started < 30
    assert "timeout of 3s" in _task(rt, run_id, "sleeper")["error"]
    assert _containers(run_id) == []


def test_cancel_stops_and_removes_the_container(boxed):
    rt = boxed.runtime()
    run_id = rt.engine.trigger("box_long_running", {"seconds": 300})
    wait_for(lambda: "started" in _qflow(boxed, "logs", run_id, "long_runner"), 30,
           "the container printed 'started'")
    assert len(_containers(run_id)) == 1
    _qflow(boxed, "cancel", run_id)
    wait_for(lambda: _containers(run_id) == [], 20, "the container is removed")
    assert rt.engine.wait(run_id, timeout=30)["state"] == "canceled"


# -- a Python task in a container ----------------------------------------------------------
def test_a_python_task_in_a_container_gets_its_inputs_and_no_credentials(boxed):
    rt = boxed.runtime()
    run_id = rt.engine.trigger("box_adding", {"a": 2, "b": 3})
    assert rt.engine.wait(run_id, timeout=90)["state"] == "succeeded", \
        _qflow(boxed, "logs", run_id, "add_inside")
    value = _result(rt, run_id, "add_inside")
    assert value["sum"] == 5 and value["node"] == "add_inside"
    assert _result(rt, run_id, "report_sum") == "sum=5"
    env = value["env"]
    assert env.get("container") == "podman" and env["GREETING"] == "hi"   # in the image
    assert not [k for k in env if k.startswith("QFLOW_")]
    secrets = (boxed.database_url, boxed.broker_url, boxed.database_url.split("@")[0])
    assert not [v for v in env.values() for s in secrets if s in v]
    assert "adding 2 and 3 in the container" in _qflow(boxed, "logs", run_id, "add_inside")
    assert _containers(run_id) == []


# -- a worker killed under a container task -------------------------------------------------
def test_a_killed_worker_s_container_is_stopped_and_the_task_reruns_elsewhere(
        images, redis_url, pg_server_url, tmp_path):
    lost_timeout = 6
    c = _cluster(redis_url, pg_server_url, tmp_path, 12, 0,
                 QFLOW_WORKER_LOST_TIMEOUT=str(lost_timeout))
    try:
        c.start_worker("w1", "-c", "1")
        c.wait_ready()
        rt = c.runtime()
        run_id = rt.engine.trigger("box_long_running", {"seconds": 20})
        wait_for(lambda: _containers(run_id, attempt=1), 30, "attempt 1's container runs")
        c.start_worker("w2", "-c", "1")             # idle: w1 holds the only task
        c.wait_ready()
        c.signal_worker("w1", 9)
        killed = time.monotonic()
        wait_for(lambda: _containers(run_id, attempt=1) == [], lost_timeout + 20,
               "attempt 1's container is stopped")
        stopped_after = time.monotonic() - killed
        # Found by w2's sweep (every second) once w1 is silent for worker_lost_timeout,
        # then stopped: SIGTERM, and SIGKILL after 3 s (sh as PID 1 ignores SIGTERM).
        assert stopped_after < lost_timeout + 8, stopped_after
        assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
        task = _task(rt, run_id, "long_runner")
        assert task["attempts"] == 2 and task["worker"].startswith("w2@")
        first = attempt_rows(rt, run_id, "long_runner")[0]
        assert first.error_type == "WorkerLost"
        assert _result(rt, run_id, "long_runner") == {"done": 1}
        assert json.loads(_qflow(c, "status", run_id, "--json"))["state"] == "succeeded"
    finally:
        c.stop()


# -- the example's containerised step ---------------------------------------------------------
def test_the_daily_report_example_fingerprints_its_report_in_a_container(images, tmp_path):
    from qflow.config import Config
    from qflow.runtime import Runtime

    # The example names busybox from Docker Hub; the local test image stands in for it.
    subprocess.run(["podman", "tag", flows.BUSYBOX, "docker.io/library/busybox:1.36"],
                   check=True)
    db = f"sqlite:///{tmp_path}/qflow.db"
    done = subprocess.run(
        ["qflow", "-A", str(ROOT / "examples" / "daily_report.py"), "run", "daily_report",
         "-p", "fingerprint=true"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=qflow_env(QFLOW_DATABASE_URL=db, QFLOW_CONTAINER_RUNTIME="podman"))
    assert done.returncode == 0, done.stdout + done.stderr
    rt = Runtime(Config(database_url=db))
    with rt.store.read() as conn:
        got = read.results(conn, run_id_in(done.stdout), ["build_report", "fingerprint_report"])
    text = json.dumps(got["build_report"])                     # what the command received
    assert got["fingerprint_report"] == {"sha256": hashlib.sha256(text.encode()).hexdigest(),
                                         "bytes": len(text.encode())}


@pytest.mark.parametrize("runtime, image, pull, cause", [
    (runtime_cli.Runtime("qflow-no-such-runtime"), flows.BUSYBOX, "missing",
     "container runtime 'qflow-no-such-runtime' not found"),
    (runtime_cli.Runtime("podman", f"tcp://127.0.0.1:{servers.free_port()}"), flows.BUSYBOX,
     "missing",
     "cannot create a container from 'localhost/qflow-test-busybox:1' with podman: "),
    (runtime_cli.Runtime("podman"), "127.0.0.1:1/qflow-test/no-such-image:1", "always",
     "cannot create a container from '127.0.0.1:1/qflow-test/no-such-image:1' with podman: "),
], ids=["runtime-not-installed", "runtime-unreachable", "pull-refused"])
def test_a_runtime_that_cannot_create_the_container_is_one_permanent_line(
        images, runtime, image, pull, cause):
    with pytest.raises(ContainerUnavailable) as failed:
        container.run(runtime, container.Spec(image, pull=pull), ["true"], {"qflow.run": "x"},
                      timeout=60)
    message = str(failed.value)
    assert message.startswith(cause) and "\n" not in message
    assert isinstance(failed.value, Fail)                    # never retried
