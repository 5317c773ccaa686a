"""A worker that runs a released child itself (following a chain) still sends the task
events Flower reads, when task events are on: every task of the run is seen."""
from __future__ import annotations

import threading
import time

import flows  # noqa: F401 - registers the workflows
from conftest import start_cluster


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
