"""The box test: qflow never opens the box. A workflow whose tasks print, log, return and
raise a marker it only ever receives as a Secret parameter runs on two worker processes
with a result store and a key. The results DB (pg_dump), everything the broker's Redis
saw (MONITOR) and holds, the task events Flower is fed, the webhook's payloads, the alert
e-mails and the result store never contain the marker; `qflow result` and `qflow logs` with the key
print it back.
"""
from __future__ import annotations

import email
import email.policy
import glob
import json
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from conftest import ROOT, start_cluster, wait_for
from servers import Mailbox

from qflow.results import crypto

FLOWS = str(ROOT / "tests" / "result_flows.py")


class Webhook:
    """An HTTP endpoint that keeps every body POSTed to it."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class RedisMonitor:
    """Every command the broker's Redis runs while it listens (MONITOR)."""

    def __init__(self, url: str):
        self.lines: list[str] = []
        self.client = redis.Redis.from_url(url)
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self):
        try:
            for command in self.monitor.listen():
                self.lines.append(command.get("command", ""))
        except Exception:  # noqa: BLE001 - the connection is closed to stop it
            pass

    def close(self):
        self.monitor.connection.disconnect()


class TaskEvents:
    """Every Celery event the workers send: what Flower's task list is built from."""

    def __init__(self, broker_url: str):
        from celery import Celery
        self.events: list[dict] = []
        self.app = Celery(broker=broker_url)
        self.ready = threading.Event()
        self.receiver = None
        threading.Thread(target=self._capture, daemon=True).start()
        self.ready.wait(10)

    def _capture(self):
        with self.app.connection() as conn:
            self.receiver = self.app.events.Receiver(
                conn, handlers={"*": self.events.append})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=True)

    def close(self):
        if self.receiver is not None:
            self.receiver.should_stop = True


def pg_dump(database_url: str) -> str:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    if not binaries:
        pytest.fail("pg_dump is missing (apt-get install postgresql)", pytrace=False)
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    out = subprocess.run([binaries[-1], "--no-owner", url], capture_output=True, text=True,
                         check=True)
    return out.stdout


def mail_text(raw: bytes) -> str:
    """An e-mail's subject and body as its reader sees them (transfer encoding undone)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return f"{message['Subject']}\n{message.get_body().get_content()}"


def redis_contents(url: str) -> str:
    """Every key of the broker's Redis DB with its value, as text."""
    client = redis.Redis.from_url(url)
    readers = {"string": ("get",), "list": ("lrange", 0, -1), "set": ("smembers",),
               "hash": ("hgetall",), "zset": ("zrange", 0, -1)}
    out = []
    for key in client.scan_iter(count=1000):
        name, *args = readers.get(client.type(key).decode(), ("type",))
        out.append(f"{key!r} {getattr(client, name)(key, *args)!r}")
    return "\n".join(out)


def test_the_box_stays_closed(redis_url, pg_server_url, tmp_path):
    marker = "box-marker-" + uuid.uuid4().hex[:12]
    key = crypto.new_key()
    store = tmp_path / "results"
    store.mkdir()
    hook, mailbox = Webhook(), Mailbox()
    redis_url = redis_url.rsplit("/", 1)[0] + "/1"          # a Redis DB of its own
    cluster = start_cluster(redis_url, pg_server_url, tmp_path, 2, app=FLOWS,
                            QFLOW_RESULT_STORE=f"file://{store}", QFLOW_ENCRYPTION_KEY=key,
                            QFLOW_NOTIFY_WEBHOOK_URL=hook.url, QFLOW_TASK_EVENTS="true",
                            QFLOW_NOTIFY_EMAIL_TO="ops@example.org",
                            QFLOW_SMTP_HOST="127.0.0.1", QFLOW_SMTP_PORT=str(mailbox.port),
                            QFLOW_NOTIFY_EVENTS="task_failed,task_succeeded,run_failed")
    monitor, events = RedisMonitor(redis_url), TaskEvents(redis_url)
    try:
        out = subprocess.run(["qflow", "trigger", "box", "-p", f"token={marker}", "--json"],
                             env=cluster.env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        run_id = json.loads(out.stdout)["run_id"]
        run = cluster.runtime().engine.wait(run_id, timeout=120)
        assert run["state"] == "failed"                   # explode raised the marker
        # the webhook hears of the failed task and of the failed run
        wait_for(lambda: {json.loads(b)["kind"] for b in hook.bodies} >= {"task_failed",
                                                                           "run_failed"},
                 what="the webhook's task_failed and run_failed")
        wait_for(lambda: len(mailbox.messages) >= len(hook.bodies),
                 what="an alert e-mail for each webhook payload")
        wait_for(lambda: any(e.get("type") == "task-failed" for e in events.events),
                 what="a task-failed event")
    finally:
        monitor.close()
        events.close()
        cluster.stop()
        hook.close()
        mailbox.stop()
    status = subprocess.run(["qflow", "status", run_id, "--json"], env=cluster.env,
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    # status (with the key) shows the error in clear to its user, the secret never
    assert json.loads(status.stdout)["params"] == {"token": "***"}
    seen = {
        "pg_dump of the results DB": pg_dump(cluster.database_url),
        "the broker's Redis, every command": "\n".join(monitor.lines),
        "the broker's Redis, every key": redis_contents(redis_url),
        "the task events Flower reads": json.dumps(events.events, default=str),
        "the webhook payloads": b"\n".join(hook.bodies).decode(),
        "the alert e-mails": "\n".join(mail_text(m.content) for m in mailbox.messages),
        "the result store": "\n".join(p.read_bytes().decode("latin-1")
                                      for p in store.rglob("*") if p.is_file()),
        # What a task prints is echoed on its worker's terminal (the worker holds the
        # value anyway); what the worker itself logs about tasks holds nothing of it.
        "the workers' lines about tasks": "\n".join(
            line for p in tmp_path.glob("w*.log") for line in p.read_text().splitlines()
            if " Task " in line),
    }
    assert len(monitor.lines) > 10 and events.events and hook.bodies and mailbox.messages
    assert run_id in seen["pg_dump of the results DB"]     # it is the right DB
    assert run_id in seen["the alert e-mails"]             # read as their reader reads them
    for where, text in seen.items():
        assert marker not in text, f"the marker is in {where}"
    result = subprocess.run(["qflow", "result", run_id, "echo"], env=cluster.env,
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == marker
    logs = subprocess.run(["qflow", "logs", run_id], env=cluster.env, cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    assert f"printed {marker}" in logs and f"logged {marker}" in logs
    assert f"raised {marker}" in logs
