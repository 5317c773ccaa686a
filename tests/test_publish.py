"""Publishing: qflow writes Celery's task messages itself (qflow/broker/publish.py).

The message is the one Celery's ``apply_async`` would write, stock workers run every
message of a batch bigger than one Redis pipeline on Redis and on RabbitMQ, and what the
broker refuses is left for the reconciler. Real Redis, RabbitMQ and PostgreSQL.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import flows  # noqa: F401 - registers the workflows in this process too
import pytest
import redis
import servers
from conftest import ROOT, _missing, capture_events, new_pg_database, wait_for
from sqlalchemy import func, select

from qflow.broker.app import CeleryDispatcher, make_celery
from qflow.broker.publish import EXECUTE, broker_priority
from qflow.config import Config
from qflow.core.records import Dispatch
from qflow.errors import UnreachableError
from qflow.store.models import tasks


@pytest.fixture(scope="module")
def private_redis():
    """A Redis of this module's own: one test fills it up."""
    try:
        server = servers.start_redis()
    except servers.ServerMissing as exc:
        _missing(exc)
    yield server.url
    server.stop()


@pytest.fixture
def broker_url(private_redis):
    """The module's Redis, emptied for each test."""
    redis.Redis.from_url(private_redis).flushdb()
    return private_redis


def queued_messages(url: str, queue: str) -> dict[str, list[dict]]:
    """Every message waiting in ``queue``, by Redis list (one per priority level)."""
    client = redis.Redis.from_url(url)
    return {key.decode(): [json.loads(m) for m in client.lrange(key, 0, -1)]
            for key in client.keys(queue + "*") if client.type(key) == b"list"}


def decoded(message: dict) -> dict:
    """A message with its body decoded, and what differs between any two messages (ids,
    kombu's delivery tag, the eta's exact instant, apply_async's reply queue, which only
    Celery's RPC result backend reads) taken out after checking they are well formed."""
    headers = dict(message["headers"])
    props = dict(message["properties"])
    assert headers.pop("root_id") == headers["id"] == props.pop("correlation_id")
    headers.pop("id")
    if headers["eta"] is not None:
        headers["eta"] = dt.datetime.fromisoformat(headers["eta"])
        assert headers["eta"].utcoffset() == dt.timedelta(0)
    props.pop("delivery_tag")
    props.pop("reply_to")
    assert props.pop("body_encoding") == "base64"
    return dict(message, headers=headers, properties=props,
                body=json.loads(base64.b64decode(message["body"])))


# With task events on, messages go through kombu's producer (and send task-sent events);
# without, straight into Redis's lists: either way the message is the same.
@pytest.mark.parametrize("task_events", [False, True], ids=["redis-lists", "kombu"])
def test_qflow_s_message_is_the_one_celery_s_apply_async_writes(broker_url, task_events):
    config = Config(broker_url=broker_url, task_events=task_events)
    app = make_celery(config, lambda: None)
    run_id = uuid.uuid4().hex
    item = Dispatch(run_id, "load[3]", 2, "etl", "daily", countdown=30.0, timeout=60.0,
                    priority=7)
    CeleryDispatcher(app, config).publish([item])
    app.tasks[EXECUTE].apply_async((run_id, "load[3]", 2), queue="etl",
                                   shadow="daily.load[3]", countdown=30,
                                   priority=broker_priority(broker_url, 7), time_limit=65.0)
    found = queued_messages(broker_url, "etl")
    assert list(found) == ["etl:2"]               # Redis serves level 9 - 7 before 3..9
    ours, celery_s = (decoded(m) for m in reversed(found["etl:2"]))   # LPUSH: newest first
    assert abs(ours["headers"].pop("eta") - celery_s["headers"].pop("eta")) \
        < dt.timedelta(seconds=5)
    assert ours == celery_s
    assert ours["body"][0] == [run_id, "load[3]", 2]
    assert ours["headers"]["timelimit"] == [65.0, None]


@pytest.mark.parametrize("task_events", [False, True], ids=["redis-lists", "kombu"])
def test_a_message_without_options_is_celery_s_too(broker_url, task_events):
    config = Config(broker_url=broker_url, task_events=task_events)
    app = make_celery(config, lambda: None)
    run_id = uuid.uuid4().hex
    CeleryDispatcher(app, config).publish([Dispatch(run_id, "extract", 1, None, "daily")])
    app.tasks[EXECUTE].apply_async((run_id, "extract", 1), queue=config.default_queue,
                                   shadow="daily.extract", priority=9)
    found = queued_messages(broker_url, config.default_queue)
    key = f"{config.default_queue}:9"                 # no priority given: the least urgent
    assert list(found) == [key]
    ours, celery_s = (decoded(m) for m in reversed(found[key]))
    assert ours == celery_s
    assert ours["headers"]["eta"] is None and ours["headers"]["timelimit"] == [None, None]


def test_a_batch_of_many_round_trips_lands_whole_and_in_order(broker_url):
    config = Config(broker_url=broker_url)
    app = make_celery(config, lambda: None)
    run_id = uuid.uuid4().hex
    n = 25_000                                   # three round trips of 10,000
    CeleryDispatcher(app, config).publish(
        [Dispatch(run_id, f"n{i}", 1, "bulk", "wide", priority=3 * (i % 2)) for i in range(n)])
    found = queued_messages(broker_url, "bulk")
    assert sorted(found) == ["bulk:6", "bulk:9"]       # qflow's 3 and 0
    for key, parity in (("bulk:6", 1), ("bulk:9", 0)):
        # Workers take from the tail of a list: the first published comes first.
        nodes = [decoded(m)["body"][0][1] for m in reversed(found[key])]
        assert nodes == [f"n{i}" for i in range(parity, n, 2)]


def test_with_task_events_on_each_message_sends_its_task_sent_event(broker_url):
    config = Config(broker_url=broker_url, task_events=True)
    app = make_celery(config, lambda: None)
    listener, seen = capture_events(app, "task-sent", limit=3)
    # Events are Redis pub/sub messages: only a subscriber already there gets them, and
    # the receiver subscribes once its loop polls.
    wait_for(lambda: redis.Redis.from_url(broker_url).pubsub_numpat() > 0,
             what="the event receiver to subscribe")
    run_id = uuid.uuid4().hex
    CeleryDispatcher(app, config).publish(
        [Dispatch(run_id, f"step{i}", 1, "etl", "daily") for i in range(3)])
    listener.join(30)
    ids = {m["headers"]["id"]: m for m in queued_messages(broker_url, "etl")["etl:9"]}
    assert sorted((e["uuid"], e["name"], e["queue"], e["args"]) for e in seen) == sorted(
        (i, EXECUTE, "etl", m["headers"]["argsrepr"]) for i, m in ids.items())


@pytest.fixture(params=["redis", "amqp"])
def any_cluster(request):
    return request.getfixturevalue("cluster" if request.param == "redis" else "amqp_cluster")


def test_stock_workers_run_every_message_of_a_trigger_bigger_than_a_pipeline(any_cluster):
    rt = any_cluster.runtime()
    width = 1_100                                    # Redis: a pipeline holds 1,000
    run_id = rt.engine.trigger("fan", {"width": width})
    assert rt.engine.wait(run_id, timeout=300)["state"] == "succeeded"
    with rt.store.read() as conn:
        joined = conn.execute(select(tasks.c.result).where(
            tasks.c.run_id == run_id, tasks.c.node == "join")).scalar_one()
        attempts = conn.execute(select(func.max(tasks.c.attempts)).where(
            tasks.c.run_id == run_id)).scalar_one()
    assert json.loads(joined) == [i + 1 for i in range(width)]
    assert attempts == 1                             # nothing sent twice, nothing lost
    rt.store.dispose()


def test_what_the_broker_refuses_is_left_for_the_reconciler(broker_url, pg_server_url):
    from qflow.runtime import Runtime
    from qflow.store.migrate import upgrade

    rt = Runtime(Config(broker_url=broker_url, database_url=new_pg_database(pg_server_url),
                        app=str(ROOT / "tests" / "flows.py")))
    upgrade(rt.store)
    client = redis.Redis.from_url(broker_url)
    # A full Redis (maxmemory below what it holds) refuses every write: how a broker
    # out of memory answers a big trigger.
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    width = 600
    try:
        with pytest.raises(UnreachableError, match="will be sent once the broker is back"):
            rt.engine.trigger("fan", {"width": width})
    finally:
        client.config_set("maxmemory", 0)
    with rt.store.read() as conn:
        run_id, unsent = conn.execute(select(tasks.c.run_id, func.count()).where(
            tasks.c.unsent.is_(True)).group_by(tasks.c.run_id)).one()
    assert unsent == width
    while rt.upkeep.reconcile():
        pass
    with rt.store.read() as conn:
        assert conn.execute(select(func.count()).where(
            tasks.c.run_id == run_id, tasks.c.unsent.is_(True))).scalar_one() == 0
    held = sum(len(m) for m in queued_messages(broker_url, rt.config.default_queue).values())
    assert held == width
    rt.store.dispose()
