"""`qflow logs`: what a run's tasks printed and logged, attempt by attempt."""
from __future__ import annotations

import json
import os
import time
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
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing what comes while the run goes on; stop when it ends.")
@json_option
@click.pass_obj
def logs(obj: Obj, run_id: str, node: str | None, attempt: int | None, follow: bool,
         as_json: bool) -> None:
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
    if follow and not as_json:
        _follow(store, run_id, node, attempt)
        return
    if attempt is not None and not rows:
        raise UserError(f"{node or 'no task'} of run {run_id} has no attempt {attempt}")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"{visible(node or 'no task')} has not started yet")
    else:
        click.echo("\n\n".join(_attempt_text(r) for r in rows))


def _attempt_text(row: dict[str, Any]) -> str:
    body = visible(row["log"] or "(no output)").rstrip("\n")
    return f"{_header(row)}\n{body}{_ending(row)}"


def _header(row: dict[str, Any]) -> str:
    took = seconds_text(row["started_at"], row["finished_at"])
    parts = [row["node"], f"attempt {row['attempt']}", row["state"], row["worker"] or "",
             took, (row["started_at"] or "")[:19].replace("T", " ")]
    return "== " + visible("  ".join(p for p in parts if p)) + " =="


def _ending(row: dict[str, Any]) -> str:
    error = f"\n-- error: {visible(row['error'])}" if row["error"] else ""
    if row.get("traceback"):
        error += "\n-- traceback:\n" + visible(row["traceback"]).rstrip("\n")
    return error


def _follow(store, run_id: str, node: str | None, attempt: int | None,
            interval: float = 1.0) -> None:
    """Print each attempt's output as it grows (a container task's live log, about once
    a second; any other task's when it ends) until the run has ended and all is shown."""
    from qflow.core.states import RUN_ENDED
    from qflow.store import observe, read

    printed: dict[tuple[str, int], str] = {}
    done: set[tuple[str, int]] = set()
    while True:
        with store.read() as conn:
            state = read.get_run(conn, run_id, with_tasks=False)["state"]
            rows = observe.attempt_logs(conn, run_id, node, attempt)
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        for row in rows:        # an ended attempt's own row wins over a live copy
            key = (row["node"], row["attempt"])
            if row["finished_at"] or key not in latest or not latest[key]["finished_at"]:
                latest[key] = row
        for key, row in latest.items():
            if key not in done:
                _grow(row, printed, key)
                if row["finished_at"]:
                    click.echo(f"-- {visible(row['node'])} attempt {row['attempt']} "
                               f"{row['state']}{_ending(row)}")
                    done.add(key)
        if state in RUN_ENDED:
            return
        time.sleep(interval)


def _grow(row: dict[str, Any], printed: dict, key: tuple[str, int]) -> None:
    """Print what ``row``'s log has that was not printed yet (its header first): whole
    lines while the attempt runs, the rest when it has ended."""
    if key not in printed:
        click.echo(_header(row))
        printed[key] = ""
    text, before = row["log"] or "", printed[key]
    upto = len(text) if row["finished_at"] else text.rfind("\n") + 1
    # Past log_max_bytes a log keeps its beginning and end (with a line saying what was
    # cut): what was printed may stop being its beginning; go on from where they part.
    common = len(os.path.commonprefix([before, text]))
    if common < len(before) and common < upto:
        click.echo()
    if upto > common:
        new = text[common:upto]
        click.echo(visible(new), nl=not new.endswith("\n"))
        printed[key] = text[:upto]
