"""Workflows of the result-store and encryption tests (tests/test_results.py, test_box.py)."""
from __future__ import annotations

import logging
import os

from qflow import Secret, context, task, workflow

log = logging.getLogger("result_flows")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@task
def shout(token: str) -> dict:
    """Prints, logs and returns the secret it was given (the real value)."""
    assert str(context().params["token"]) == "***"
    print(f"printed {token}")
    log.warning("logged %s", token)
    return {"value": token, "pid": os.getpid()}


@task
def echo(value: dict) -> str:
    return value["value"]


@task(retries=0)
def explode(token: str) -> None:
    raise ValueError(f"raised {token}")


@workflow
def box(token: Secret[str]):
    echo(shout(token))
    explode(token)


@task(queue="big_a")
def make_big(mb: int) -> str:
    return "x" * (mb * 1024 * 1024)


@task(queue="big_b")
def measure(value: str) -> dict:
    return {"length": len(value), "peak_mb": peak_rss_mb(), "pid": os.getpid()}


@workflow
def big(mb: int = 200):
    measure(make_big(mb))


@task(serializer="pickle")
def make_set(n: int) -> set:
    return set(range(n))


@task
def total(values: set) -> int:
    return sum(values)


@workflow
def pickled(n: int = 10):
    total(make_set(n))


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task
def add_up(xs: list[int]) -> int:
    return sum(xs)


@workflow
def mapped_squares(n: int = 5):
    add_up(square.map(numbers(n)))
