"""Live views of a run: the progress of `run` / `trigger --wait`, and `status --watch`.

On a terminal both redraw in place (and use colours unless NO_COLOR is set); elsewhere
(a pipe, a CI log) they print plain lines, one per change, that read well in a file.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections import Counter
from typing import Any, TextIO

import click

from qflow.cli import render, timing
from qflow.core.states import TERMINAL
from qflow.errors import UserError
from qflow.store import Store, observe, read

DETAIL_LIMIT = 200           # above this many tasks, progress reads counts, not every row
CLEAR_LINE = "\r\x1b[2K"
CLEAR_SCREEN = "\x1b[H\x1b[2J"
NOTEWORTHY = ("running", "retrying", "failed", "upstream_failed", "queued", "canceled")


def use_color(stream: TextIO) -> bool:
    return _isatty(stream) and not os.environ.get("NO_COLOR")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """The ``on_poll`` callback of :meth:`Engine.wait`: prints what changed in the run.

    A terminal gets a line per finished task and one status line redrawn in place (tasks
    done/total, the running ones with their worker, elapsed); other outputs get one plain
    line per task state change, e.g. ``[  1.02s] 3/7 load: succeeded``.
    """

    def __init__(self, store: Store, run_id: str, stream: TextIO | None = None,
                 tty: bool | None = None):
        self.store, self.run_id = store, run_id
        self.stream = stream or click.get_text_stream("stdout")
        self.tty = _isatty(self.stream) if tty is None else tty
        self.color = self.tty and not os.environ.get("NO_COLOR")
        self.started = time.monotonic()
        self.seen: dict[str, str] = {}
        self.status = ""

    def __call__(self, run: dict[str, Any]) -> None:
        detailed = run["tasks_total"] <= DETAIL_LIMIT
        with self.store.read() as conn:
            tasks = read.task_rows(conn, self.run_id) if detailed else []
            counts = observe.state_counts(conn, self.run_id) if not detailed else None
            running = observe.running(conn, self.run_id) if not detailed else None
        done = sum(t["state"] in TERMINAL for t in tasks) if detailed else run["tasks_done"]
        stamp = f"[{time.monotonic() - self.started:6.2f}s] {done}/{run['tasks_total']}"
        for t in self._changed(tasks):
            err = f"  {t['error']}" if t["error"] and t["state"] != "running" else ""
            where = f" on {t['worker']}" if t["state"] == "running" and t["worker"] else ""
            self._print(f"{stamp} {t['node']}: "
                        f"{render.paint(t['state'], t['state'], self.color)}{where}{err}")
        counts = counts if counts is not None else Counter(t["state"] for t in tasks)
        if not detailed and not self.tty and self.seen.get("") != stamp.split()[1]:
            self.seen[""] = stamp.split()[1]
            self._print(f"{stamp} tasks done{_counts(counts)}")
        if self.tty:
            busy = running if running is not None else [t for t in tasks
                                                        if t["state"] == "running"]
            self._draw(f"{stamp} done{_counts(counts)}{_running(busy)}")

    def _changed(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for t in tasks:
            if self.seen.get(t["node"]) != t["state"] and t["state"] != "pending":
                self.seen[t["node"]] = t["state"]
                if not self.tty or t["state"] not in ("queued", "running"):
                    out.append(t)
        return out

    def _print(self, line: str) -> None:
        if self.tty and self.status:
            self.stream.write(CLEAR_LINE)
        self.stream.write(line + "\n")
        if self.tty and self.status:
            self.stream.write(self.status)
        self.stream.flush()

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        self.status = line if len(line) < width else line[:max(width - 2, 10)] + "…"
        self.stream.write(CLEAR_LINE + self.status)
        self.stream.flush()

    def close(self) -> None:
        """Remove the status line (the caller prints its summary next)."""
        if self.tty and self.status:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.status = ""


def _counts(counts: dict[str, int]) -> str:
    shown = [f"{counts[s]} {s}" for s in NOTEWORTHY if counts.get(s)]
    return f" ({', '.join(shown)})" if shown else ""


def _running(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return ""
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    names = [f"{t['node']} ({(t['worker'] or '?').split('@')[0]} "
             f"{timing.seconds(t['started_at'], now) or 0:.1f}s)" for t in tasks[:5]]
    more = f" +{len(tasks) - 5}" if len(tasks) > 5 else ""
    return " · running: " + ", ".join(names) + more


# -- status --watch -----------------------------------------------------------------
def snapshot(store: Store, run_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run with its tasks and, once it ended, where its time went."""
    with store.read() as conn:
        run = read.get_run(conn, run_id)
        if run is None:
            raise UserError(f"unknown run {run_id!r}")
        edges = observe.run_edges(conn, run_id) if run["state"] in TERMINAL else None
    return run, (timing.summary(run, edges) if edges is not None else None)


def watch(store: Store, run_id: str, interval: float, stream: TextIO | None = None,
          quiet: bool = False) -> dict[str, Any]:
    """Show the run's table until it ends: redrawn in place on a terminal, printed again
    on each change elsewhere (nothing when ``quiet``). Returns the ended run."""
    stream = stream or click.get_text_stream("stdout")
    tty, last = _isatty(stream), None
    while True:
        run, summary = snapshot(store, run_id)
        if quiet:
            pass
        elif tty:
            now = dt.datetime.now(dt.timezone.utc)
            rows = shutil.get_terminal_size((100, 40)).lines - 12
            text = render.status_text(_fit(run, rows), summary, use_color(stream), now)
            stream.write(CLEAR_SCREEN + text + "\n")
            stream.flush()
        else:
            key = (run["state"], [(t["node"], t["state"], t["attempts"]) for t in run["tasks"]])
            if key != last:
                last = key
                stream.write(render.status_text(run, summary) + "\n\n")
                stream.flush()
        if run["state"] in TERMINAL:
            return run
        time.sleep(interval)


def _fit(run: dict[str, Any], rows: int) -> dict[str, Any]:
    """At most ``rows`` tasks, the noteworthy ones first; a last row counts the others."""
    tasks = run["tasks"]
    if len(tasks) <= max(rows, 1):
        return run
    keep = sorted(tasks, key=lambda t: t["state"] not in NOTEWORTHY)[:max(rows - 1, 1)]
    kept = {t["node"] for t in keep}
    hidden = Counter(t["state"] for t in tasks if t["node"] not in kept)
    more = {"node": f"… {sum(hidden.values())} more", "state": ", ".join(
        f"{n} {s}" for s, n in hidden.most_common()), "attempts": "", "started_at": None,
        "finished_at": None, "worker": "", "error": None, "celery_id": ""}
    order = {t["node"]: i for i, t in enumerate(tasks)}
    return {**run, "tasks": sorted(keep, key=lambda t: order[t["node"]]) + [more]}
