"""The REST API, its auth and `qflow web` / `qflow flower` / `qflow result`.

Fast tests run the server in this process on SQLite with the embedded worker; the
cluster tests run `qflow web` and `qflow flower` as processes on real Redis, PostgreSQL
and `qflow worker` processes.
"""
from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import flows  # noqa: F401 - registers the workflows in this process too
import pytest
import servers
from conftest import ROOT, qflow_env, wait_for

from qflow import task, workflow
from qflow.config import Config
from qflow.runtime import Runtime
from qflow.web.app import make_app
from qflow.web.auth import WebSettings

BASIC = "Basic " + base64.b64encode(b"ada:s3cret").decode()
TOKEN = "Bearer tok-123"
PAYLOAD = "<script>alert(1)</script>"


@task
def say(text: str) -> str:
    print(text)
    return text


@workflow
def web_echo(text: str = "hello"):
    say(text)


class Api:
    """A client of one server: ``call`` returns (status, decoded body, headers)."""

    def __init__(self, base: str, auth: str | None = TOKEN):
        self.base, self.auth = base, auth

    def call(self, method: str, path: str, body=None, headers=None, auth: str | None = "",
             raw: bytes | None = None):
        head = {"Content-Type": "application/json"} if body is not None else {}
        auth = self.auth if auth == "" else auth
        if auth:
            head["Authorization"] = auth
        head.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        req = urllib.request.Request(self.base + path, data=data, headers=head, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, _decode(resp), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc), exc.headers

    def get(self, path: str, **kw):
        return self.call("GET", path, **kw)

    def post(self, path: str, body=None, **kw):
        return self.call("POST", path, {} if body is None else body, **kw)

    def wait(self, run_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, run, _ = self.get(f"/qflow/api/v1/runs/{run_id}")
            assert status == 200, run
            if run["state"] in ("succeeded", "failed", "canceled"):
                return run
            assert time.monotonic() < deadline, run
            time.sleep(0.05)


def _decode(resp):
    text = resp.read().decode()
    return json.loads(text) if "json" in (resp.headers.get("Content-Type") or "") else text


class InProcessServer:
    """make_app on a free port, served by a thread with its own event loop."""

    def __init__(self, runtime: Runtime, settings: WebSettings):
        self.port = servers.free_port()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(runtime, settings),
                                       daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _serve(self, runtime: Runtime, settings: WebSettings) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.server = make_app(runtime, settings).listen(self.port, "127.0.0.1")
        self.loop = loop
        loop.call_soon(self.ready.set)
        loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """An embedded runtime (SQLite, in-process worker) behind an in-process server."""
    db = tmp_path_factory.mktemp("web") / "qflow.db"
    rt = Runtime(Config(database_url=f"sqlite:///{db}", wait_poll_interval=0.05))
    rt.ready_store()
    with rt.embedded():
        server = InProcessServer(rt, WebSettings(users=("ada:s3cret",), tokens=("tok-123",)))
        yield rt, Api(f"http://127.0.0.1:{server.port}")
        server.stop()


@pytest.fixture
def api(local):
    return local[1]


def trigger(api: Api, workflow_name: str, params: dict | None = None) -> str:
    status, body, headers = api.post(f"/qflow/api/v1/workflows/{workflow_name}/runs",
                                     {"params": params or {}})
    assert status == 201, body
    assert headers["Location"] == f"/qflow/api/v1/runs/{body['run_id']}"
    return body["run_id"]


# -- runs, results and logs -----------------------------------------------------------
def test_a_run_triggered_over_the_api_reports_its_tasks_result_and_logs(api):
    run_id = trigger(api, "web_echo", {"text": "bonjour"})
    run = api.wait(run_id)
    assert run["state"] == "succeeded" and run["params"] == {"text": "bonjour"}
    assert [(t["node"], t["state"]) for t in run["tasks"]] == [("say", "succeeded")]
    assert run["summary"]["critical_path"] == ["say"]
    assert api.get(f"/qflow/api/v1/runs/{run_id}/tasks/say/result")[:2] == (
        200, {"node": "say", "value": "bonjour"})
    status, log, _ = api.get(f"/qflow/api/v1/runs/{run_id}/tasks/say/logs")
    assert status == 200 and log["text"] == "bonjour\n" and log["attempt"] == 1


def test_a_run_is_listed_with_the_same_fields_as_qflow_runs_json(api):
    run_id = trigger(api, "diamond", {"x": 2})
    api.wait(run_id)
    status, rows, _ = api.get("/qflow/api/v1/runs?workflow=diamond&limit=1")
    assert status == 200 and rows[0]["run_id"] == run_id
    assert {"run_id", "workflow", "state", "params", "created_at", "started_at",
            "finished_at", "tasks_total", "tasks_done", "duration_seconds"} <= set(rows[0])
    assert "tasks" not in rows[0]


def test_pages_of_runs_follow_each_other_without_gaps_or_repeats(api):
    made = [trigger(api, "web_echo", {"text": str(i)}) for i in range(5)]
    for run_id in made:
        api.wait(run_id)
    seen, path = [], "/qflow/api/v1/runs?workflow=web_echo&state=succeeded&limit=2"
    while path:
        status, rows, headers = api.get(path)
        assert status == 200 and len(rows) <= 2
        seen += [r["run_id"] for r in rows]
        link = headers.get("Link")
        path = link[1:link.index(">")] if link else None
    assert seen[:5] == made[::-1]
    assert len(seen) == len(set(seen))


def test_a_maps_run_json_times_its_tasks_from_the_edges_between_tasks_that_ran(db_url):
    """The run JSON reads only the edges into tasks that started and ended; its critical
    path and slowest tasks are those the run's whole graph gives."""
    import datetime as dt

    import sqlalchemy as sa

    from qflow.cli import progress, timing
    from qflow.store import Store, observe
    from qflow.store.migrate import upgrade
    from qflow.store.models import edges, runs, tasks
    store = Store(db_url)
    upgrade(store)
    t0, run_id = dt.datetime(2026, 11, 1, 9), "ab" * 16

    def at(seconds):
        return None if seconds is None else t0 + dt.timedelta(seconds=seconds)
    # node: (state, started, finished); m is a map of two that never runs itself, c skipped
    shape = {"a": ("succeeded", 0, 1), "b": ("succeeded", 1, 3), "c": ("skipped", None, 3),
             "m": ("succeeded", None, 6), "m[0]": ("succeeded", 3, 5),
             "m[1]": ("succeeded", 3, 6), "d": ("succeeded", 6, 7)}
    links = [("a", "b"), ("b", "c"), ("b", "m"), ("m[0]", "m"), ("m[1]", "m"),
             ("b", "m[1]"), ("c", "d"), ("m[1]", "d")]
    with store.write() as conn:
        conn.execute(sa.insert(runs).values(id=run_id, workflow="w", state="succeeded",
                                            params="{}", created_at=t0, started_at=t0,
                                            finished_at=at(7)))
        conn.execute(sa.insert(tasks), [dict(run_id=run_id, node=n, task="m.f", state=st,
                                              started_at=at(s), finished_at=at(f), attempts=1)
                                         for n, (st, s, f) in shape.items()])
        conn.execute(sa.insert(edges), [dict(run_id=run_id, parent=p, child=c)
                                        for p, c in links])
    with store.read() as conn:
        timed, every = observe.timed_edges(conn, run_id), observe.run_edges(conn, run_id)
    run, summary = progress.snapshot(store, run_id)
    store.dispose()
    assert sorted(timed) == [("a", "b"), ("b", "m[1]"), ("c", "d"), ("m[1]", "d")]
    assert summary == timing.summary(run, every)
    assert summary["critical_path"] == ["a", "b", "m[1]", "d"]
    assert summary["critical_path_seconds"] == 7.0 and summary["duration_seconds"] == 7.0
    assert summary["slowest"] == [{"node": "m[1]", "seconds": 3.0},
                                  {"node": "b", "seconds": 2.0},      # ties: task order
                                  {"node": "m[0]", "seconds": 2.0},
                                  {"node": "a", "seconds": 1.0}, {"node": "d", "seconds": 1.0}]
    assert run["tasks"][0]["started_at"] == "2026-11-01T09:00:00+00:00"
    assert run["tasks"][2]["started_at"] is None and "late" not in run["tasks"][0]


def test_bad_filters_are_400_with_one_line(api):
    for query, word in (("state=sleeping", "unknown state"), ("limit=0", "limit"),
                        ("since=yesterday", "since"), ("before=" + "f" * 32, "unknown run")):
        status, body, _ = api.get("/qflow/api/v1/runs?" + query)
        assert status == 400 and word in body["error"] and "\n" not in body["error"]


def test_unknown_things_are_404(api):
    run_id = trigger(api, "web_echo")
    api.wait(run_id)
    assert api.get("/qflow/api/v1/runs/" + "0" * 32)[0] == 404
    assert api.get(f"/qflow/api/v1/runs/{run_id}/tasks/nope/result")[0] == 404
    assert api.get(f"/qflow/api/v1/runs/{run_id}/tasks/say/logs?attempt=7")[0] == 404
    assert api.post("/qflow/api/v1/workflows/nope/runs", {"params": {}})[:2] == (
        404, {"error": "unknown workflow 'nope'"})
    assert api.post(f"/qflow/api/v1/runs/{run_id}/retry", {"from": "nope"})[0] == 404
    assert api.post("/qflow/api/v1/assets/sales/touch")[:2] == (
        404, {"error": "unknown asset 'sales'"})


def test_a_failed_task_has_no_result_409_and_its_error_in_the_logs(api):
    run = api.wait(trigger(api, "failing"))
    assert run["state"] == "failed"
    status, body, _ = api.get(f"/qflow/api/v1/runs/{run['run_id']}/tasks/boom/result")
    assert status == 409 and "has no result" in body["error"]
    log = api.get(f"/qflow/api/v1/runs/{run['run_id']}/tasks/boom/logs")[1]
    assert log["state"] == "failed" and "ValueError" in log["error"]


def test_bad_params_are_400_and_a_script_payload_comes_back_escaped(api):
    status, body, _ = api.post("/qflow/api/v1/workflows/diamond/runs",
                               {"params": {"x": PAYLOAD}})
    assert status == 400 and PAYLOAD in body["error"]
    req = urllib.request.Request(api.base + "/qflow/api/v1/workflows/diamond/runs",
                                 data=json.dumps({"params": {"x": PAYLOAD}}).encode(),
                                 headers={"Authorization": TOKEN,
                                          "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req)
    text = caught.value.read().decode()
    assert "<" not in text and "\\u003cscript\\u003e" in text
    assert api.post("/qflow/api/v1/workflows/diamond/runs", {"params": [1]})[0] == 400
    assert api.call("POST", "/qflow/api/v1/workflows/diamond/runs",
                    raw=b"{not json", headers={"Content-Type": "application/json"})[0] == 400


def test_a_script_payload_in_a_param_and_a_log_is_escaped_in_every_answer(api):
    run_id = trigger(api, "web_echo", {"text": PAYLOAD})
    api.wait(run_id)
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/tasks/say/logs",
                 f"/runs/{run_id}/tasks/say/result", "/runs?workflow=web_echo"):
        req = urllib.request.Request(api.base + "/qflow/api/v1" + path,
                                     headers={"Authorization": TOKEN})
        text = urllib.request.urlopen(req).read().decode()
        assert "<script>" not in text and "\\u003cscript\\u003e" in text
        assert PAYLOAD in json.dumps(json.loads(text))


# -- steering -------------------------------------------------------------------------
def test_retry_from_a_node_reruns_it_and_what_follows(api):
    run = api.wait(trigger(api, "diamond", {"x": 1}))
    status, body, _ = api.post(f"/qflow/api/v1/runs/{run['run_id']}/retry")
    assert status == 409 and "only a failed or canceled run" in body["error"]
    status, body, _ = api.post(f"/qflow/api/v1/runs/{run['run_id']}/retry",
                               {"from": "add__1"})
    assert status == 200 and body["released"] == 1
    again = api.wait(run["run_id"])
    attempts = {t["node"]: t["attempts"] for t in again["tasks"]}
    assert again["state"] == "succeeded"
    assert attempts["add__1"] == attempts["add__2"] == 2 and attempts["const"] == 1


def test_cancelling_an_ended_run_is_409(api):
    run = api.wait(trigger(api, "web_echo"))
    status, body, _ = api.post(f"/qflow/api/v1/runs/{run['run_id']}/cancel")
    assert status == 409 and "already ended" in body["error"]


def test_pause_and_unpause_a_workflow(api, local):
    path = "/qflow/api/v1/workflows/web_echo/"
    assert api.post(path + "pause")[:2] == (
        200, {"workflow": "web_echo", "paused": True, "changed": True})
    assert api.post(path + "pause")[1]["changed"] is False
    assert api.post(path + "unpause")[1] == {"workflow": "web_echo", "paused": False,
                                             "changed": True}
    assert api.post("/qflow/api/v1/workflows/nope/pause")[0] == 404


def test_the_workflows_list_is_that_of_qflow_workflows_json(api):
    status, rows, _ = api.get("/qflow/api/v1/workflows")
    echo = next(w for w in rows if w["name"] == "web_echo")
    assert status == 200
    assert echo["params"] == {"text": "str = 'hello'"} and echo["tasks"] == ["say"]


# -- auth and cross-site requests -----------------------------------------------------
def test_missing_or_wrong_credentials_get_401_and_nothing_else(api):
    wrong = "Basic " + base64.b64encode(b"ada:guess").decode()
    for auth in (None, wrong, "Bearer nope", "Basic !!!"):
        for path in ("/qflow/api/v1/workflows", "/qflow/metrics", "/qflow/api/v1/runs"):
            status, body, headers = api.get(path, auth=auth)
            assert (status, body) == (401, {"error": "authentication required"})
            assert 'Basic realm="qflow"' in headers.get_all("WWW-Authenticate")
    assert api.post("/qflow/api/v1/workflows/web_echo/runs", auth=None)[0] == 401


def test_basic_auth_and_bearer_tokens_both_open_the_api_but_tokens_not_the_pages(api):
    assert api.get("/qflow/api/v1/workflows", auth=BASIC)[0] == 200
    assert api.get("/qflow/api/v1/workflows", auth=TOKEN)[0] == 200
    assert api.get("/qflow/no-such-page", auth=BASIC)[0] == 404
    assert api.get("/qflow/no-such-page", auth=TOKEN)[0] == 401


def test_cross_site_writes_are_refused(api):
    path = "/qflow/api/v1/workflows/web_echo/runs"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert api.call("POST", path, raw=b"params=x", headers=form, auth=BASIC)[0] == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert api.post(path, headers=cross, auth=BASIC)[0] == 403
    assert api.post(path, headers={"Origin": "https://evil.example"}, auth=BASIC)[0] == 403
    token = "0123456789abcdef"          # Tornado's unmasked xsrf token form, for a page
    page = {**form, "Cookie": f"_xsrf={token}", "X-XSRFToken": token}
    accepted = [api.post(path, auth=BASIC),                               # JSON from curl
                api.call("POST", path, raw=b"", headers=form, auth=TOKEN),
                api.call("POST", path, raw=b"", headers=page, auth=BASIC)]
    assert [status for status, *_ in accepted] == [201, 201, 201]
    for _, body, _ in accepted:
        api.wait(body["run_id"])


# -- metrics and the OpenAPI document -------------------------------------------------
def _metric(text: str, name: str, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or line == f"{name} " + line.split()[-1]:
            return float(line.split()[-1])
    return None


def test_metrics_count_runs_and_task_durations_in_prometheus_format(api):
    status, before, headers = api.get("/qflow/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    done = _metric(before, "qflow_task_duration_seconds_count", state="succeeded") or 0
    runs = _metric(before, "qflow_runs", workflow="diamond", state="succeeded") or 0
    api.wait(trigger(api, "diamond", {"x": 5}))
    after = api.get("/qflow/metrics")[1]
    assert _metric(after, "qflow_runs", workflow="diamond", state="succeeded") == runs + 1
    assert _metric(after, "qflow_task_duration_seconds_count", state="succeeded") == done + 4
    assert _metric(after, "qflow_task_duration_seconds_bucket", state="succeeded",
                   le="+Inf") == done + 4
    assert "# TYPE qflow_task_duration_seconds histogram" in after
    assert "# TYPE qflow_worker_last_heartbeat_timestamp_seconds gauge" in after


def test_json_answers_may_not_be_stored_and_carry_no_etag(api):
    status, _, headers = api.get("/qflow/api/v1/workflows")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers.get("Etag") is None          # nothing revalidates what is not stored


def test_the_openapi_document_describes_every_route(api):
    from qflow.web import api as api_module

    status, doc, _ = api.get("/qflow/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    routes = [pattern for pattern, *_ in api_module.handlers(None, WebSettings())
              if pattern.startswith(api_module.PREFIX) and "openapi" not in pattern]
    documented = [p.replace("{run_id}", "([^/]+)").replace("{node}", "([^/]+)")
                  .replace("{name}", "([^/]+)") for p in doc["paths"]]
    for pattern in routes:
        route = pattern[len(api_module.PREFIX):]
        expanded = [route.replace("(pause|unpause)", w) for w in ("pause", "unpause")] \
            if "(pause|unpause)" in route else [route]
        assert set(expanded) <= set(documented), route


# -- the command line -------------------------------------------------------------------
def _qflow(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run(["qflow", *args], env=env or qflow_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_qflow_web_refuses_another_address_without_auth(tmp_path):
    out = _qflow("web", "--address", "0.0.0.0",
                 env=qflow_env(QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/q.db"))
    assert out.returncode == 2
    assert out.stderr.startswith("qflow: error: refusing to listen on 0.0.0.0 without "
                                 "authentication") and "Traceback" not in out.stderr


def _start(args: list[str], env: dict, folder: Path, port: int) -> subprocess.Popen:
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        servers.wait_port(port, timeout=30)
    except TimeoutError:
        proc.kill()
        raise AssertionError((folder / "server.log").read_text()) from None
    return proc


def test_qflow_web_without_auth_listens_on_127_0_0_1_and_says_so(tmp_path):
    port = servers.free_port()
    env = qflow_env(QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/q.db",
                    QFLOW_APP=str(ROOT / "tests" / "flows.py"))
    proc = _start(["qflow", "web", "--port", str(port)], env, tmp_path, port)
    try:
        status, rows, _ = Api(f"http://127.0.0.1:{port}", None).get("/qflow/api/v1/workflows")
        assert status == 200 and "diamond" in {w["name"] for w in rows}
    finally:
        proc.terminate()
        proc.wait(10)
    assert "listening on 127.0.0.1 only" in (tmp_path / "server.log").read_text()


def test_qflow_result_prints_a_value_and_exits_2_without_one(local, tmp_path):
    rt, api = local
    run = api.wait(trigger(api, "failing"))
    env = qflow_env(QFLOW_DATABASE_URL=rt.config.database_url)
    out = _qflow("result", run["run_id"], "const", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"run_id": run["run_id"], "node": "const", "value": 1}
    assert _qflow("result", run["run_id"], "const", env=env).stdout == "1\n"
    for args, word in (((run["run_id"], "boom"), "has no result"),
                       ((run["run_id"], "nope"), "has no task"), (("f" * 32,), "unknown run")):
        out = _qflow("result", *args, env=env)
        assert out.returncode == 2 and word in out.stderr and "Traceback" not in out.stderr


# -- on a cluster: real Redis, PostgreSQL and worker processes --------------------------
@pytest.fixture(scope="module")
def cluster_api(cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web-cluster")
    port = servers.free_port()
    env = {**cluster.env, "QFLOW_WEB_TOKENS": "tok-123", "QFLOW_WEB_AUTH": "ada:s3cret"}
    proc = _start(["qflow", "web", "--port", str(port), "--address", "0.0.0.0"], env,
                  folder, port)
    yield Api(f"http://127.0.0.1:{port}")
    proc.terminate()
    proc.wait(10)


def test_on_a_cluster_trigger_wait_status_result_and_logs(cluster_api):
    run = cluster_api.wait(trigger(cluster_api, "diamond", {"x": 2}))
    assert run["state"] == "succeeded"
    assert {t["worker"].split("@")[0] for t in run["tasks"]} <= {"w1", "w2"}
    assert cluster_api.get(f"/qflow/api/v1/runs/{run['run_id']}/tasks/add__2/result")[1] \
        == {"node": "add__2", "value": 2 + 10 + 2 + 20}
    failed = cluster_api.wait(trigger(cluster_api, "failing"))
    log = cluster_api.get(f"/qflow/api/v1/runs/{failed['run_id']}/tasks/boom/logs")[1]
    assert failed["state"] == "failed" and "ValueError" in log["error"]
    assert cluster_api.get(f"/qflow/api/v1/runs/{failed['run_id']}/tasks/add/result")[0] \
        == 409


def test_on_a_cluster_retry_from_a_node_after_a_fix(cluster_api, tmp_path):
    counter, flag = str(tmp_path / "upstream"), str(tmp_path / "fixed")
    run = cluster_api.wait(trigger(cluster_api, "fixable",
                                   {"upstream_counter": counter, "flag": flag}))
    assert run["state"] == "failed"
    open(flag, "w").close()
    status, body, _ = cluster_api.post(f"/qflow/api/v1/runs/{run['run_id']}/retry",
                                       {"from": "needs_fix"})
    assert (status, body["released"]) == (200, 1)
    again = cluster_api.wait(run["run_id"])
    assert again["state"] == "succeeded" and open(counter).read() == "x"
    assert cluster_api.get(f"/qflow/api/v1/runs/{run['run_id']}/tasks/add/result")[1][
        "value"] == 3


def test_on_a_cluster_cancel_stops_a_long_run(cluster_api, tmp_path):
    pidfile = tmp_path / "pid"
    run_id = trigger(cluster_api, "cancelable", {"pidfile": str(pidfile)})
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, body, _ = cluster_api.post(f"/qflow/api/v1/runs/{run_id}/cancel")
    assert status == 200 and body["state"] in ("running", "canceled")
    assert cluster_api.wait(run_id, timeout=30)["state"] == "canceled"
    assert cluster_api.post(f"/qflow/api/v1/runs/{run_id}/cancel")[0] == 409


def test_on_a_cluster_pause_and_401_for_a_wrong_token(cluster_api):
    assert cluster_api.post("/qflow/api/v1/workflows/diamond/pause")[1]["paused"] is True
    assert cluster_api.post("/qflow/api/v1/workflows/diamond/unpause")[0] == 200
    assert cluster_api.get("/qflow/api/v1/workflows", auth="Bearer wrong")[0] == 401
    assert cluster_api.get("/qflow/api/v1/workflows", auth=BASIC)[0] == 200


def test_qflow_flower_serves_the_api_behind_flowers_login(cluster, tmp_path):
    port = servers.free_port()
    env = {**cluster.env, "QFLOW_WEB_AUTH": "ada:s3cret"}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    proc = _start(["qflow", "flower", f"--port={port}", "--address=0.0.0.0"], env, tmp_path,
                  port)
    try:
        api = Api(f"http://127.0.0.1:{port}", BASIC)
        assert api.get("/qflow/api/v1/workflows", auth=None)[0] == 401
        status, rows, _ = api.get("/qflow/api/v1/workflows")
        assert status == 200 and "diamond" in {w["name"] for w in rows}
        assert api.get("/workers", auth=None)[0] == 401                 # Flower's own page
        status, page, _ = api.get("/workers")
        assert status == 200 and 'href="/qflow/">Workflows</a>' in page
        assert 'href="/qflow/runs">Runs</a>' in page
        assert 'href="/qflow/assets">Assets</a>' in page
        run = api.wait(trigger(api, "diamond", {"x": 1}))
        task = next(t for t in run["tasks"] if t["node"] == "add__2")
        deadline = time.monotonic() + 20
        while (found := api.get(f"/task/{task['celery_id']}"))[0] != 200:
            assert time.monotonic() < deadline, found[:2]     # Flower gets task events
            time.sleep(0.2)
        assert f'<a href="/qflow/runs/{run["run_id"]}">' in found[1]
        # The task list: its rows (drawn in the browser from /tasks/datatable) carry the
        # run and node of a qflow task, which qflow's script on the page turns into links.
        status, page, _ = api.get("/tasks")
        assert status == 200 and '<script src="/qflow/static/flower-tasks.js">' in page
        assert api.get("/qflow/static/flower-tasks.js")[0] == 200
        def rows_of_the_run() -> dict | None:
            status, table, _ = api.get("/tasks/datatable?draw=1&start=0&length=100"
                                       "&order[0][column]=0&order[0][dir]=desc"
                                       "&columns[0][data]=received&search[value]=")
            assert status == 200
            mine = {r["qflow"]["node"]: r for r in table["data"]
                    if (r.get("qflow") or {}).get("run_id") == run["run_id"]}
            return mine if len(mine) == 4 else None

        rows = wait_for(rows_of_the_run, timeout=20, what="the run's four tasks in Flower")
        assert set(rows) == {"const", "add", "add__1", "add__2"}
        assert all(f"'{node}'" in row["args"] for node, row in rows.items())
    finally:
        proc.terminate()
        proc.wait(20)


def test_qflow_flower_refuses_another_address_without_a_login(cluster):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("FLOWER_")}
    out = _qflow("flower", "--port=1", "--address=0.0.0.0", env=env)
    assert out.returncode == 2 and "refusing to listen on 0.0.0.0" in out.stderr


def test_qflow_runs_counts_every_run_by_workflow_and_state_from_an_index(db_url):
    import datetime as dt
    import uuid

    import sqlalchemy as sa

    from qflow.store import Store
    from qflow.store import metrics as q
    from qflow.store.migrate import upgrade
    from qflow.store.models import runs
    from qflow.web.metrics import Collector

    store = Store(db_url)
    upgrade(store)
    counts = {("nightly", "succeeded"): 3, ("nightly", "failed"): 1,
              ("hourly", "running"): 2, ("hourly", "succeeded"): 1, ("hourly", "queued"): 1}
    at = dt.datetime(2026, 11, 30, 8)
    with store.write() as conn:
        conn.execute(sa.insert(runs), [
            dict(id=uuid.uuid4().hex, workflow=w, state=s, params="{}", created_at=at)
            for (w, s), n in counts.items() for _ in range(n)])
    text = Collector().scrape(store)
    assert "# TYPE qflow_runs gauge" in text
    for (w, s), n in counts.items():
        assert _metric(text, "qflow_runs", workflow=w, state=s) == n
    assert _metric(text, "qflow_runs", workflow="nightly", state="running") is None
    # Read from the index alone (PostgreSQL: when it costs less than reading the table,
    # which it does not for 8 rows; without seq scans the plan shows it can).
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN"
        else:
            explain = "EXPLAIN QUERY PLAN"
        sql = q.RUNS_BY_STATE.compile(conn)
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"{explain} {sql}"))
    assert "ix_qflow_runs_workflow_state" in plan, plan
    assert "Index Only Scan" in plan or "COVERING INDEX" in plan, plan
    store.dispose()


def test_scheduler_lag_is_how_long_the_due_run_has_waited(registry, tmp_path):
    import datetime as dt

    from qflow.store import schedules
    from qflow.web.metrics import Collector

    @task
    def tick() -> int:
        return 1

    @workflow(schedule="*/5 * * * *")
    def lagging():
        tick()

    utc = dt.timezone.utc
    rt = Runtime(Config(database_url=f"sqlite:///{tmp_path}/q.db"))
    store = rt.ready_store()
    now = dt.datetime(2026, 11, 30, 12, 7, 30, tzinfo=utc)
    store.transact(schedules.register, "lagging", dt.datetime(2026, 11, 30, 11, 0))
    text = Collector().scrape(store, now)
    assert _metric(text, "qflow_scheduler_lag_seconds", workflow="lagging") == 150.0
    rt.engine.create_run(lagging, {}, dt.datetime(2026, 11, 30, 12, 5, tzinfo=utc))
    text = Collector().scrape(store, now)
    assert _metric(text, "qflow_scheduler_lag_seconds", workflow="lagging") == 0.0
    store.transact(schedules.set_paused, "lagging", True, dt.datetime(2026, 11, 30, 12, 7))
    text = Collector().scrape(store, now + dt.timedelta(hours=1))
    assert _metric(text, "qflow_scheduler_lag_seconds", workflow="lagging") is None
