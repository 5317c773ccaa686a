"""A Python task run inside a container image: ``@task(isolation="container", image=...)``.

The image has qflow and the workflow code installed. The worker writes the call (task,
arguments, run context) as ``input.json`` into a directory mounted at ``/qflow-io``,
runs ``python3 -m qflow.worker.inside /qflow-io`` there, and reads ``outcome.json`` back.
The container never talks to the results DB or the broker, so it gets no credentials:
its environment holds only what the task's ``env=`` names.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import inspect
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

# Not under /qflow: ``python -m`` puts the working directory (often /) first on
# sys.path, where a /qflow directory would shadow the qflow package.
IO_DIR = "/qflow-io"


def call(runtime, spec, tdef, args: list, kwargs: dict, ctx, app: str,
         labels: dict[str, str], timeout: float | None, grace: float,
         tick: Callable[[], bool] | None, python: str = "python3") -> Any:
    """Run ``tdef`` with these arguments in a container from ``spec.image``."""
    from qflow.worker import container, isolation

    with container.shared_dir("qflow-io-") as io_dir:
        call_info = {"app": _portable(app), "task": tdef.key, "module": tdef.fn.__module__,
                     "args": args, "kwargs": kwargs, "context": _context_json(ctx)}
        (Path(io_dir) / "input.json").write_text(json.dumps(call_info))
        spec = replace(spec, volumes={**spec.volumes, io_dir: IO_DIR})
        container.run(runtime, spec, [python, "-m", "qflow.worker.inside", IO_DIR], labels,
                      timeout, grace, tick)
        outcome_file = Path(io_dir) / "outcome.json"
        if not outcome_file.is_file():
            raise container.ContainerFailed("the task's container ended without an outcome "
                                            f"(is qflow installed in {spec.image!r}?)")
        outcome = json.loads(outcome_file.read_text())
    if "error" in outcome:
        raise isolation.rebuild(outcome["error"])
    return outcome["value"]


def _portable(app: str) -> str:
    """The worker's app targets, file paths made absolute (the image's working directory
    is not the worker's)."""
    parts = [p.strip() for p in app.split(",") if p.strip()]
    return ",".join(os.path.abspath(p) if os.path.exists(p) else p for p in parts)


def _context_json(ctx) -> dict:
    data = asdict(ctx)
    if data.get("logical_time") is not None:
        data["logical_time"] = data["logical_time"].isoformat()
    return data


# -- inside the container ----------------------------------------------------------------------
def main(io_dir: str) -> int:
    """Load the app, call the task, write ``outcome.json``; exit 0 whenever it is written
    (the task's own error travels in it)."""
    from qflow.worker import isolation

    call_info = json.loads((Path(io_dir) / "input.json").read_text())
    try:
        report = {"value": _call(call_info)}
    except Exception as exc:  # noqa: BLE001 - the task's error is its outcome
        report = {"error": isolation.error_report(exc)}
    text = isolation.report_json(report)
    sys.stdout.flush()
    (Path(io_dir) / "outcome.json").write_text(text)
    return 0


def _call(call_info: dict) -> Any:
    from qflow import authoring, loader
    from qflow.context import TaskContext, _current

    if call_info["app"]:
        loader.load_app(call_info["app"])
    else:
        importlib.import_module(call_info["module"])
    tdef = authoring.find_task(call_info["task"])
    if tdef is None:
        raise LookupError(f"task {call_info['task']!r} is not defined in this image")
    ctx = dict(call_info["context"])
    if ctx.get("logical_time"):
        ctx["logical_time"] = dt.datetime.fromisoformat(ctx["logical_time"])
    _current.set(TaskContext(**ctx))
    value = tdef.fn(*call_info["args"], **call_info["kwargs"])
    return asyncio.run(value) if inspect.iscoroutine(value) else value


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else IO_DIR))
