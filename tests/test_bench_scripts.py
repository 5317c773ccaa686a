"""The benchmark scripts' short forms, run as a user runs them: each finishes and prints its
figures. Each script starts its own redis-server and PostgreSQL (tests/servers.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import servers
from conftest import ROOT, _missing

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def _servers_installed() -> None:
    if shutil.which("redis-server") is None:
        _missing(servers.ServerMissing("redis-server is not installed"))
    if servers._pg_bin("initdb") is None or servers._pg_bin("pg_ctl") is None:
        _missing(servers.ServerMissing("PostgreSQL server binaries are not installed"))


def test_big_run_quick_runs_a_map_of_two_thousand_to_the_end_and_prints_its_figures(tmp_path):
    _servers_installed()
    out = tmp_path / "big_run.json"
    done = subprocess.run([sys.executable, "bench/big_run.py", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    row = json.loads(out.read_text())["rows"][0]
    assert row["n"] == 2000 and row["tasks_total"] >= 2000, row
    assert f"N=2,000: run succeeded, all {row['tasks_total']:,} tasks succeeded" in text
    assert "tasks/s overall" in text and "Redis: used_memory_peak" in text, text
    assert 0 < row["redis_used_memory_peak_bytes"] < 100e6
    assert row["pg"]["qflow_tasks"] > 0 and row["worker_processes"] >= 4, row
    # Every look answered at least once during the run, and its timings are printed.
    for name, look in row["looks"].items():
        assert look["count"] >= 1 and not look["errors"], (name, look)
        assert any(line.strip().startswith(name) and "median" in line and "budget" in line
                   for line in text.splitlines()), (name, text)
