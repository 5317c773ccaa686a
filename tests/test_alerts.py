"""Alerts: callbacks and the webhook and e-mail notifiers, from real worker processes."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import flows  # noqa: F401
import pytest
from conftest import start_cluster
from servers import Mailbox, free_port

from qflow.store import read


class Webhook(HTTPServer):
    """Records each JSON POST it accepts; answers 503 to the first ``refuse`` ones."""

    def __init__(self, refuse: int = 0):
        self.received: list[dict] = []
        self.refused: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                down = len(outer.refused) < refuse
                (outer.refused if down else outer.received).append(body)
                self.send_response(503 if down else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture(scope="module")
def alert_cluster(redis_url, pg_server_url, tmp_path_factory):
    hook, mailbox = Webhook(), Mailbox()
    c = start_cluster(redis_url.rsplit("/", 1)[0] + "/3", pg_server_url,
                      tmp_path_factory.mktemp("alerts"), 1,
                      QFLOW_NOTIFY_WEBHOOK_URL=hook.url, QFLOW_NOTIFY_EMAIL_TO="ops@example.org",
                      QFLOW_SMTP_HOST="127.0.0.1", QFLOW_SMTP_PORT=str(mailbox.port))
    yield c, hook, mailbox
    c.stop()
    mailbox.controller.stop()
    hook.shutdown()


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_failed_run_is_announced_once_by_webhook_and_mail(alert_cluster, tmp_path):
    cluster, hook, mailbox = alert_cluster
    rt = cluster.runtime()
    notes = tmp_path / "notes.txt"
    run_id = rt.engine.trigger("alarming", {"notes": str(notes)})
    assert rt.engine.wait(run_id, timeout=30)["state"] == "failed"
    eventually(lambda: hook.received and mailbox.messages)
    time.sleep(1.0)                      # would a second one come?
    assert len(hook.received) == 1 and len(mailbox.messages) == 1
    event = hook.received[0]
    assert (event["kind"], event["run_id"], event["workflow"], event["node"], event["error"]) \
        == ("run_failed", run_id, "alarming", "alerting", "ValueError: disk full")
    assert run_id in event["text"] and "disk full" in event["text"]
    mail = mailbox.messages[0].content.decode()
    assert run_id in mail and "alarming" in mail and "alerting" in mail and "disk full" in mail
    assert mailbox.messages[0].rcpt_tos == ["ops@example.org"]
    assert sorted(notes.read_text().splitlines()) == sorted([
        "task_retry alerting ValueError: disk full",
        "task_failed alerting ValueError: disk full",
        "task_succeeded fine None",
        "run_failed alerting ValueError: disk full"])


def test_a_failing_callback_never_fails_the_run(alert_cluster, tmp_path):
    cluster, hook, _ = alert_cluster
    rt = cluster.runtime()
    before = len(hook.received)
    run_id = rt.engine.trigger("calm", {"notes": str(tmp_path / "n.txt")})
    assert rt.engine.wait(run_id, timeout=30)["state"] == "succeeded"
    logs = (cluster.folder / "w1.log").read_text()
    eventually(lambda: "a bug in an alert callback" in (cluster.folder / "w1.log").read_text())
    assert len(hook.received) == before         # run_succeeded is not notified by default
    del logs


def test_an_unreachable_notifier_is_logged_and_the_run_still_ends(tmp_path, caplog):
    from test_store import StubDispatcher, drain

    from qflow.config import Config
    from qflow.engine.client import Engine
    from qflow.store import Store
    from qflow.store.migrate import ensure_schema

    store = Store(f"sqlite:///{tmp_path}/q.db")
    ensure_schema(store)
    config = Config(notify_webhook_url=f"http://127.0.0.1:{free_port()}/hook",
                    notify_events="task_failed,run_failed")
    engine = Engine(config, store, StubDispatcher())
    run_id = engine.trigger("alarming", {"notes": str(tmp_path / "n.txt")})
    drain(engine)
    with store.read() as conn:
        assert read.get_run(conn, run_id, with_tasks=False)["state"] == "failed"
    assert f"alert run_failed of run {run_id} not delivered (try 1)" in caplog.text
    from qflow.store import outbox
    with store.read() as conn:                  # kept, to be tried again
        waiting = outbox.undelivered(conn)
    assert sorted(a["key"].split(":")[0] for a in waiting) == ["run_failed", "task_failed"]
    assert all(a["tries"] == 1 and "Connection refused" in a["last_error"] for a in waiting)


def test_a_run_that_ends_as_it_starts_tells_its_on_success_callback(registry, tmp_path):
    """A workflow whose only node maps over an empty list has nothing to run: the run
    ends `succeeded` inside trigger(), and its on_success callback must still fire."""
    from test_store import StubDispatcher

    from qflow import task, workflow
    from qflow.config import Config
    from qflow.engine.client import Engine
    from qflow.store import Store
    from qflow.store.migrate import ensure_schema

    told = []

    @task
    def double(x: int) -> int:
        return 2 * x

    @workflow(on_success=lambda event: told.append((event.kind, event.state)))
    def nothing_to_do(items: list[int] = []):
        double.map(items)

    store = Store(f"sqlite:///{tmp_path}/q.db")
    ensure_schema(store)
    engine = Engine(Config(), store, StubDispatcher())
    run_id = engine.trigger("nothing_to_do")
    with store.read() as conn:
        assert read.get_run(conn, run_id, with_tasks=False)["state"] == "succeeded"
    assert told == [("run_succeeded", "succeeded")]


def test_an_alert_the_receiver_refuses_three_times_arrives_once_later(tmp_path):
    """Durable alerts: the webhook is down for the first three deliveries; the event is
    kept, retried with the same key, delivered once, and a process that died holding its
    lease does not lose it or make it arrive twice."""
    from test_store import StubDispatcher, drain

    from qflow.config import Config
    from qflow.engine.client import Engine
    from qflow.store import Store, outbox
    from qflow.store.migrate import ensure_schema
    from qflow.store.models import alerts

    hook = Webhook(refuse=3)
    store = Store(f"sqlite:///{tmp_path}/q.db")
    ensure_schema(store)
    engine = Engine(Config(notify_webhook_url=hook.url, notify_events="run_failed"), store,
                    StubDispatcher())
    run_id = engine.trigger("alarming", {"notes": str(tmp_path / "n.txt")})
    drain(engine)                              # the run fails: first delivery refused

    def due_now():                             # time passes: the backoff is over
        with store.write() as conn:
            conn.execute(alerts.update().values(next_at=alerts.c.created_at))

    for _ in range(2):
        due_now()
        assert engine.alerts.deliver() == 0
    assert len(hook.refused) == 3 and hook.received == []
    # A process leases it and dies before delivering: the lease runs out, another sends.
    due_now()
    assert len(store.transact(outbox.lease_due, None, 60.0)) == 1
    assert engine.alerts.deliver() == 0        # leased elsewhere
    with store.write() as conn:
        conn.execute(alerts.update().values(lease_until=alerts.c.created_at))
    assert engine.alerts.deliver() == 1
    assert engine.alerts.deliver() == 0        # delivered: never again
    assert [e["run_id"] for e in hook.received] == [run_id]
    keys = {e["key"] for e in hook.refused + hook.received}
    assert keys == {f"run_failed:{run_id}"}     # one event, one idempotency key
    hook.shutdown()



def test_a_task_past_its_deadline_fires_task_late_once_and_a_held_run_run_late(tmp_path,
                                                                               registry):
    import threading as th

    from test_store import StubDispatcher

    from qflow.config import Config
    from qflow.engine.client import Engine
    from qflow.engine.executor import Executor
    from qflow.engine.upkeep import Upkeep
    from qflow.store import Store
    from qflow.store.migrate import ensure_schema

    told, release = [], th.Event()

    @registry.task(deadline="1s", on_late=lambda e: told.append((e.kind, e.node)))
    def overrun() -> int:
        release.wait(30)
        return 1

    @registry.workflow(max_active_runs=1, deadline=1.0,
                       on_late=lambda e: told.append((e.kind, e.run_id)))
    def slow_report():
        overrun()

    hook = Webhook()
    store = Store(f"sqlite:///{tmp_path}/q.db")
    ensure_schema(store)
    engine = Engine(Config(notify_webhook_url=hook.url,
                           notify_events="task_late,run_late"), store, StubDispatcher())
    upkeep = Upkeep(Executor(engine))
    first = engine.trigger("slow_report")
    held = engine.trigger("slow_report")                 # waits for max_active_runs
    item = engine.dispatcher.sent.pop(0)
    worker = th.Thread(target=Executor(engine).execute,
                       args=(item.run_id, item.node, item.attempt, "w1"))
    worker.start()
    try:
        eventually(lambda: status_of(store, first)["tasks"][0]["state"] == "running")
        time.sleep(1.2)
        for _ in range(3):                               # several sweeps, one alert each
            upkeep.check_deadlines()
    finally:
        release.set()
        worker.join(30)
    kinds = sorted((e["kind"], e["run_id"], e["node"]) for e in hook.received)
    assert kinds == sorted([("task_late", first, "overrun"), ("run_late", first, None),
                            ("run_late", held, None)])
    assert ("task_late", "overrun") in told and ("run_late", held) in told
    run = status_of(store, held)
    assert run["state"] == "queued" and run["late"] is True
    hook.shutdown()


def status_of(store, run_id: str) -> dict:
    with store.read() as conn:
        return read.get_run(conn, run_id)
