"""Commands that show runs and workflows: status, runs, workflows, graph."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
import uuid
from typing import TYPE_CHECKING, Any, Callable

import click

from qflow.cli import render, timing
from qflow.cli.base import Obj, cli, json_option, param_option, parse_params, warn
from qflow.core.states import RUN_STATES, SUCCEEDED
from qflow.errors import NoResultsDB, UserError

if TYPE_CHECKING:
    from qflow.runtime import Runtime


@cli.command()
@click.argument("run_id")
@json_option
@click.option("--all", "every", is_flag=True,
              help="List every task of a big run too (more than a thousand tasks: shown as "
                   "counts per state and node, and the tasks worth a look).")
@click.option("--watch", is_flag=True, help="Redraw until the run ends; exit 1 if it fails.")
@click.option("--interval", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="With --watch: seconds between two looks.")
@click.pass_obj
def status(obj: Obj, run_id: str, as_json: bool, every: bool, watch: bool,
           interval: float) -> None:
    """Show a run and its tasks (state, tries, time, worker, Celery id for Flower), and
    where the time went. A big run shows counts and the tasks worth a look."""
    from qflow.store import status as read_status

    rt = obj.runtime()
    listed = every                            # --watch lists every task with --all only
    every = every or as_json                  # the JSON has every task

    def present(run: dict) -> str:
        if as_json:
            write_json(run, lambda text: click.echo(text, nl=False))
        elif not watch:
            # rich draws the table: --json goes without it.
            from qflow.cli import tables

            tables.emit(tables.status_table(run, run["summary"]))
            warn(run["warnings"])
        return run["state"]

    # Without SQLAlchemy where it can (see read_status.plainly); the full path otherwise.
    state = None if watch else read_status.plainly(rt, run_id, every, present)
    if state is None:
        from qflow.client import run_status

        store = rt.ready_store(migrate=False)
        if watch:
            # The live display's module (rich's Live and more): only for --watch.
            from qflow.cli import progress

            progress.watch(store, run_id, interval, quiet=as_json, every=listed)
        state = run_status(rt, run_id, every, present)
    if watch:
        sys.exit(0 if state == SUCCEEDED else 1)


def write_json(run: dict[str, Any], write: Callable[[str], Any]) -> None:
    """``json.dumps(run, indent=2)`` and a newline, written a part at a time: its
    ``tasks`` may be an iterator of a million of them (see qflow.store.status.snapshot),
    each a flat dict of scalars (qflow.store.status.task_dict)."""
    marker = uuid.uuid4().hex
    head, tail = json.dumps({**run, "tasks": marker}, indent=2).split(json.dumps(marker))
    parts, before = [head], "[\n    {\n      "
    for task in run["tasks"]:
        # The C encoder (json's indent= goes through its Python one, many times slower):
        # a flat dict's items laid out as indent=2 lays them out at this depth.
        parts.append(before + _FLAT(task)[1:-1] + "\n    }")
        before = ",\n    {\n      "
        if len(parts) >= JSON_BATCH:
            write("".join(parts))
            parts.clear()
    parts.append("[]" if before.startswith("[") else "\n  ]")
    write("".join(parts) + tail + "\n")


JSON_BATCH = 1_000             # tasks written at a time by write_json
_FLAT = json.JSONEncoder(separators=(",\n      ", ": ")).encode


def _when(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return timing.parse_when(value, dt.datetime.now(dt.timezone.utc))
    except ValueError as exc:
        raise UserError(f"--{param.name}: {exc}") from None


@cli.command()
@click.option("--workflow", default=None, help="Only this workflow's runs.")
@click.option("--state", type=click.Choice(RUN_STATES), default=None)
@click.option("--since", callback=_when, metavar="WHEN",
              help="Only runs created since WHEN: an age (30m, 2h, 7d) or an ISO time.")
@click.option("--until", callback=_when, metavar="WHEN", help="Only runs created before WHEN.")
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True)
@json_option
@click.pass_obj
def runs(obj: Obj, workflow: str | None, state: str | None, since: dt.datetime | None,
         until: dt.datetime | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    from qflow.store import status as read_status

    rt = obj.runtime()
    # Without SQLAlchemy where it can (see read_status.runs_plainly); the full path otherwise.
    rows = read_status.runs_plainly(rt, workflow, state, limit, since, until)
    if rows is None:
        try:
            store = rt.ready_store(migrate=False)
        except NoResultsDB:
            rows = []
        else:
            with store.read() as conn:
                rows = read_status.list_runs(conn, workflow, state, limit, since, until)
    for row in rows:
        row["duration_seconds"] = timing.seconds(row["started_at"], row["finished_at"])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        from qflow.cli import tables

        tables.emit(tables.runs_table(rows))


@cli.command()
@json_option
@click.pass_obj
def workflows(obj: Obj, as_json: bool) -> None:
    """List the registered workflows with their parameters, tasks and schedules."""
    from qflow.cli import tables
    from qflow.client import workflow_list
    from qflow.engine.scheduler import any_scheduled

    rt = obj.app()
    out = workflow_list(_paused(rt) if any_scheduled() else set())
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    tables.emit(tables.workflows_table(out))


@cli.command()
@click.argument("target", metavar="WORKFLOW|RUN_ID")
@param_option
@click.option("--format", "fmt", type=click.Choice(list(render.GRAPH_FORMATS)), default="text",
              show_default=True)
@click.pass_obj
def graph(obj: Obj, target: str, params: tuple[str, ...], fmt: str) -> None:
    """Print WORKFLOW's DAG (built with default parameters unless -p is given), or the DAG
    of run RUN_ID with each task coloured by its state."""
    found = _run_graph(obj, target) if RUN_ID.fullmatch(target) else None
    if found is not None:
        color = fmt == "text" and render.use_color(sys.stdout)
        click.echo(render.GRAPH_FORMATS[fmt](*found, color=color))
        return
    if RUN_ID.fullmatch(target) and not obj.runtime().config.app:
        raise UserError(f"unknown run {target!r}")
    rt = obj.app()
    wdef = rt.engine.workflow(target)
    graph_ = wdef.expand(wdef.resolve_params(parse_params(params)))
    click.echo(render.GRAPH_FORMATS[fmt](graph_))


RUN_ID = re.compile(r"[0-9a-f]{32}")


def _run_graph(obj: Obj, run_id: str):
    from qflow.store import observe

    with obj.runtime().ready_store(migrate=False).read() as conn:
        return observe.run_graph(conn, run_id)


def _paused(rt: Runtime) -> set[str]:
    """Paused workflows; none when nothing has run yet (no DB to read)."""
    from qflow.engine.scheduler import paused_workflows
    try:
        return paused_workflows(rt.ready_store(migrate=False))
    except NoResultsDB:
        return set()


