"""The chaos soak, short form: a run of 2,013 tasks (fan-out, chains, retried flaky
links, a pool, fan-in, a sensor holding the run open until the faults are over) on three
`qflow worker -c 2` processes with private Redis and PostgreSQL, while a seeded schedule
kills workers and restarts both servers. Every task must run, none more than once
without an attempt row saying why, the run must succeed with the right value and
`qflow doctor` must find nothing. The long form is
``python -m tests.chaos --minutes 10 --seed N``; QFLOW_CHAOS_SEED picks another seed."""
from __future__ import annotations

import os

import pytest
import servers
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
