"""The tables of `status`, `runs`, `workflows` and `pools`, drawn with rich.

On a terminal they take its width and colour task states (unless ``NO_COLOR`` is set);
piped or redirected they are plain text without escape codes, never wrapped, one line
per row, so that they read well in a file and in ``grep``. Every value a user or a task
wrote goes in as :class:`rich.text.Text` (never parsed as markup) after
:func:`~qflow.cli.render.visible`.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import shutil
from typing import Any, Iterable, TextIO

import click
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from qflow.cli.render import (
    STATE_COLORS,
    isatty,
    oneline,
    seconds_text,
    use_color,
    visible,
)

PLAIN_WIDTH = 10_000           # off a terminal nothing wraps: one line per row
ERROR_WIDTH = 80               # of the error column of `status`


def console(file: TextIO, tty: bool | None = None) -> Console:
    """A console writing to ``file``: the terminal's width and colours on a terminal,
    plain unwrapped text elsewhere."""
    tty = isatty(file) if tty is None else tty
    width = shutil.get_terminal_size((100, 40)).columns if tty else PLAIN_WIDTH
    color = tty and not os.environ.get("NO_COLOR")
    return Console(file=file, force_terminal=tty, color_system="standard" if color else None,
                   no_color=not color, width=width, highlight=False, emoji=False,
                   markup=False, soft_wrap=not tty)


def to_text(renderable: RenderableType, tty: bool = False) -> str:
    """What ``renderable`` prints as, without the spaces that pad lines on the right."""
    buffer = io.StringIO()
    console(buffer, tty).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def emit(renderable: RenderableType, stream: TextIO | None = None) -> None:
    """Print ``renderable`` to ``stream`` (stdout): coloured on a terminal only."""
    stream = stream or click.get_text_stream("stdout")
    click.echo(to_text(renderable, isatty(stream)), file=stream, color=use_color(stream))


def state_text(state: str, width: int = 0) -> Text:
    """A task or run state in its colour."""
    style = STATE_COLORS.get(state, ("", ""))[0]
    return Text(state.ljust(width), style=("bold " + style) if state == "failed" else style)


class Grid(Table):
    """rich's borderless table, laid out here rather than cell by cell by rich where that
    gives the same text: off a terminal (no colours, nothing cut), when every cell is one
    line of printable characters one column wide each (ASCII, "…"). rich's layout costs about 0.6 ms
    per row: 6 s for the `status` of a run of 10,000 tasks."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = None if console.is_terminal else _plain_lines(self, options.max_width)
        if lines is None:
            yield from super().__rich_console__(console, options)
            return
        for line in lines:
            yield Segment(line)
            yield Segment.line()


def _plain_lines(table: Table, width: int) -> list[str] | None:
    """The table's lines as rich draws them for :func:`grid`: each column as wide as its
    widest cell, two spaces after each but the last; None where rich's layout is needed
    (a cell that is not one line of characters one column wide each, or a table wider
    than ``width``)."""
    columns = []
    for column in table.columns:
        cells = [column.header, *column.cells]
        texts = [c.plain if isinstance(c, Text) else c for c in cells]
        if not all(isinstance(t, str) and t.isprintable() and cell_len(t) == len(t)
                   for t in texts):
            return None
        columns.append(texts)
    gap = table.padding[1]
    widths = [max(map(len, texts)) + (gap if i < len(columns) - 1 else 0)
              for i, texts in enumerate(columns)]
    if sum(widths) > width:
        return None
    return ["".join(texts[row].ljust(w) for texts, w in zip(columns, widths, strict=True))
            for row in range(len(columns[0]))]


def grid(headers: Iterable[str], flexible: Iterable[str] = ()) -> Table:
    """A borderless table: columns two spaces apart, headers in bold. Only the
    ``flexible`` columns give way when a terminal is too narrow (cut with an ellipsis)."""
    table = Grid(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0),
                 header_style="bold")
    flexible = set(flexible)
    for header in headers:
        table.add_column(header, no_wrap=header not in flexible, overflow="ellipsis")
    return table


def cut(text: str) -> Text:
    """A cell of a flexible column: one line, ending in an ellipsis if it must give way."""
    return Text(text, no_wrap=True, overflow="ellipsis")


# -- status ----------------------------------------------------------------------------
def _elapsed(task: dict[str, Any], now: dt.datetime | None) -> str:
    took = seconds_text(task["started_at"], task["finished_at"])
    if took or now is None or task["state"] != "running" or not task["started_at"]:
        return took
    return seconds_text(task["started_at"], now.isoformat()) + "…"


def status_table(run: dict[str, Any], summary: dict[str, Any] | None = None,
                 now: dt.datetime | None = None) -> RenderableType:
    """The run, a table of its tasks and, given ``summary``, where the time went.
    ``now`` shows running tasks' time so far. A run read as counts (``counts`` in it: see
    :func:`qflow.store.status.snapshot`) shows them, and its tasks worth a look."""
    head = Text(f"run {run['run_id']}  workflow {visible(run['workflow'])}  ")
    head.append_text(state_text(run["state"]))
    facts = [("params", visible(str(run["params"]))), ("created", run["created_at"]),
             ("duration", seconds_text(run["started_at"], run["finished_at"]) or "-")]
    if run.get("logical_time"):
        facts.append(("logical", run["logical_time"]))
    if "counts" in run:
        facts.append(("tasks", f"{sum(run['counts'].values()):,}: {_counted(run['counts'])}"))
    parts: list[RenderableType] = [head]
    parts += [Text(f"  {name:8} {value}") for name, value in facts]
    if "counts" in run:
        parts += [Text(""), Padding(_nodes_table(run["nodes"], run["counts"]), (0, 0, 0, 2))]
    if run.get("tasks") or "counts" not in run:
        parts += [Text(""), Padding(_tasks_table(run.get("tasks", []), now), (0, 0, 0, 2))]
    if "counts" in run:
        parts += [Text(""), Text(_unlisted(run))]
    return Group(*parts, *_timing(summary))


def _tasks_table(tasks: list[dict[str, Any]], now: dt.datetime | None) -> Table:
    table = grid(("NODE", "STATE", "TRIES", "TIME", "WORKER", "CELERY ID", "ERROR"),
                 flexible=("WORKER", "CELERY ID", "ERROR"))
    for t in tasks:
        table.add_row(Text(visible(t["node"])), state_text(t["state"]), str(t["attempts"]),
                      _elapsed(t, now), cut(visible(t["worker"] or "")),
                      cut(t.get("celery_id") or ""), cut(oneline(t["error"], ERROR_WIDTH)))
    return table


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {state}" for state, n in counts.items()) or "none"


def _nodes_table(nodes: list[dict[str, Any]], counts: dict[str, int]) -> Table:
    """Per node, how many of its tasks are in each of the run's states."""
    from qflow.store.overview import NODE_ROWS

    table = grid(("NODE", "TASKS", *(state.upper() for state in counts)))
    for entry in nodes[:NODE_ROWS]:
        table.add_row(Text(visible(entry["node"])), f"{sum(entry['counts'].values()):,}",
                      *(f"{entry['counts'][s]:,}" if s in entry["counts"] else "-"
                        for s in counts))
    if len(nodes) > NODE_ROWS:
        table.add_row(f"… {len(nodes) - NODE_ROWS:,} more nodes", "", *("" for _ in counts))
    return table


def _unlisted(run: dict[str, Any]) -> str:
    left = dict(run["counts"])
    for t in run["tasks"]:
        left[t["state"]] = left.get(t["state"], 0) - 1
    left = {state: n for state, n in left.items() if n > 0}
    return (f"  {sum(left.values()):,} tasks not listed ({_counted(left)}): "
            f"`qflow status {run['run_id']} --all` lists every one")


def _timing(summary: dict[str, Any] | None) -> list[RenderableType]:
    """Where the time went: the critical path (not walked for a run read as counts) and
    the slowest tasks."""
    if not summary or not (summary["critical_path"] or summary.get("critical_path_skipped")):
        return []
    slowest = ", ".join(f"{s['node']} {s['seconds']:.2f}s" for s in summary["slowest"])
    if summary.get("critical_path_skipped"):
        from qflow.store.overview import LIST_BOUND

        path = Text(f"  critical path  not computed for a run of more than {LIST_BOUND:,} "
                    f"tasks ({summary['duration_seconds'] or 0:.2f}s in all)")
    else:
        path = Text(f"  critical path  {visible(' -> '.join(summary['critical_path']))}  "
                    f"({summary['critical_path_seconds']:.2f}s in its tasks, "
                    f"{summary['duration_seconds'] or 0:.2f}s in all)")
    if summary.get("slowest_skipped"):
        from qflow.store.overview import SLOWEST_BOUND

        slowest = f"not looked for in a run of more than {SLOWEST_BOUND:,} tasks"
    return [Text(""), path, Text(f"  slowest        {visible(slowest)}")]


# -- runs, workflows, pools ------------------------------------------------------------
def runs_table(runs: list[dict[str, Any]]) -> RenderableType:
    if not runs:
        return Text("no runs")
    table = grid(("RUN", "WORKFLOW", "STATE", "TASKS", "CREATED", "DURATION"))
    for r in runs:
        table.add_row(r["run_id"], Text(visible(r["workflow"])), state_text(r["state"]),
                      f"{r['tasks_done']}/{r['tasks_total']}",
                      r["created_at"][:19].replace("T", " "),
                      seconds_text(r["started_at"], r["finished_at"]))
    return table


def workflows_table(workflows: list[dict[str, Any]]) -> RenderableType:
    """One row per workflow: its tasks, schedule and parameters."""
    if not workflows:
        return Text("no workflows")
    table = grid(("WORKFLOW", "TASKS", "SCHEDULE", "PARAMS"), flexible=("SCHEDULE", "PARAMS"))
    for w in workflows:
        tasks = str(len(w["tasks"])) if w["tasks"] is not None else "depend on params"
        params = ", ".join(f"{k}: {v}" for k, v in w["params"].items()) or "-"
        table.add_row(Text(visible(w["name"])), tasks, cut(visible(_schedule(w))),
                      cut(visible(params)))
    return table


def _schedule(w: dict[str, Any]) -> str:
    if w["schedule"] is None:
        return "-"
    if w.get("assets"):                   # started by updates: no time zone, no next time
        return w["schedule"] + (", paused" if w["paused"] else "")
    state = "paused" if w["paused"] else f"next {w['next_fire_time'] or 'never (ended)'}"
    return f"{w['schedule']} {w['timezone']}, {state}"


def pools_table(pools: list[dict[str, Any]]) -> RenderableType:
    if not pools:
        return Text("no pools")
    table = grid(("POOL", "SLOTS", "USED", "WAITING"))
    for p in pools:
        table.add_row(Text(visible(p["name"])), str(p["slots"]), str(p["used"]),
                      str(p["waiting"]))
    return table
