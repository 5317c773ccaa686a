"""Workflows with container tasks, for tests/test_containers.py (served by real workers).

The images are built locally by the tests (no registry): BUSYBOX holds a static busybox;
PYTHON is an empty root whose /usr, Python installation and this repository are this
host's, mounted read-only (see HOST_PYTHON), so it runs qflow and this file as the worker
does.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from qflow import container, task, workflow

BUSYBOX = "localhost/qflow-test-busybox:1"
PYTHON = "localhost/qflow-test-python:1"
ROOT = Path(__file__).resolve().parent.parent


def _host_python() -> dict[str, str]:
    """Read-only mounts that make the host's Python, its packages and qflow appear at the
    same paths inside the PYTHON image."""
    paths = {"/usr", sys.base_prefix, sys.prefix, str(ROOT)}
    paths = {p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)}
    return {p: f"{p}:ro" for p in sorted(paths)}


HOST_PYTHON = _host_python()

# -- output while it runs, and a JSON result for a Python child ------------------------------
ticker = container(BUSYBOX, ["sh", "-c", "for i in $(seq 1 {ticks}); do echo tick $i; sleep 2; "
                             "done; echo 'not json'; echo '{{\"ticks\": {ticks}}}'"],
                   name="ticker")


@task
def double_ticks(result: dict) -> int:
    return result["ticks"] * 2


@workflow
def box_ticking(ticks: int = 12):
    double_ticks(ticker(ticks=ticks))


# -- a result file, and a placeholder that looks like shell syntax -----------------------------
show_arg = container(BUSYBOX, ["sh", "-c", 'echo "argc=$#"; printf "%s" "$1" > /tmp/seen; '
                               'printf "{{\\"arg\\": \\"%s\\", \\"tmp\\": \\"%s\\"}}" '
                               '"$1" "$(ls /tmp)" > /qflow/out/result.json',
                               "sh", "{value}"], name="show_arg")


@workflow
def box_echoing(value: str = "plain"):
    show_arg(value=value)


# -- failures ------------------------------------------------------------------------------
exit_three = container(BUSYBOX, "sh -c 'echo trying; echo something broke >&2; exit 3'",
                       name="exit_three", retries=1, retry_delay=0)
sleeper = container(BUSYBOX, ["sleep", "{seconds}"], name="sleeper", timeout=3)
no_image = container("localhost/qflow-test-no-such-image:1", ["true"], name="no_image",
                     pull="never", retries=3, retry_delay=0)


@workflow
def box_failing():
    exit_three()


@workflow
def box_overrunning(seconds: int = 300):
    sleeper(seconds=seconds)


@workflow
def box_imageless():
    no_image()


# -- canceled, or its worker killed ---------------------------------------------------------
long_runner = container(BUSYBOX, ["sh", "-c", "echo started; sleep {seconds}; "
                                      "echo '{{\"done\": 1}}'"], name="long_runner")


@workflow
def box_long_running(seconds: int = 300):
    long_runner(seconds=seconds)


# -- a Python task inside the PYTHON image ------------------------------------------------------
@task
def number(n: int) -> int:
    return n


@task(isolation="container", image=PYTHON, volumes=HOST_PYTHON, env={"GREETING": "hi"})
def add_inside(a: int, b: int) -> dict:
    from qflow import context
    print(f"adding {a} and {b} in the container")
    return {"sum": a + b, "env": dict(os.environ), "node": context().node}


@task
def report_sum(result: dict) -> str:
    return f"sum={result['sum']}"


@workflow
def box_adding(a: int = 2, b: int = 3):
    report_sum(add_inside(number(a), number(b)))
