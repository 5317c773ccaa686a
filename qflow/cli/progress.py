"""Live views of a run: the progress of `run` / `trigger --wait` / `retry`, and
`status --watch`.

On a terminal both are a rich Live display, redrawn in place, with everything else that
prints meanwhile (the tasks of the embedded worker, Celery's log) going above it instead
of through it. Elsewhere (a pipe, a CI log) the progress is one plain line per event,
each attempt's start and end, stamped with the time it happened (the DB's times, seconds
since the run was created) and in time order, e.g. ``[  1.02s] 3/7 load: succeeded in
0.51s``; `status --watch` prints the table again on each change.
"""
from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
import time
from collections import Counter
from contextlib import nullcontext
from typing import Any, TextIO

import click
from rich.console import Group, RenderableType
from rich.file_proxy import FileProxy
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from qflow.cli import tables, timing
from qflow.cli.events import STARTED, Event, describe, run_events
from qflow.cli.render import isatty, visible
from qflow.client import snapshot
from qflow.core.states import TERMINAL
from qflow.store import Store, observe, read

DETAIL_LIMIT = 200           # above this many tasks, progress reads counts, not every row
NOTEWORTHY = ("running", "retrying", "failed", "upstream_failed", "queued", "canceled")
# An event is printed once it is this old: one committed a moment later with an earlier
# time (another worker's) still comes out in order. The run's end prints the rest.
HOLD = dt.timedelta(seconds=0.5)
SHOWN_RUNNING = 5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Progress:
    """The ``on_poll`` callback of :meth:`Engine.wait` that shows what happens in a run.

    Enter it before anything that may print while the run goes on (the embedded worker),
    so that on a terminal that output goes above the live display; then
    :meth:`follow` the run and pass the result to ``wait``. ``since`` hides events that
    happened before it (a resumed run's earlier attempts).
    """

    def __init__(self, store: Store, stream: TextIO | None = None, tty: bool | None = None,
                 since: dt.datetime | None = None):
        self.store, self.since = store, since
        self.stream = stream or sys.stdout
        self.tty = isatty(self.stream) if tty is None else tty
        self.console = tables.console(self.stream, self.tty)
        self.run_id: str | None = None
        self.origin: dt.datetime | None = None
        self.printed: set[tuple[str, int, str]] = set()
        self.last_count = ""
        self.view: tuple[dict[str, Any], Counter, list[dict[str, Any]]] | None = None
        self.live: Live | None = None
        self.adopted: list[tuple[logging.StreamHandler, Any]] = []

    def __enter__(self) -> "Progress":
        if self.tty:
            self.live = Live(console=self.console, get_renderable=self._render,
                             transient=True, refresh_per_second=4,
                             redirect_stderr=isatty(sys.stderr))
            self.live.start()
            self._adopt_log_handlers()
            # The embedded worker sets up Celery's handlers after this: adopt them then.
            from celery.signals import after_setup_logger, after_setup_task_logger

            for signal in (after_setup_logger, after_setup_task_logger):
                signal.connect(self._adopt_log_handlers, weak=False)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def follow(self, run_id: str) -> "Progress":
        self.run_id = run_id
        return self

    def say(self, text: str) -> None:
        """Print a line of the command's own (above the live display on a terminal)."""
        if self.live is not None:
            self.console.print(Text(text))
        else:
            click.echo(text, file=self.stream)

    def __call__(self, run: dict[str, Any]) -> None:
        self.origin = self.origin or dt.datetime.fromisoformat(run["created_at"])
        detailed = run["tasks_total"] <= DETAIL_LIMIT
        with self.store.read() as conn:
            if detailed:
                tasks = read.task_rows(conn, self.run_id)
                attempts = observe.ended_attempts(conn, self.run_id)
            else:
                counts = Counter(observe.state_counts(conn, self.run_id))
                running = observe.running(conn, self.run_id, SHOWN_RUNNING)
        if detailed:
            counts = Counter(t["state"] for t in tasks)
            running = [t for t in tasks if t["state"] == "running"]
            self._print_events(run_events(tasks, attempts), run)
        elif not self.tty:
            self._print_counts(run, counts)
        self.view = (run, counts, running)
        if self.live is not None:
            self._adopt_log_handlers()
            self.live.refresh()

    # -- plain lines ---------------------------------------------------------------------
    def _print_events(self, events: list[Event], run: dict[str, Any]) -> None:
        cutoff = None if run["state"] in TERMINAL else _now() - HOLD
        done = 0
        for event in events:
            done += event.ends_task
            if event.key in self.printed or (cutoff is not None and event.at > cutoff):
                continue
            self.printed.add(event.key)
            if self.since is not None and event.at < self.since:
                continue
            if not (self.tty and event.what == STARTED):     # the live view shows those
                self._line(event, done, run["tasks_total"])

    def _line(self, event: Event, done: int, total: int) -> None:
        what, detail = describe(event)
        line = Text(f"{self._stamp(event.at)} {done}/{total} {visible(event.node)}: ")
        line.append_text(tables.state_text(what))
        line.append(detail)
        if self.live is not None:
            self.console.print(line)
        else:
            click.echo(line.plain, file=self.stream)

    def _stamp(self, at: dt.datetime) -> str:
        return f"[{(at - self.origin).total_seconds():6.2f}s]"

    def _print_counts(self, run: dict[str, Any], counts: Counter) -> None:
        text = f"{run['tasks_done']}/{run['tasks_total']} tasks done{_counts(counts)}"
        if text != self.last_count:
            self.last_count = text
            click.echo(f"{self._stamp(_now())} {text}", file=self.stream)

    # -- the live display ----------------------------------------------------------------
    def _render(self) -> RenderableType:
        if self.view is None:
            return Text("starting…")
        run, counts, running = self.view
        total, done = run["tasks_total"], sum(counts[s] for s in TERMINAL)
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=max(total, 1), completed=done, width=30,
                                 complete_style="cyan", finished_style="green"),
                     Text(f"{done}/{total} done{_counts(counts)}"),
                     Text(f"{(_now() - self.origin).total_seconds():.1f}s", style="dim"))
        now = _now().isoformat()
        lines = [Text.assemble("  ", tables.state_text("running"),
                               f" {visible(t['node'])} on {visible(t['worker'] or '?')} "
                               f"{timing.seconds(t['started_at'], now) or 0:.1f}s")
                 for t in running[:SHOWN_RUNNING]]
        if counts["running"] > SHOWN_RUNNING:
            lines.append(Text(f"  … and {counts['running'] - SHOWN_RUNNING} more running"))
        return Group(head, *lines)

    def _adopt_log_handlers(self, **_: Any) -> None:
        """Send log handlers that write to the terminal (Celery's, set up with the
        embedded worker) through the live display, so their lines go above it."""
        terminals = {id(s) for s in (sys.__stderr__, sys.__stdout__, self.stream)
                     if s is not None and isatty(s)}
        proxy = None
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", ()):
                if type(handler) is logging.StreamHandler and id(handler.stream) in terminals:
                    proxy = proxy or FileProxy(self.console, handler.stream)
                    self.adopted.append((handler, handler.setStream(proxy)))

    def close(self) -> None:
        """Stop the live display and give the log handlers their streams back."""
        if self.live is not None:
            from celery.signals import after_setup_logger, after_setup_task_logger

            for signal in (after_setup_logger, after_setup_task_logger):
                signal.disconnect(self._adopt_log_handlers)
        for handler, stream in self.adopted:
            handler.setStream(stream)
        self.adopted = []
        if self.live is not None:
            self.live.stop()
            self.live = None


def _counts(counts: dict[str, int]) -> str:
    shown = [f"{counts[s]} {s}" for s in NOTEWORTHY if counts.get(s)]
    return f" ({', '.join(shown)})" if shown else ""


# -- status --watch -----------------------------------------------------------------
def watch(store: Store, run_id: str, interval: float, stream: TextIO | None = None,
          quiet: bool = False, every: bool = False) -> dict[str, Any]:
    """Show the run's table until it ends: redrawn in place on a terminal, printed again
    on each change elsewhere (nothing when ``quiet``). Returns the ended run. A big run
    is shown as `status` shows it, as counts and the tasks worth a look, each look
    reading no row per task (unless ``every``: `--all`)."""
    stream = stream or click.get_text_stream("stdout")
    tty, last = isatty(stream), None
    live = Live(console=tables.console(stream, True), auto_refresh=False) \
        if tty and not quiet else None
    with live or nullcontext():
        while True:
            run, summary = snapshot(store, run_id, every)
            if live is not None:
                rows = shutil.get_terminal_size((100, 40)).lines - 12
                live.update(tables.status_table(_fit(run, rows), summary, _now()),
                            refresh=True)
            elif not quiet:
                key = (run["state"], run.get("counts"),
                       [(t["node"], t["state"], t["attempts"]) for t in run["tasks"]])
                if key != last:
                    last = key
                    click.echo(tables.to_text(tables.status_table(run, summary)) + "\n",
                               file=stream)
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
