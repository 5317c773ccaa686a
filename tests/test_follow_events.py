"""A worker that runs a released child itself (following a chain) still sends the task
events Flower reads, when task events are on: every task of the run is seen."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import flows  # noqa: F401 - registers the workflows
import redis
from conftest import capture_events, start_cluster

from qflow.broker import task_events
from qflow.broker.app import make_celery
from qflow.config import Config


def test_followed_tasks_send_task_events_while_flower_watches(redis_url, pg_server_url,
                                                              tmp_path):
    cluster = start_cluster(redis_url.rsplit("/", 1)[0] + "/4", pg_server_url, tmp_path, 1,
                            QFLOW_TASK_EVENTS="true")
    seen: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    try:
        rt = cluster.runtime()
        app = rt.celery
        stop, listening = threading.Event(), threading.Event()

        def listen():
            def on_event(event):
                listening.set()                         # e.g. the worker's heartbeat
                uuid = event.get("uuid")
                if uuid:
                    seen.setdefault(uuid, set()).add(event["type"])
                    if event.get("name"):
                        names[uuid] = event["name"]
            with app.connection_for_read() as conn:
                receiver = app.events.Receiver(conn, handlers={"*": on_event})
                while not stop.is_set():
                    try:
                        receiver.capture(limit=None, timeout=0.5, wakeup=False)
                    except (TimeoutError, OSError):
                        continue

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        # Triggered once the receiver hears the worker (its heartbeats come every 2 s):
        # an event sent before it listens is not kept for it.
        assert listening.wait(30), "no event from the worker"
        run_id = rt.engine.trigger("chain", {"length": 4})
        assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
        with rt.store.read() as conn:
            from qflow.store import read
            run = read.get_run(conn, run_id)
        celery_ids = {t["celery_id"] for t in run["tasks"]}
        assert len(celery_ids) < len(run["tasks"])      # some ran after their parent
        expected = {f"chain.{t['node']}" for t in run["tasks"]}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            done = {names.get(u) for u, kinds in seen.items() if "task-succeeded" in kinds}
            if expected <= done:
                break
            time.sleep(0.2)
        stop.set()
        done = {names.get(u) for u, kinds in seen.items()
                if {"task-received", "task-started", "task-succeeded"} <= kinds}
        assert expected <= done, f"no events for {sorted(expected - done)}"
    finally:
        cluster.stop()


def _task_events(pubsub, uuids: set[str], count: int, within: float = 10.0
                 ) -> list[tuple[str, dict, dict]]:
    """The next ``count`` task events about ``uuids`` on a pattern subscription (fewer if
    ``within`` seconds pass first): (topic, envelope, event). Redis pub/sub spans its
    databases, so other tests' workers' events may come between: they are passed over."""
    found = []
    deadline = time.monotonic() + within
    while len(found) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is None or message["type"] != "pmessage":
            continue
        envelope = json.loads(message["data"])
        event = json.loads(base64.b64decode(envelope.pop("body")))
        if event.get("uuid") in uuids:
            found.append((message["channel"].decode(), envelope, event))
    return found


def _subscribed(app):
    pubsub = redis.Redis.from_url(app.conf.broker_url).pubsub()
    pubsub.psubscribe("*celeryev/task.*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    return pubsub


def _sent_by(app, send, task_id: str) -> tuple[str, dict]:
    """The Redis pub/sub message ``send()`` publishes about ``task_id``: (topic, envelope
    with its event decoded), leaving out what differs between any two events (delivery
    tag, logical clock, timestamp)."""
    pubsub = _subscribed(app)
    send()
    [(topic, envelope, event)] = _task_events(pubsub, {task_id}, 1)
    pubsub.close()
    del envelope["properties"]["delivery_tag"]
    for varying in ("clock", "timestamp"):
        assert event.pop(varying)
    return topic, {**envelope, "event": event}


def test_a_followed_tasks_event_is_the_message_celerys_dispatcher_sends(redis_url):
    app = make_celery(Config(broker_url=redis_url.rsplit("/", 1)[0] + "/5",
                             task_events=True), lambda: None)
    fields = dict(uuid=uuid.uuid4().hex, result="None", runtime=0.25)

    def celerys():
        with app.events.default_dispatcher(hostname="w1@host") as dispatcher:
            dispatcher.send("task-succeeded", **fields)

    topic, expected = _sent_by(app, celerys, fields["uuid"])
    assert topic.endswith("celeryev/task.succeeded")
    send = task_events.sender(app, "w1@host")
    for _ in range(2):                     # the second on the kept connection
        assert _sent_by(app, lambda: send("task-succeeded", **fields),
                        fields["uuid"]) == (topic, expected)


def test_on_rabbitmq_a_followed_tasks_event_reaches_an_event_receiver(amqp_url):
    app = make_celery(Config(broker_url=amqp_url, task_events=True), lambda: None)
    thread, seen = capture_events(app, "task-started", limit=1)
    task_id = uuid.uuid4().hex
    task_events.sender(app, "w2@host")("task-started", uuid=task_id)
    thread.join(30)
    assert [(e["uuid"], e["hostname"]) for e in seen] == [(task_id, "w2@host")]


def test_an_event_held_for_later_goes_first_with_the_next_or_at_flush(redis_url):
    app = make_celery(Config(broker_url=redis_url.rsplit("/", 1)[0] + "/5",
                             task_events=True), lambda: None)
    send = task_events.sender(app, "w3@host")
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    pubsub = _subscribed(app)

    def received(count: int, within: float = 10.0) -> list[tuple[str, str]]:
        return [(event["type"], event["uuid"])
                for _, _, event in _task_events(pubsub, {a, b}, count, within)]

    send.later("task-succeeded", uuid=a, result="None", runtime=0.1)
    send.later("task-received", uuid=b, name="wf.b")
    assert received(1, within=1.0) == []                     # held
    send("task-started", uuid=b)
    assert received(3) == [("task-succeeded", a), ("task-received", b), ("task-started", b)]
    send.later("task-failed", uuid=b, exception="Boom", traceback="")
    send.flush()
    assert received(1) == [("task-failed", b)]
    pubsub.close()
