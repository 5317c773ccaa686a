"""The chaos soak's workflow (workers load this file with -A): a root fans out into
chains, some links of which fail their first attempt and are retried, each chain ends in a
task of the ``chaos`` pool, groups of those are gathered and the gathers summed.

Every task first appends one line "run node attempt pid" to a ledger outside qflow (a
file per process, written with one O_APPEND write), so the soak can tell which attempts
really ran, whatever qflow's DB says.
"""
from __future__ import annotations

import os
import time

from qflow import context, task, workflow

POOL = "chaos"


class Flaky(Exception):
    """What a flaky link raises on its first attempt."""


def _enter(ledger: str, pause: float) -> int:
    """Write this attempt to the ledger, then take ``pause`` seconds; returns the attempt."""
    ctx = context()
    line = f"{ctx.run_id} {ctx.node} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.path.join(ledger, f"ledger-{os.getpid()}.log"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    if pause:
        time.sleep(pause)
    return ctx.attempt


@task
def origin(ledger: str, pause: float) -> int:
    _enter(ledger, pause)
    return 0


@task
def link(ledger: str, pause: float, value: int) -> int:
    _enter(ledger, pause)
    return value + 1


@task(retries=3, retry_delay=0.5)
def flaky(ledger: str, pause: float, value: int) -> int:
    """A link whose first attempt fails: a later one (a retry, or a redelivery after its
    worker was lost) succeeds."""
    if _enter(ledger, pause) == 1:
        raise Flaky("the first attempt of a flaky link fails")
    return value + 1


@task(pool=POOL)
def pooled(ledger: str, pause: float, value: int) -> int:
    _enter(ledger, pause)
    return value


@task
def gather(ledger: str, pause: float, values: list) -> int:
    _enter(ledger, pause)
    return sum(values)


@task
def sensor(ledger: str, path: str, limit: float = 600.0) -> int:
    """Waits until ``path`` exists, holding the run open: the soak creates it when its
    faults are over, so that they all hit an unfinished run however fast it goes."""
    _enter(ledger, 0.0)
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {limit:g}s")
        time.sleep(0.2)
    return 0


def size(width: int, length: int, group: int, hold: str = "") -> int:
    """How many tasks a chaos run of this shape has."""
    return 1 + width * (length + 1) + -(-width // group) + bool(hold) + 1


def expected_total(width: int, length: int) -> int:
    """The final gather's value: every chain adds one per link."""
    return width * length


@workflow
def chaos(ledger: str, width: int = 100, length: int = 19, group: int = 10,
          flaky_every: int = 10, pause: float = 0.0, hold: str = ""):
    """``size(width, length, group, hold)`` tasks: 2,012 with the defaults. With
    ``hold``, a sensor waits for that file before the last gather can run."""
    root = origin(ledger, pause)
    ends = []
    for i in range(width):
        value = root
        for j in range(length):
            kind = flaky if (i * length + j) % flaky_every == flaky_every - 1 else link
            value = kind(ledger, pause, value)
        ends.append(pooled(ledger, pause, value))
    sums = [gather(ledger, pause, ends[k:k + group]) for k in range(0, width, group)]
    if hold:
        sums.append(sensor(ledger, hold))
    gather(ledger, pause, sums)
