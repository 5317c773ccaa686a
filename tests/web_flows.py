"""Workflows the browser tests of the web console run on real workers."""
from __future__ import annotations

import os
import time

from qflow import Asset, Secret, task, workflow


@task
def step(value: int, seconds: float) -> int:
    time.sleep(seconds)
    return value + 1


@task
def flaky(marker: str) -> str:
    """Fails the first time it runs (no marker file yet), succeeds afterwards."""
    print("flaky attempt printing to its log")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails on purpose")
    return "second time lucky"


@task
def echo(note: str) -> str:
    """Prints ``note`` to its log, then fails with it as the error."""
    print(f"log line: {note}")
    raise ValueError(note)


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def element(i: int) -> int:
    return i * 2


@task
def items(n: int) -> list:
    return list(range(n))


@workflow
def web_steps(count: int = 3, seconds: float = 1.0, label: str = "steps"):
    value = step(0, seconds)
    for _ in range(count - 1):
        value = step(value, seconds)


@task
def after(value):
    return value


@workflow
def web_flaky(marker: str):
    after(flaky(marker))


@workflow
def web_echo(note: str = "hello"):
    echo(note)


@workflow
def web_sleepy(seconds: float = 120.0):
    nap(seconds)


@workflow
def web_map(n: int = 30):
    element.map(items(n))


@task
def use_token(token: str) -> int:
    return len(token)


@workflow
def web_secret(token: Secret[str], rounds: int = 1):
    use_token(token)


web_sales = Asset("web.sales")


@task(outlets=[web_sales])
def publish_sales(n: int) -> int:
    return n


@workflow
def web_publish(n: int = 1):
    publish_sales(n)


@workflow(schedule=[web_sales])
def web_report():
    after(1)


@task
def gate(path: str) -> str:
    """Runs until a file at ``path`` exists: the test decides when it ends."""
    while not os.path.exists(path):
        time.sleep(0.05)
    return path


@task(pool="web_single")
def hold_slot(path: str) -> str:
    """Holds the one slot of pool web_single until a file at ``path`` exists."""
    return gate.fn(path)


@task(pool="web_single")
def held(value: str) -> str:
    return value


@workflow
def web_held(marker: str):
    hold_slot(marker + ".slot")
    held(gate(marker + ".gate"))
