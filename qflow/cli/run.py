"""Commands that start something: a run, a worker, Flower; and the DB's schema."""
from __future__ import annotations

import json
import sys

import click

from qflow.cli.base import (
    Obj,
    cli,
    json_option,
    param_option,
    parse_params,
    print_summary,
    showing,
    wait_for,
    warn,
)
from qflow.core.states import SUCCEEDED
from qflow.errors import UserError, hide_password


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
    given = parse_params(params)
    rt.engine.workflow(workflow).resolve_params(given)      # fail before starting a worker
    with showing(rt) as show, rt.embedded():
        run_id = rt.engine.trigger(workflow, given)
        show.say(f"run {run_id} of {workflow} started"
                 + (" (embedded worker, " + hide_password(rt.config.database_url) + ")"
                    if rt.config.embedded else ""))
        warn(rt.warnings(run_id))
        final = wait_for(rt, run_id, timeout, show)
    print_summary(rt, final)
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
    run_id = rt.engine.trigger(workflow, parse_params(params))
    click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
    warn(rt.warnings(run_id))
    if wait:
        with showing(rt, quiet=as_json) as show:
            final = wait_for(rt, run_id, timeout, show)
        if not as_json:
            print_summary(rt, final)
        sys.exit(0 if final["state"] == SUCCEEDED else 1)


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
    from qflow.broker.app import run_worker

    rt = obj.app(worker_concurrency=concurrency, task_events=task_events)
    if rt.config.embedded:
        raise UserError("a worker needs a broker (set QFLOW_BROKER_URL or --broker-url)")
    rt.store.retry_seconds = rt.config.db_retry_seconds     # wait out DB restarts
    rt.ready_store()
    rt.results.check()              # a missing result store fails here, not per task
    rt.engine.dispatcher.check()
    names = [q.strip() for q in (queues or rt.config.default_queue).split(",") if q.strip()]
    sys.exit(run_worker(rt.celery, rt.upkeep, names, rt.config.worker_concurrency, hostname,
                        loglevel))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                              "help_option_names": []})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def flower(obj: Obj, flower_args: tuple[str, ...]) -> None:
    """Start Flower on qflow's Celery app, with qflow's console (/qflow/) and REST API
    on the same port behind the same login. Options are Flower's (e.g. --port=5555),
    plus --insecure: listen on another --address than 127.0.0.1 without a login."""
    from qflow.broker import flower as monitor

    rt = obj.runtime()
    if rt.config.embedded:
        raise UserError("Flower needs a broker (set QFLOW_BROKER_URL or --broker-url)")
    rt.engine.dispatcher.check()
    rt.ready_store()
    monitor.start_flower(rt, flower_args)


@cli.group()
def db() -> None:
    """Manage the results DB."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Obj) -> None:
    """Create or migrate the results DB schema."""
    from qflow.store.migrate import upgrade

    rt = obj.runtime()
    rt.store.ping()
    revision = upgrade(rt.store)
    click.echo(f"results DB at {hide_password(rt.config.database_url)} "
               f"is at revision {revision}")


