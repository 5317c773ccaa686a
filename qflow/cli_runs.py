"""`qflow retry` and `qflow cancel`: operator actions on a run."""
from __future__ import annotations

import sys

import click

from .cli import Obj, _summary, _wait, cli
from .errors import UserError
from .loader import load_app
from .states import SUCCEEDED


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
        load_app(rt.config.app)
    rt.ready_store()
    with rt.embedded():
        released = rt.engine.resume(run_id, from_node)
        click.echo(f"run {run_id} resumed ({released} tasks queued)")
        if not (wait or rt.config.embedded):
            return
        final = _wait(rt, run_id, timeout)
    _summary(rt, final)
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
