"""Workflows for the fault-injection tests (loaded with tests/flows.py)."""
from __future__ import annotations

import os
import signal
import time

from flows import counted, join

from qflow import context, task, workflow


@task
def hold(pidfile: str, seconds: float) -> int:
    """Writes "pid parent-pid attempt" then sleeps: the test knows whom to kill or stop."""
    with open(pidfile, "a") as fh:
        fh.write(f"{os.getpid()} {os.getppid()} {context().attempt}\n")
    time.sleep(seconds)
    return context().attempt


@task
def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@task
def tick(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@task
def die_once(marker: str, value: int) -> int:
    """Kills its own process on the first attempt (the marker file says it did)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


@task(retries=1, retry_delay=3.0)
def fails_once(marker: str) -> int:
    """Fails its first attempt (the marker file says it did); its retry waits 3 s."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return context().attempt


@workflow
def retried_later(marker: str):
    fails_once(marker)


@workflow
def dies_after_tick(marker: str):
    die_once(marker, tick(0, 0.0))


@workflow
def held(pidfile: str, counter: str, seconds: float = 4.0):
    counted(counter, hold(pidfile, seconds))


@workflow
def suicidal():
    kill_self()


@workflow
def wide(width: int = 200, seconds: float = 0.02):
    join([tick(i, seconds) for i in range(width)])


@task(queue="prio")
def low(marker: str, i: int) -> int:
    with open(marker, "a") as fh:
        fh.write(f"low {i}\n")
    return i


@task(queue="prio", priority=9)
def urgent(marker: str) -> str:
    with open(marker, "a") as fh:
        fh.write("urgent\n")
    return "first"


@workflow
def priorities(marker: str):
    for i in range(20):
        low(marker, i)
    urgent(marker)
