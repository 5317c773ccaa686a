"""Commands that show runs and workflows: status, runs, workflows, graph."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import TYPE_CHECKING

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
@click.option("--watch", is_flag=True, help="Redraw until the run ends; exit 1 if it fails.")
@click.option("--interval", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="With --watch: seconds between two looks.")
@click.pass_obj
def status(obj: Obj, run_id: str, as_json: bool, watch: bool, interval: float) -> None:
    """Show a run and every task in it (state, tries, time, worker, Celery id for Flower),
    and where the time went."""
    from qflow.store import status as read_status

    rt = obj.runtime()
    # Without SQLAlchemy where it can (see read_status.plainly); the full path otherwise.
    run = None if watch else read_status.plainly(rt, run_id)
    if run is None:
        from qflow.client import run_status

        store = rt.ready_store(migrate=False)
        if watch:
            # The live display's module (rich's Live and more): only for --watch.
            from qflow.cli import progress

            progress.watch(store, run_id, interval, quiet=as_json)
        run = run_status(rt, run_id)
    if as_json:
        click.echo(json.dumps(run, indent=2))
    elif not watch:
        # rich draws the table: --json goes without it.
        from qflow.cli import tables

        tables.emit(tables.status_table(run, run["summary"]))
        warn(run["warnings"])
    if watch:
        sys.exit(0 if run["state"] == SUCCEEDED else 1)


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


