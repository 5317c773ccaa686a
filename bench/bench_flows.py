"""The qflow workflows the benchmarks run (workers load this file with -A)."""
from __future__ import annotations

from qflow import task, workflow


@task
def noop(x: int = 0) -> int:
    """The no-op every benchmark runs: returns a small int."""
    return x + 1


@task
def add(a: int, b: int) -> int:
    return a + b


@workflow
def fanout(n: int = 1000):
    """``n`` independent no-op tasks."""
    for i in range(n):
        noop(i)


@workflow
def chain(n: int = 500):
    """``n`` no-op tasks, each taking the previous one's value."""
    value = noop(0)
    for _ in range(n - 1):
        value = noop(value)


@workflow
def diamond(x: int = 1):
    """a -> (b, c) -> d, values flowing along the edges."""
    a = noop(x)
    add(noop(a), noop(a))


@workflow
def grid(n: int = 1000, width: int = 100):
    """For the expansion benchmark: ``n`` nodes in layers of ``width``; every node after
    the first layer takes the values of two nodes of the layer above (about 2n edges)."""
    layer = [noop(i) for i in range(min(width, n))]
    left = n - len(layer)
    while left > 0:
        k = min(width, left)
        layer = [add(layer[j % len(layer)], layer[(j + 1) % len(layer)]) for j in range(k)]
        left -= k


@workflow
def mapped(n: int = 1000):
    """For the expansion benchmark: a map over a list of ``n`` numbers made by the body,
    expanded into ``n`` elements when the run starts."""
    noop.map(list(range(n)))
