"""The `qflow` command line: thin click commands over the engine."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Any

import click
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import OperationalError as DBOperationalError

from . import authoring, monitor, progress, render, timing
from .celery_app import run_worker
from .config import load_config
from .errors import QflowError, UnreachableError, UserError
from .loader import load_app
from .runtime import Runtime
from .store import observe, read
from .store.migrate import upgrade
from .states import SUCCEEDED, RUN_STATES


class Obj:
    """Per-invocation state: global flags, and the runtime built from them on demand."""

    def __init__(self, flags: dict[str, Any]):
        self.flags = flags
        self._rt: Runtime | None = None

    def runtime(self, **more: Any) -> Runtime:
        if self._rt is None:
            flags = {**self.flags, **more}
            path = flags.pop("config_path")
            self._rt = Runtime(load_config(path, **flags))
        return self._rt

    def app(self, **more: Any) -> Runtime:
        """The runtime with the user's workflows imported."""
        rt = self.runtime(**more)
        if not rt.config.app:
            raise UserError("no workflows loaded: pass -A/--app TARGET or set QFLOW_APP")
        load_app(rt.config.app)
        return rt


class QflowGroup(click.Group):
    """Turns qflow's errors into one-line messages and the contract's exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QflowError as exc:
            _fail(str(exc), exc.exit_code)
        except DBOperationalError as exc:
            rt = ctx.obj._rt if ctx.obj else None
            url = rt.config.database_url if rt else "?"
            _fail(str(UnreachableError("results DB", url, exc.orig or exc)), 3)
        except KombuOperationalError as exc:
            rt = ctx.obj._rt if ctx.obj else None
            url = rt.config.broker_url if rt else "?"
            _fail(str(UnreachableError("broker", url, exc)), 3)


def _fail(message: str, code: int) -> None:
    click.echo(f"qflow: error: {message}", err=True)
    sys.exit(code)


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad parameter {pair!r}: expected -p name=value")
        out[key.strip()] = value
    return out


param_option = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                            help="A workflow parameter (repeatable).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(cls=QflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", envvar="QFLOW_APP", help="Module, .py file or directory of "
              "workflows (comma-separated).")
@click.option("--config", "config_path", envvar="QFLOW_CONFIG", help="Config file (TOML).")
@click.option("--broker-url", envvar="QFLOW_BROKER_URL", help="Broker URL; none = embedded.")
@click.option("--database-url", envvar="QFLOW_DATABASE_URL", help="Results DB URL.")
@click.version_option(package_name="qflow")
@click.pass_context
def cli(ctx: click.Context, app, config_path, broker_url, database_url) -> None:
    """qflow: workflows of Python tasks on Celery."""
    ctx.obj = Obj(dict(app=app, config_path=config_path, broker_url=broker_url,
                       database_url=database_url))


def main() -> None:
    cli.main(prog_name="qflow")


# -- running -----------------------------------------------------------------------
@cli.command()
@click.argument("workflow")
@param_option
@click.option("--timeout", type=float, default=None, help="Give up waiting after SECONDS.")
@click.pass_obj
def run(obj: Obj, workflow: str, params: tuple[str, ...], timeout: float | None) -> None:
    """Trigger WORKFLOW and wait for it (embedded worker when no broker is set)."""
    rt = obj.app()
    rt.ready_store()
    given = _params(params)
    rt.engine.workflow(workflow).resolve_params(given)      # fail before starting a worker
    with rt.embedded():
        run_id = rt.engine.trigger(workflow, given)
        click.echo(f"run {run_id} of {workflow} started"
                   + (" (embedded worker, " + rt.config.database_url + ")"
                      if rt.config.embedded else ""))
        final = _wait(rt, run_id, timeout)
    _summary(rt, final)
    sys.exit(0 if final["state"] == SUCCEEDED else 1)


@cli.command()
@click.argument("workflow")
@param_option
@click.option("--wait", is_flag=True, help="Wait for the run to end; exit 1 if it fails.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@json_option
@click.pass_obj
def trigger(obj: Obj, workflow: str, params: tuple[str, ...], wait: bool,
            timeout: float | None, as_json: bool) -> None:
    """Record a run of WORKFLOW and enqueue its first tasks; print the run id."""
    rt = obj.app()
    if rt.config.embedded:
        raise UserError("trigger needs a broker that workers listen on (set "
                        "QFLOW_BROKER_URL); use `qflow run` for the embedded default")
    rt.ready_store()
    run_id = rt.engine.trigger(workflow, _params(params))
    click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
    if wait:
        final = _wait(rt, run_id, timeout, quiet=as_json)
        if not as_json:
            _summary(rt, final)
        sys.exit(0 if final["state"] == SUCCEEDED else 1)


def _wait(rt: Runtime, run_id: str, timeout: float | None, quiet: bool = False) -> dict:
    """Wait for the run, showing its progress (live on a terminal, plain lines otherwise)."""
    show = None if quiet else progress.Progress(rt.store, run_id)
    try:
        return rt.engine.wait(run_id, show, timeout)
    except TimeoutError as exc:
        raise QflowError(str(exc)) from None
    finally:
        if show is not None:
            show.close()


def _summary(rt: Runtime, run: dict) -> None:
    with rt.store.read() as conn:
        leaves = read.leaves(conn, run["run_id"])
        values = read.results(conn, run["run_id"], leaves)
    took = render._seconds(run["started_at"], run["finished_at"])
    click.echo(f"run {run['run_id']} {run['state']} ({run['tasks_done']}/{run['tasks_total']} "
               f"tasks{', ' + took if took else ''})")
    for node in leaves:
        if node in values:
            text = json.dumps(values[node], indent=2, default=str)
            if len(text) > 2000:
                text = text[:2000] + " …"
            click.echo(f"{node} returned:\n{text}")


@cli.command()
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default queue "
              "when omitted).")
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes.")
@click.option("-n", "--hostname", default=None, help="Worker name, e.g. w1@%h.")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("-E", "--task-events", is_flag=True, default=None,
              help="Send Celery task events from the start (Flower turns them on anyway).")
@click.pass_obj
def worker(obj: Obj, queues: str | None, concurrency: int | None, hostname: str | None,
           loglevel: str, task_events: bool | None) -> None:
    """Start a worker that executes tasks from the given queues."""
    rt = obj.app(worker_concurrency=concurrency, task_events=task_events)
    if rt.config.embedded:
        raise UserError("a worker needs a broker (set QFLOW_BROKER_URL or --broker-url)")
    rt.store.retry_seconds = rt.config.db_retry_seconds     # wait out DB restarts
    rt.ready_store()
    rt.engine.dispatcher.check()
    names = [q.strip() for q in (queues or rt.config.default_queue).split(",") if q.strip()]
    sys.exit(run_worker(rt.celery, rt.engine, names, rt.config.worker_concurrency, hostname,
                        loglevel))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                              "help_option_names": []})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def flower(obj: Obj, flower_args: tuple[str, ...]) -> None:
    """Start Flower on qflow's Celery app (options are Flower's, e.g. --port=5555)."""
    rt = obj.runtime()
    if rt.config.embedded:
        raise UserError("Flower needs a broker (set QFLOW_BROKER_URL or --broker-url)")
    rt.engine.dispatcher.check()
    monitor.start_flower(rt.celery, rt.config, flower_args)


# -- seeing ------------------------------------------------------------------------
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
    store = obj.runtime().ready_store()
    if watch:
        progress.watch(store, run_id, interval, quiet=as_json)
    run, summary = progress.snapshot(store, run_id)
    if as_json:
        click.echo(json.dumps({**run, "summary": summary}, indent=2))
    elif not watch:
        click.echo(render.status_text(run, summary, progress.use_color(sys.stdout)))
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
    store = obj.runtime().ready_store()
    with store.read() as conn:
        rows = read.list_runs(conn, workflow, state, limit, since, until)
    for row in rows:
        row["duration_seconds"] = timing.seconds(row["started_at"], row["finished_at"])
    click.echo(json.dumps(rows, indent=2) if as_json else render.runs_text(rows))


@cli.command()
@json_option
@click.pass_obj
def workflows(obj: Obj, as_json: bool) -> None:
    """List the registered workflows with their parameters, tasks and schedules."""
    from .scheduler import paused_workflows, schedule_summary, scheduled_workflows, utcnow
    rt = obj.app()
    paused = paused_workflows(rt.ready_store()) if scheduled_workflows() else set()
    now = utcnow()
    out = []
    for name in sorted(authoring.WORKFLOWS):
        wdef = authoring.WORKFLOWS[name]
        try:
            nodes = list(wdef.expand(wdef.resolve_params(wdef.options.get("params"))).nodes)
        except UserError:
            nodes = None                       # needs parameters without defaults
        out.append({"name": name, **schedule_summary(wdef, name in paused, now),
                    "params": {p: v.describe() for p, v in wdef.params.items()},
                    "tasks": nodes, "module": wdef.fn.__module__})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("no workflows")
    for w in out:
        params = ", ".join(f"{k}: {v}" for k, v in w["params"].items()) or "-"
        tasks = f"{len(w['tasks'])} tasks" if w["tasks"] is not None else "tasks depend on params"
        click.echo(f"{w['name']}  ({tasks}; schedule: {_schedule_text(w)})\n  params: {params}")


def _schedule_text(w: dict[str, Any]) -> str:
    if w["schedule"] is None:
        return "-"
    state = "paused" if w["paused"] else f"next {w['next_fire_time'] or 'never (ended)'}"
    return f"{w['schedule']} {w['timezone']}, {state}"


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
        color = fmt == "text" and progress.use_color(sys.stdout)
        click.echo(render.GRAPH_FORMATS[fmt](*found, color=color))
        return
    if RUN_ID.fullmatch(target) and not obj.runtime().config.app:
        raise UserError(f"unknown run {target!r}")
    rt = obj.app()
    wdef = rt.engine.workflow(target)
    click.echo(render.GRAPH_FORMATS[fmt](wdef.expand(wdef.resolve_params(_params(params)))))


RUN_ID = re.compile(r"[0-9a-f]{32}")


def _run_graph(obj: Obj, run_id: str):
    with obj.runtime().ready_store().read() as conn:
        return observe.run_graph(conn, run_id)


@cli.group()
def db() -> None:
    """Manage the results DB."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Obj) -> None:
    """Create or migrate the results DB schema."""
    rt = obj.runtime()
    rt.store.ping()
    revision = upgrade(rt.store)
    click.echo(f"results DB at {UnreachableError('', rt.config.database_url, '').url} "
               f"is at revision {revision}")


from . import cli_runs  # noqa: E402,F401  (registers its commands)
from . import cli_schedule  # noqa: E402,F401  (registers its commands)
from . import cli_observe  # noqa: E402,F401  (registers its commands)
