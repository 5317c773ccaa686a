"""Workflows the tests run, in process and on real workers (loaded with -A tests/flows.py)."""
from __future__ import annotations

import os
import time

from qflow import context, task, workflow


@task
def const(value):
    return value


@task
def add(*values):
    return sum(values)


@task
def join(values: list) -> list:
    return list(values)


@task
def slow(value, seconds: float = 0.05):
    time.sleep(seconds)
    return value


@task
def boom(message: str = "boom"):
    raise ValueError(message)


@task
def record(marker: str, values: list) -> int:
    """Appends one line per execution to ``marker``: the count lives outside qflow's DB."""
    with open(marker, "a") as fh:
        fh.write(f"{context().run_id} {context().node} {len(values)}\n")
    return len(values)


@task
def not_json():
    return {1, 2, 3}


@task
def big(n: int):
    return "x" * n


@task
def where() -> dict:
    ctx = context()
    return {"run_id": ctx.run_id, "node": ctx.node, "attempt": ctx.attempt, "pid": os.getpid()}


@workflow
def diamond(x: int = 1):
    a = const(x)
    b = add(a, 10)
    c = add(a, 20)
    add(b, c)


@workflow
def fan(width: int = 10):
    join([add(const(i), 1) for i in range(width)])


@workflow
def chain(length: int = 10):
    value = const(0)
    for _ in range(length):
        value = add(value, 1)


@workflow
def fan_in(marker: str, width: int = 50):
    record(marker, [slow(i, 0.0) for i in range(width)])


@workflow
def failing():
    a = const(1)
    b = boom(a)
    add(b, 1)
    add(a, 2)


@workflow
def ordered():
    first = where()
    second = where()
    first >> second


@workflow
def bad_output(n: int = 2_000_000):
    not_json()
    big(n)
