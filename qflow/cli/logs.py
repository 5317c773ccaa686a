"""`qflow logs`: what a run's tasks printed and logged, attempt by attempt."""
from __future__ import annotations

import json
from typing import Any

import click

from qflow.cli.base import Obj, cli, json_option
from qflow.cli.render import seconds_text, visible
from qflow.errors import UserError


@cli.command()
@click.argument("run_id")
@click.argument("node", required=False)
@click.option("--attempt", type=click.IntRange(1), default=None,
              help="Only attempt N (1 is the first try).")
@json_option
@click.pass_obj
def logs(obj: Obj, run_id: str, node: str | None, attempt: int | None, as_json: bool) -> None:
    """Show what the tasks of RUN_ID (or only NODE) printed and logged, each attempt
    under a header with its state, worker, time and error. Terminal control characters
    in what they printed show as escapes (``\\x1b``) rather than act on the terminal."""
    from qflow.store import observe, read

    store = obj.runtime().ready_store(migrate=False)
    with store.read() as conn:
        if read.get_run(conn, run_id, with_tasks=False) is None:
            raise UserError(f"unknown run {run_id!r}")
        if node is not None and not observe.has_node(conn, run_id, node):
            raise UserError(f"run {run_id} has no task {node!r}")
        rows = observe.attempt_logs(conn, run_id, node, attempt)
    if attempt is not None and not rows:
        raise UserError(f"{node or 'no task'} of run {run_id} has no attempt {attempt}")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"{visible(node or 'no task')} has not started yet")
    else:
        click.echo("\n\n".join(_attempt_text(r) for r in rows))


def _attempt_text(row: dict[str, Any]) -> str:
    took = seconds_text(row["started_at"], row["finished_at"])
    parts = [row["node"], f"attempt {row['attempt']}", row["state"], row["worker"] or "",
             took, (row["started_at"] or "")[:19].replace("T", " ")]
    header = "== " + visible("  ".join(p for p in parts if p)) + " =="
    body = visible(row["log"] or "(no output)").rstrip("\n")
    error = f"\n-- error: {visible(row['error'])}" if row["error"] else ""
    if row.get("traceback"):
        error += "\n-- traceback:\n" + visible(row["traceback"]).rstrip("\n")
    return f"{header}\n{body}{error}"
