"""The chaos soak, short form: a run of 2,013 tasks (fan-out, chains, retried flaky
links, a pool, fan-in, a sensor holding the run open until the faults are over) on three
`qflow worker -c 2` processes with private Redis and PostgreSQL, while a seeded schedule
kills workers and restarts both servers. Every task must run, none more than once
without an attempt row saying why, the run must succeed with the right value and
`qflow doctor` must find nothing. The long form is
``python -m tests.chaos --minutes 10 --seed N``; QFLOW_CHAOS_SEED picks another seed."""
from __future__ import annotations

import datetime as dt
import os
from types import SimpleNamespace

import pytest
import servers
from chaos.audit import Findings, check_task
from chaos.chaos_flows import size
from chaos.faults import KINDS, which_missing
from chaos.soak import Settings, soak
from conftest import _missing

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_a_run_of_two_thousand_tasks_survives_killed_workers_and_restarted_servers(
        tmp_path):
    missing = which_missing()
    if missing:
        _missing(servers.ServerMissing(missing))
    seed = int(os.environ.get("QFLOW_CHAOS_SEED", "1"))
    report = soak(Settings(seed=seed, faults=6, window=30.0, workers=3, hold=True), tmp_path)
    print(report.text())
    assert report.failures() == [], report.text()
    assert {f.kind for f in report.injected} == set(KINDS), report.text()
    assert report.findings.runs and set(report.findings.runs.values()) == {"succeeded"}
    assert report.findings.tasks == size(width=100, length=19, group=10, hold="on") >= 2000


# -- the audit itself, on made-up rows: it must catch what the soak is there to catch ------
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def task_row(attempts: int, state: str = "succeeded"):
    return SimpleNamespace(run_id="r1", node="link__3", state=state, attempts=attempts,
                           error=None)


def attempt_row(cause: str | None, worker: str = "w1@h", seconds: float = 2.0):
    return SimpleNamespace(state="failed" if cause else "succeeded", error_type=cause,
                           worker=worker, started_at=T0,
                           finished_at=T0 + dt.timedelta(seconds=seconds))


def problems_of(began: list[int], rows: dict, kills: dict | None = None,
                last: int | None = None) -> list[str]:
    """What the audit says of one task whose attempts ``began`` (the ledger), with these
    attempt rows and kills, and whose last attempt is ``last`` (default: the ledger's)."""
    found = Findings()
    check_task(task_row(last or max(began)), began, rows, found, kills or {})
    return found.problems


def test_the_audit_accepts_a_retry_and_a_rerun_after_a_worker_it_killed():
    assert problems_of([1, 2], {1: attempt_row("Flaky"), 2: attempt_row(None)}) == []
    killed = {"w1": [T0 + dt.timedelta(seconds=1)]}
    assert problems_of([1, 2], {1: attempt_row("WorkerLost"), 2: attempt_row(None)},
                       killed) == []


def test_the_audit_flags_reruns_without_a_true_cause_and_an_attempt_run_twice():
    assert "row says nothing" in " ".join(problems_of([1, 2], {2: attempt_row(None)}))
    alive = problems_of([1, 2], {1: attempt_row("WorkerLost"), 2: attempt_row(None)},
                        {"w2": [T0 + dt.timedelta(seconds=1)]})
    assert len(alive) == 1 and "was not killed while it ran" in alive[0]
    twice = problems_of([1, 1], {1: attempt_row(None)})
    assert len(twice) == 1 and twice[0].startswith("r1/link__3: attempt 1 began 2 times")
    lost = problems_of([1], {1: attempt_row("Flaky"), 2: attempt_row(None)}, last=2)
    assert len(lost) == 1 and "attempt 2 (its last) never began" in lost[0]
