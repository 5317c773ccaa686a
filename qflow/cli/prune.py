"""`qflow db prune`: delete ended runs older than an age."""
from __future__ import annotations

import datetime as dt

import click

from qflow.cli.base import Obj
from qflow.cli.run import db
from qflow.errors import UserError


@db.command("prune")
@click.option("--older-than", "age", required=True, metavar="AGE",
              help="Delete runs that ended longer ago than AGE: 30d, 12h, 90m, 45s.")
@click.option("--dry-run", is_flag=True, help="Only say how many would be deleted.")
@click.pass_obj
def db_prune(obj: Obj, age: str, dry_run: bool) -> None:
    """Delete ended runs older than AGE with their tasks, attempts, logs and stored
    results. Unfinished runs, and runs an unfinished run was triggered by, are kept."""
    from qflow.core.durations import parse_duration
    from qflow.engine.upkeep import prune
    from qflow.store import retention
    from qflow.store.transitions import utcnow

    try:
        seconds = parse_duration(age)
    except ValueError as exc:
        raise UserError(f"--older-than: {exc}") from None
    rt = obj.runtime()
    store = rt.ready_store()
    cutoff = utcnow() - dt.timedelta(seconds=seconds)
    if dry_run:
        with store.read() as conn:
            n_runs, n_tasks = retention.count(conn, cutoff)
        click.echo(f"would delete {n_runs} run(s) ({n_tasks} task(s)) ended before "
                   f"{cutoff.isoformat(timespec='seconds')}Z")
        return
    click.echo(f"deleted {prune(rt.config, store, cutoff)} run(s) ended before "
               f"{cutoff.isoformat(timespec='seconds')}Z")
