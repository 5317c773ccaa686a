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
def slow_fan(width: int = 10, seconds: float = 0.05):
    join([slow(i, seconds) for i in range(width)])


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


# -- failure handling -------------------------------------------------------------------
from qflow import Fail  # noqa: E402
from qflow.core.states import TRIGGER_RULES  # noqa: E402


def _bump(path: str) -> int:
    """Count calls in a file (outside qflow's DB); returns this call's number."""
    with open(path, "a") as fh:
        fh.write("x")
    with open(path) as fh:
        return len(fh.read())


@task(retries=3, retry_delay=0.5, retry_backoff=2.0)
def flaky(counter: str, failures: int) -> int:
    n = _bump(counter)
    if n <= failures:
        raise ConnectionError(f"attempt {n} failed")
    return n


@task(retries=3, retry_delay=0.1)
def give_up(counter: str):
    _bump(counter)
    raise Fail("bad input, retrying will not help")


@task(retries=3, retry_delay=0.1, retry_on=(ConnectionError,))
def picky(counter: str):
    _bump(counter)
    raise KeyError("not retried: only ConnectionError is")


@task(timeout=1)
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(timeout=1)
def stubborn(seconds: float) -> str:
    """Swallows its timeout: only the hard time limit stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except BaseException:  # noqa: BLE001 - deliberately ignores the alarm
            pass
    return "never"


@task
def needs_fix(counter: str, flag: str, value) -> int:
    _bump(counter)
    if not os.path.exists(flag):
        raise RuntimeError("not fixed yet")
    return value + 1


@task
def counted(counter: str, value: int) -> int:
    _bump(counter)
    return value


@task
def long_task(pidfile: str, seconds: float = 60) -> str:
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "finished"


@task.branch
def choose(value: int) -> str:
    return "big_path" if value > 10 else "small_path"


@task
def big_path(value: int) -> str:
    return f"big {value}"


@task
def small_path(value: int) -> str:
    return f"small {value}"


@task(trigger_rule="none_failed_min_one_success")
def merge_paths(*values) -> list:
    return [v for v in values if v is not None]


def _rule_task(rule: str):
    def after() -> str:
        return rule
    after.__name__ = after.__qualname__ = f"after_{rule}"
    return task(trigger_rule=rule)(after)


RULE_TASKS = {rule: _rule_task(rule) for rule in TRIGGER_RULES}
globals().update({t.fn.__name__: t for t in RULE_TASKS.values()})


@workflow
def retrying(counter: str, failures: int = 2):
    flaky(counter, failures)


@workflow
def hopeless(counter: str, picky_counter: str):
    give_up(counter)
    picky(picky_counter)


@workflow
def timing_out(seconds: float = 30):
    sleepy(seconds)


@workflow
def ignoring_timeout(seconds: float = 30):
    stubborn(seconds)


@workflow
def fixable(upstream_counter: str, flag: str):
    first = counted(upstream_counter, 1)
    second = needs_fix(upstream_counter + ".fix", flag, first)
    add(second, 1)


@workflow
def cancelable(pidfile: str):
    long_task(pidfile) >> const("after")


@workflow
def branching(value: int = 5):
    picked = choose(value)
    b, s = big_path(value), small_path(value)
    picked >> [b, s]
    merge_paths(b, s)
    slow(b, 0.0) >> const("after big")


@workflow
def rules():
    """One succeeded and one failed parent under every trigger rule."""
    ok, bad = const(1), boom()
    for rule_task in RULE_TASKS.values():
        [ok, bad] >> rule_task()


@workflow(fail_fast=True)
def fast_failing():
    boom() >> const("never")
    slow(1, 0.5) >> const("after slow")


# -- alerts -------------------------------------------------------------------------------
def note(event) -> None:
    """An alert callback: appends the event to the file named by the run's `notes`."""
    with open(event.params["notes"], "a") as fh:
        fh.write(f"{event.kind} {event.node} {event.error}\n")


def broken_callback(event) -> None:
    raise RuntimeError("a bug in an alert callback")


@task(retries=1, retry_delay=0.1, on_failure=note, on_retry=note, on_success=note)
def alerting(notes: str):
    raise ValueError("disk full")


@task(on_success=note)
def fine(notes: str) -> int:
    return 1


@workflow(on_failure=note, on_success=broken_callback)
def alarming(notes: str):
    alerting(notes)
    fine(notes)


@workflow(on_success=broken_callback)
def calm(notes: str):
    fine(notes)


# -- seeing what runs ---------------------------------------------------------------------
import logging  # noqa: E402

chatty_log = logging.getLogger("flows.chatty")


@task(retries=1, retry_delay=0.1)
def chatty(lines: int = 2, pause: float = 0.05) -> int:
    """Prints and logs, naming its node and attempt; the first attempt fails."""
    ctx = context()
    for i in range(lines):
        print(f"{ctx.node} print {i} of attempt {ctx.attempt}")
        time.sleep(pause / max(lines, 1))
    chatty_log.info("%s info of attempt %s", ctx.node, ctx.attempt)
    chatty_log.warning("%s warning of attempt %s", ctx.node, ctx.attempt)
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")
    return ctx.attempt


@workflow
def chatter(width: int = 2, lines: int = 2):
    join([chatty(lines) for _ in range(width)])


@workflow
def dozing(seconds: float = 1.0):
    const(slow(1, seconds))


# -- dynamic mapping ------------------------------------------------------------------------
@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task(retries=0)
def scale(x: int, factor: int, offset: int = 0, fail_on: int = -1) -> int:
    if x == fail_on:
        raise ValueError(f"cannot scale {x}")
    return x * factor + offset


@task
def total_of(values: list[int]) -> int:
    return sum(values)


@workflow
def mapped(n: int = 5, factor: int = 10, fail_on: int = -1):
    items = numbers(n)
    offset = const(1)
    total_of(scale.map(items, factor, offset=offset, fail_on=fail_on))


@workflow
def mapped_params(values: list[int] = [1, 2, 3]):
    join(scale.map(values, 2))
    join(scale.map([7, 8], 3))


# -- concurrency limits -------------------------------------------------------------------
@task
def timed(i: int, seconds: float) -> list[float]:
    """Returns when it ran: [start, end] (epoch seconds)."""
    start = time.time()
    time.sleep(seconds)
    return [start, time.time()]


@task(pool="warehouse")
def load_part(i: int, seconds: float) -> list[float]:
    return timed.fn(i, seconds)


@workflow
def pooled(n: int = 30, seconds: float = 0.2):
    join([load_part(i, seconds) for i in range(n)])


@workflow(max_active_tasks=2)
def two_at_a_time(n: int = 6, seconds: float = 0.2):
    join([timed(i, seconds) for i in range(n)])


@workflow(max_active_runs=1)
def one_at_a_time(seconds: float = 0.5):
    timed(0, seconds)


# -- async, subprocess and shell tasks ------------------------------------------------------
import asyncio  # noqa: E402

from qflow import shell  # noqa: E402


@task
async def nap(i: int, seconds: float) -> list:
    start = time.time()
    await asyncio.sleep(seconds)
    print(f"nap {i} done")
    return [i, start, time.time(), os.getpid()]


@workflow
def napping(n: int = 200, seconds: float = 0.5):
    join([nap(i, seconds) for i in range(n)])


@task(isolation="subprocess")
def crash(code: int) -> None:
    print("about to exit")
    os._exit(code)


@task(isolation="subprocess")
def isolated(x: int) -> dict:
    print("in the child")
    return {"pid": os.getpid(), "parent": os.getppid(), "double": x * 2}


@task(isolation="subprocess", retries=1, retry_on=(KeyError,))
def isolated_error(counter: str) -> None:
    with open(counter, "a") as fh:
        fh.write("x")
    raise KeyError("missing key")


@workflow
def crashing(code: int = 1):
    crash(code) >> const("after")
    isolated(21)


@workflow
def isolated_errors(counter: str):
    isolated_error(counter)


echo_words = shell("echo {greeting}, {name} && echo to-stderr >&2", name="echo_words")
failing_command = shell("echo partial output; ls /no/such/dir", name="failing_command")


@workflow
def shelling(name: str = "world"):
    echo_words(greeting="hello", name=name)
    failing_command()


# -- a task that waits for the test -----------------------------------------------------
@task
def gated(path: str) -> str:
    """Runs until the file ``path`` exists: the test decides when it ends."""
    while not os.path.exists(path):
        time.sleep(0.05)
    return path


@workflow
def gate(path: str):
    const(gated(path))
