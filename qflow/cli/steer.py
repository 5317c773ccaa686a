"""`qflow retry` and `qflow cancel`: operator actions on a run."""
from __future__ import annotations

import datetime as dt
import json
import sys

import click

from qflow.cli.base import Obj, cli, print_summary, showing, wait_for
from qflow.core.states import SUCCEEDED
from qflow.errors import UserError


@cli.command()
@click.argument("run_id")
@click.option("--from", "from_node", default=None, metavar="NODE",
              help="Also re-run NODE and everything downstream of it.")
@click.option("--wait", is_flag=True, help="Wait for the run to end; exit 1 if it fails.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@click.pass_obj
def retry(obj: Obj, run_id: str, from_node: str | None, wait: bool,
          timeout: float | None) -> None:
    """Resume a failed or canceled run in place: failed, canceled and upstream-failed
    tasks run again; succeeded tasks keep their results."""
    rt = obj.runtime()
    if rt.config.embedded and not rt.config.app:
        raise UserError("with the embedded default, retry runs the tasks itself: pass "
                        "-A/--app (or set QFLOW_BROKER_URL to use running workers)")
    if rt.config.app:
        from qflow.loader import load_app

        load_app(rt.config.app)
    rt.ready_store()
    waits = wait or rt.config.embedded
    since = dt.datetime.now(dt.timezone.utc)          # the run's earlier attempts: history
    with showing(rt, quiet=not waits, since=since) as show, rt.embedded():
        released = rt.engine.resume(run_id, from_node)
        (show.say if show else click.echo)(f"run {run_id} resumed ({released} tasks queued)")
        if show is None:
            return
        final = wait_for(rt, run_id, timeout, show)
    print_summary(rt, final)
    sys.exit(0 if final["state"] == SUCCEEDED else 1)


@cli.command()
@click.argument("run_id")
@click.pass_obj
def cancel(obj: Obj, run_id: str) -> None:
    """Cancel a run: queued and waiting tasks are canceled, running ones terminated."""
    rt = obj.runtime()
    rt.ready_store()
    state = rt.engine.cancel(run_id)
    click.echo(f"run {run_id} {state or 'canceling'}")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pools(ctx: click.Context, as_json: bool) -> None:
    """Concurrency pools: slots, slots in use, tasks waiting."""
    from qflow.store.pools import listing as pool_listing

    if ctx.invoked_subcommand is not None:
        return
    store = ctx.obj.runtime().ready_store()
    with store.read() as conn:
        rows = pool_listing(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from qflow.cli import tables

    tables.emit(tables.pools_table(rows))


@pools.command("set")
@click.argument("name")
@click.argument("slots", type=click.IntRange(0))
@click.pass_obj
def pools_set(obj: Obj, name: str, slots: int) -> None:
    """Create pool NAME or change its number of SLOTS (0 pauses its tasks)."""
    rt = obj.runtime()
    rt.ready_store()
    started = rt.engine.set_pool(name, slots)
    click.echo(f"pool {name}: {slots} slots" + (f", {started} waiting tasks started"
                                                  if started else ""))
