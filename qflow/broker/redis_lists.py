"""qflow's messages straight into a Redis broker's queue lists: one LPUSH of up to 1,000
messages per queue and priority level, a few of them per round trip, instead of kombu's
publish of each message (building its envelope, routing it, one Redis command each: most
of a publish's cost, bench/publish.py).

Each message is written as kombu's Redis transport writes one
(``kombu.transport.redis.Channel._put``): the same JSON envelope (body in base64,
properties with the delivery info and a delivery tag) in the same list per queue and
priority level (the channel's own ``_q_for_pri``, so the transport's ``sep``,
``priority_steps`` and ``global_keyprefix`` apply), pushed in the same order, so that a
stock worker's kombu reads it as its own. tests/test_publish.py compares it with the
message Celery's ``apply_async`` writes.
"""
from __future__ import annotations

import base64
import json
from typing import Callable

PER_COMMAND = 1000     # messages per LPUSH
PER_TRIP = 10          # thousands of messages per pipeline round trip (~11 MB)


def takes(channel) -> bool:
    """Whether ``channel`` is kombu's Redis channel (Sentinel's too) with plain lists: a
    queue declared with an expiry (x-expires) needs a PEXPIRE beside each push, which
    kombu's own publish does."""
    from kombu.transport.redis import Channel

    return isinstance(channel, Channel) and not channel._expires


# The headers that differ between the messages of a batch; the others are written once.
VARYING = ("id", "shadow", "eta", "timelimit", "root_id", "argsrepr")
_text = json.encoder.encode_basestring_ascii       # a str as json.dumps writes it


def _value(value) -> str:
    return _text(value) if isinstance(value, str) else json.dumps(value)


class Envelopes:
    """The text of each message: JSON written from a template, since encoding a whole
    envelope (some 35 keys and values) per message costs more than the rest of the
    publish together."""

    def __init__(self, sample: dict, delivery_mode: int):
        fixed = {k: v for k, v in sample.items() if k not in VARYING}
        self.tail = json.dumps(fixed)[1:]      # '"lang": "py", ... }', closing the object
        self.delivery_mode = int(delivery_mode)

    def __call__(self, headers: dict, body: str, queue: str, priority: int, tag: str) -> str:
        task_id = _text(headers["id"])
        return (
            f'{{"body": "{base64.b64encode(body.encode()).decode()}", '
            f'"content-encoding": "utf-8", "content-type": "application/json", '
            f'"headers": {{"id": {task_id}, "shadow": {_text(headers["shadow"])}, '
            f'"eta": {_value(headers["eta"])}, "timelimit": {_value(headers["timelimit"])}, '
            f'"root_id": {_text(headers["root_id"])}, '
            f'"argsrepr": {_text(headers["argsrepr"])}, {self.tail}, '
            f'"properties": {{"correlation_id": {task_id}, "reply_to": "", '
            f'"delivery_mode": {self.delivery_mode}, "delivery_info": {{"exchange": "", '
            f'"routing_key": {_text(queue)}}}, "priority": {int(priority)}, '
            f'"body_encoding": "base64", "delivery_tag": {_text(tag)}}}}}')


def push(channel, messages, routed: list,
         sent: Callable[[list[tuple[dict, str]]], None] | None = None) -> None:
    """Push ``routed`` (pairs of Dispatch and queue) as messages built by ``messages``
    (a :class:`qflow.broker.publish.Messages`), a round trip per
    ``PER_COMMAND * PER_TRIP`` of them: a million are never all in memory at once.
    ``sent`` is told the (headers, queue) of the messages of each round trip after it."""
    lists: dict[str, list[str]] = {}
    pushed: list[tuple[dict, str]] = []
    envelope = None
    with _client(channel).pipeline(transaction=False) as pipe:
        for item, queue in routed:
            headers = messages.headers(item, next(messages.ids))
            if envelope is None:
                envelope = Envelopes(headers, messages.delivery_mode)
            priority = messages.priority(item)
            body = json.dumps(messages.body(item))
            lists.setdefault(channel._q_for_pri(queue, priority), []).append(
                envelope(headers, body, queue, priority, next(messages.ids)))
            pushed.append((headers, queue))
            if len(pushed) == PER_COMMAND * PER_TRIP:
                _send(pipe, lists, pushed, sent)
        _send(pipe, lists, pushed, sent)


def _client(channel):
    """A Redis client on the channel's connection pool, made once per pool: kombu's
    ``conn_or_acquire`` makes a new one on each call, which copies redis-py's table of
    some 170 reply parsers (a good share of the CPU of publishing one message). A
    channel serves one thread at a time (its producer is taken from a pool), so does its
    client."""
    pool = channel.pool
    found = getattr(channel, "_qflow_client", None)
    if found is None or found.connection_pool is not pool:
        found = channel._qflow_client = channel._create_client()
    return found


def _send(pipe, lists: dict[str, list[str]], pushed: list[tuple[dict, str]],
          sent: Callable[[list[tuple[dict, str]]], None] | None) -> None:
    """One round trip: an LPUSH per list of up to PER_COMMAND messages, oldest first
    (each list's order is the order of the calls, as with a push per message)."""
    for key, values in lists.items():
        for i in range(0, len(values), PER_COMMAND):
            pipe.lpush(key, *values[i:i + PER_COMMAND])
    lists.clear()
    if len(pipe):
        pipe.execute()
    if sent is not None and pushed:
        sent(pushed)
    pushed.clear()
