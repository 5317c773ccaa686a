"""Task messages written by qflow itself, in Celery's message protocol v2, and published in
batches.

Celery's ``apply_async`` spends most of a publish on what qflow's messages never need:
routing and option merging, ``saferepr`` of the arguments, a retry wrapper and a
``maybe_declare`` per message (measured here: 200-260 messages/s in a loop, 700-840 in
kombu's publish batch; bench/publish.py). Every qflow message is alike (one task, three
small arguments), so this module writes the headers, properties and body that protocol v2
describes (docs.celeryq.dev/en/stable/internals/protocol.html), declares each queue once
per batch and hands the messages to the broker in bulk: on Redis straight into the
queues' lists (:mod:`qflow.broker.redis_lists`), elsewhere through kombu's producer. A
stock Celery worker reads them as it reads apply_async's (tests/test_publish.py compares
the two). What Celery's publish does besides is kept: its ``before_task_publish`` and
``after_task_publish`` signals for whoever listens (through kombu's producer then), the
``task-sent`` event when ``task_send_sent_event`` is on (on Redis in one round trip per
batch, :mod:`qflow.broker.task_events`), the parent and root of a message sent from inside
a task, and signing (the ``auth`` serializer signs each body as kombu serializes it).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from typing import Iterable, Iterator

from celery import Celery, signals
from celery.utils.nodenames import anon_nodename
from kombu.entity import maybe_delivery_mode
from kombu.exceptions import KombuError

from qflow.broker import redis_lists, task_events
from qflow.config import Config
from qflow.core.records import Dispatch
from qflow.engine.dispatch import PublishError

EXECUTE = "qflow.execute"
HARD_LIMIT_GRACE = 5.0
BATCH = 1000           # messages per Redis round trip through kombu's publish batch
# The protocol's "embedded" part of the body: no callbacks, errbacks, chain or chord.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def broker_priority(broker_url: str, priority: int) -> int:
    """qflow's 9 is most urgent; Celery's Redis transport serves 0 first."""
    return 9 - priority if broker_url.startswith(("redis://", "rediss://")) else priority


def uuid4_texts(n: int) -> Iterator[str]:
    """``n`` random version-4 UUIDs as text, from one read of the OS's random source
    (``uuid.uuid4()`` reads it and builds an object per id: a tenth of a message's cost)."""
    raw = os.urandom(16 * n).hex()
    for i in range(0, 32 * n, 32):
        h = raw[i:i + 32]
        yield (f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}"
               f"-{h[20:]}")


class Messages:
    """The protocol v2 parts of a batch's messages, as Celery's ``as_task_v2`` fills them
    for qflow's one task."""

    def __init__(self, app: Celery, config: Config, size: int):
        self.config = config
        parent = app.current_worker_task       # a worker publishing released children
        self.root_id = self.parent_id = None
        if parent is not None:
            self.root_id = parent.request.root_id or parent.request.id
            self.parent_id = parent.request.id
        self.origin = anon_nodename()           # this process, as Celery names it
        # The results DB is the record: the task ignores Celery results, and apply_async
        # writes that in the message.
        self.ignore_result = app.tasks[EXECUTE].ignore_result
        self.delivery_mode = maybe_delivery_mode(app.conf.task_default_delivery_mode)
        self.ids = uuid4_texts(size)

    def priority(self, item: Dispatch) -> int | None:
        if self.config.embedded:                # the memory transport has none
            return None
        return broker_priority(self.config.broker_url, item.priority or 0)

    def headers(self, item: Dispatch, task_id: str) -> dict:
        eta = None
        if item.countdown > 0:
            eta = (dt.datetime.now(dt.timezone.utc)
                   + dt.timedelta(seconds=item.countdown)).isoformat()
        time_limit = None
        if item.timeout and not self.config.embedded:
            # Backstop for a task that ignores its alarm: Celery kills the process.
            time_limit = item.timeout + HARD_LIMIT_GRACE
        return {
            "lang": "py", "task": EXECUTE, "id": task_id,
            "shadow": f"{item.workflow}.{item.node}", "eta": eta, "expires": None,
            "group": None, "group_index": None, "retries": 0,
            "timelimit": [time_limit, None], "root_id": self.root_id or task_id,
            "parent_id": self.parent_id,
            "argsrepr": repr((item.run_id, item.node, item.attempt)), "kwargsrepr": "{}",
            "origin": self.origin, "ignore_result": self.ignore_result,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        }

    @staticmethod
    def body(item: Dispatch) -> tuple:
        return [item.run_id, item.node, item.attempt], {}, EMBED


def _batched(producer):
    """kombu's publish batch where the transport has one, else nothing."""
    batch = getattr(producer, "batch", None)
    return batch(BATCH) if batch is not None else contextlib.nullcontext()


class Publisher:
    """Publishes one flat ``qflow.execute(run_id, node, attempt)`` message per ready task,
    named after its workflow and node (Celery's ``shadow``)."""

    def __init__(self, app: Celery, config: Config):
        self.app = app
        self.config = config
        self._events = None        # the dispatcher of task-sent events, made when needed

    def publish(self, items: list[Dispatch]) -> None:
        if not items:
            return
        routed = [(item, self._queue(item)) for item in items]
        try:
            with self.app.producer_or_acquire() as producer:
                errors = (KombuError, OSError, *producer.connection.connection_errors,
                          *producer.connection.channel_errors)
                try:
                    self._declare(producer, {queue for _, queue in routed})
                    self._send(producer, routed)
                except errors as exc:
                    # Which of a batch reached the broker is not known: all are re-sent
                    # later (a duplicate message cannot run a task twice).
                    raise PublishError(items, exc) from exc
        except (KombuError, OSError) as exc:     # no connection to be had from the pool
            raise PublishError(items, exc) from exc

    def _send(self, producer, routed: list[tuple[Dispatch, str]]) -> None:
        messages = Messages(self.app, self.config, 2 * len(routed))
        conf = self.app.conf
        # Only plain JSON messages, with no signal receiver to tell of each one, go
        # straight into Redis (their task-sent events after them); signing, compression
        # and publish signals take kombu.
        plain = conf.task_serializer == "json" and not conf.task_compression
        quiet = not (signals.before_task_publish.receivers
                     or signals.after_task_publish.receivers)
        if plain and quiet and redis_lists.takes(producer.channel):
            redis_lists.push(producer.channel, messages, routed,
                             self._tell_sent if conf.task_send_sent_event else None)
            return
        send = KombuSender(self, producer, messages, plain)
        with _batched(producer):
            for item, queue in routed:
                send(item, queue)

    def _queue(self, item: Dispatch) -> str:
        # The embedded worker is the only one: it serves every queue, so a task routed
        # to a queue no `qflow worker -Q` would serve here still runs.
        if self.config.embedded:
            return self.config.default_queue
        return item.queue or self.config.default_queue

    def _declare(self, producer, queues: Iterable[str]) -> None:
        """Each queue once (kombu remembers it per connection): on RabbitMQ a message to a
        queue that does not exist yet would be dropped, and the queue must have Celery's
        arguments (x-max-priority) whoever declares it first."""
        for name in sorted(queues):
            producer.maybe_declare(self.app.amqp.queues[name])

    def sent_events(self):
        if self._events is None:
            self._events = self.app.events.Dispatcher(enabled=False)
        return self._events

    def _tell_sent(self, pushed: list[tuple[dict, str]]) -> None:
        """The task-sent events of messages pushed straight into Redis, in one round
        trip (:mod:`qflow.broker.task_events`), as this process's dispatcher names them."""
        task_events.sender(self.app, None).many(
            "task-sent", [sent_event(headers, queue) for headers, queue in pushed])


def sent_event(headers: dict, queue: str) -> dict:
    """The fields of a message's task-sent event, as Celery's publish sends them."""
    return {"uuid": headers["id"], "root_id": headers["root_id"],
            "parent_id": headers["parent_id"], "name": EXECUTE, "args": headers["argsrepr"],
            "kwargs": "{}", "retries": 0, "eta": headers["eta"], "expires": None,
            "queue": queue, "exchange": "", "routing_key": queue}


class KombuSender:
    """One batch's messages through kombu's producer (any transport; its publish batch
    on Redis), with Celery's signals and task-sent events."""

    def __init__(self, publisher: Publisher, producer, messages: Messages, plain: bool):
        conf = publisher.app.conf
        self.producer = producer
        self.messages = messages
        self.plain = plain                      # serialised here, not by kombu's registry
        self.serializer = conf.task_serializer
        self.compression = conf.task_compression
        self.delivery_mode = conf.task_default_delivery_mode
        self.signals = bool(signals.before_task_publish.receivers
                            or signals.after_task_publish.receivers)
        self.events = publisher.sent_events() if conf.task_send_sent_event else None

    def __call__(self, item: Dispatch, queue: str) -> None:
        task_id = next(self.messages.ids)
        headers = self.messages.headers(item, task_id)
        body = self.messages.body(item)
        properties = {"correlation_id": task_id, "reply_to": ""}
        if self.signals:
            signals.before_task_publish.send(
                sender=EXECUTE, body=body, exchange="", routing_key=queue, declare=[],
                headers=headers, properties=properties, retry_policy={})
        priority = self.messages.priority(item)
        extra: dict = {} if priority is None else {"priority": priority}
        if self.plain:
            payload = json.dumps(body)
            extra.update(content_type="application/json", content_encoding="utf-8")
        else:
            payload = body
        self.producer.publish(
            payload, exchange="", routing_key=queue, serializer=self.serializer,
            compression=self.compression, delivery_mode=self.delivery_mode,
            headers=headers, retry=False, **properties, **extra)
        if self.signals:
            signals.after_task_publish.send(sender=EXECUTE, body=body, headers=headers,
                                            exchange="", routing_key=queue)
        if self.events is not None:
            self.events.publish("task-sent", sent_event(headers, queue), self.producer)
