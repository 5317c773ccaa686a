"""Concurrency limits on real workers: pools across worker processes, max_active_runs."""
from __future__ import annotations

import subprocess

import flows  # noqa: F401

from qflow.store import read


def max_overlap(intervals: list[list[float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    depth = deepest = 0
    for _, step in edges:
        depth += step
        deepest = max(deepest, depth)
    return deepest


def test_a_pool_of_three_slots_never_runs_more_than_three_tasks_at_once(cluster):
    out = subprocess.run(["qflow", "pools", "set", "warehouse", "3"], env=cluster.env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rt = cluster.runtime()
    run_id = rt.engine.trigger("pooled", {"n": 30, "seconds": 0.3})
    assert rt.engine.wait(run_id, timeout=120)["state"] == "succeeded"
    with rt.store.read() as conn:
        intervals = read.results(conn, run_id, ["join"])["join"]
    assert len(intervals) == 30
    assert max_overlap(intervals) == 3          # 4 worker processes, 3 slots
    listing = subprocess.run(["qflow", "pools", "--json"], env=cluster.env,
                             capture_output=True, text=True).stdout
    assert '"used": 0' in listing and '"waiting": 0' in listing


def test_max_active_runs_makes_a_second_run_wait_then_run(cluster):
    rt = cluster.runtime()
    first = rt.engine.trigger("one_at_a_time", {"seconds": 1.0})
    second = rt.engine.trigger("one_at_a_time", {"seconds": 0.1})
    for run_id in (first, second):
        assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    with rt.store.read() as conn:
        (_, first_end), = read.results(conn, first, ["timed"]).values()
        (second_start, _), = read.results(conn, second, ["timed"]).values()
    assert second_start >= first_end
