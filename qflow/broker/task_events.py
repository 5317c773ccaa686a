"""The task events of tasks a worker runs after their parent (following), sent from the
pool process that runs them, so that Flower sees them as it sees a message's task.

Celery sends a message's task events from the worker's main process, with one dispatcher
kept for the worker. A pool process has none: Celery's ``default_dispatcher`` builds a
dispatcher and a producer for each event, and kombu's Redis transport a Redis client for
each publish, some 0.4 ms of CPU an event (three a followed task, on a chain's path),
ten times the PUBLISH itself. On a Redis broker an event is therefore written here as
kombu writes a fanout message (``Channel._put_fanout``: the same envelope, on the
topics the channel names), with one connection and Redis client kept per process and
worker name; tests/test_follow_events.py compares it with the dispatcher's message. On
other brokers Celery's dispatcher sends it. The task-sent events of the messages that
qflow/broker/redis_lists.py pushes go the same way, a round trip per batch.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from typing import Any

from celery import Celery
from celery.events.event import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

PER_TRIP = 1000          # events per pipeline round trip
_lock = threading.Lock()


def sender(app: Celery, hostname: str | None) -> Sender:
    """The event sender of this process for ``app`` and the worker named ``hostname``
    (None: this process, as Celery names a publisher), kept on the app."""
    key = (os.getpid(), hostname or "")
    senders = app.__dict__.get("_qflow_event_senders")
    found = senders.get(key) if senders is not None else None
    if found is None:
        with _lock:
            senders = app.__dict__.setdefault("_qflow_event_senders", {})
            found = senders.setdefault(key, Sender(app, hostname))
    return found


class Sender:
    """Sends task events: ``sender("task-started", uuid=..., **fields)`` one,
    ``sender.many("task-sent", [fields, ...])`` several in one round trip. An event
    passed to ``later`` goes with the next ones sent (or at ``flush``): a followed task's
    end and its successor's start are then one round trip to Redis, not three."""

    def __init__(self, app: Celery, hostname: str | None):
        self.app, self.hostname = app, hostname or anon_nodename()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._redis: tuple[Any, Any, Any] | None = None     # (connection, channel, client)
        self._topics: dict[str, list[str]] = {}
        self._plain = False             # not a Redis broker: Celery's dispatcher sends
        self._later: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        self.send([(kind, fields)])

    def many(self, kind: str, events: list[dict[str, Any]]) -> None:
        self.send([(kind, fields) for fields in events])

    def later(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self._later.append((kind, fields))

    def flush(self) -> None:
        self.send([])

    def send(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Send the events held for later, then ``events``, in order."""
        with self._lock:
            events, self._later = self._later + events, []
            if not events:
                return
            if not self._plain:
                redis = self._redis or self._connect()
                if redis is not None:
                    _, channel, client = redis
                    if len(events) == 1:
                        self._write(client, channel, *events[0])
                        return
                    with client.pipeline(transaction=False) as pipe:
                        for i, (kind, fields) in enumerate(events, 1):
                            self._write(pipe, channel, kind, fields)
                            if i % PER_TRIP == 0 or i == len(events):
                                pipe.execute()
                    return
        with self.app.events.default_dispatcher(hostname=self.hostname) as dispatcher:
            for kind, fields in events:
                dispatcher.send(kind, **fields)

    def _connect(self):
        from kombu.transport.redis import Channel

        from qflow.broker.redis_lists import _client
        connection = self.app.connection_for_write()
        channel = connection.default_channel
        if not isinstance(channel, Channel):
            connection.release()
            self._plain = True
            return None
        self._redis = (connection, channel, _client(channel))
        return self._redis

    def _write(self, client, channel, kind: str, fields: dict) -> None:
        """PUBLISH the event on ``client`` (a Redis client or pipeline)."""
        routing_key = kind.replace("-", ".")
        topics = self._topics.get(routing_key)
        exchange = self.app.conf.event_exchange
        if topics is None:
            many = getattr(channel, "_get_publish_topics", None)     # newer kombu
            topics = self._topics[routing_key] = (
                many(exchange, routing_key) if many is not None
                else [channel._get_publish_topic(exchange, routing_key)])
        event = Event(kind, hostname=self.hostname,
                      utcoffset=utcoffset(), pid=self.pid, clock=self.app.clock.forward(),
                      **fields)
        body, encoding = channel.encode_body(json.dumps(event), channel.body_encoding)
        payload = json.dumps({
            "body": body, "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {"hostname": self.hostname},
            "properties": {"delivery_mode": 1,
                           "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                           "priority": channel.default_priority,
                           "body_encoding": encoding, "delivery_tag": str(uuid.uuid4())}})
        for topic in topics:
            client.publish(topic, payload)
