"""`qflow doctor`: audit that every unfinished task has a live owner or a message."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from qflow.cli.base import Obj, cli, json_option

if TYPE_CHECKING:
    from qflow.store import audit


@cli.command()
@json_option
@click.pass_obj
def doctor(obj: Obj, as_json: bool) -> None:
    """Audit the results DB and the broker: every unfinished task has a live worker or a
    message in flight, and every alert reached its notifiers. Lists what does not; exit 1
    if anything."""
    from qflow.store import audit

    rt = obj.runtime()
    store = rt.ready_store(migrate=False)       # an audit reads: it creates nothing
    config = rt.config
    grace = config.worker_lost_timeout
    with store.read() as conn:
        findings = (audit.lost_owners(conn, grace) + audit.unsent(conn)
                    + audit.stuck_pending(conn) + audit.open_runs_without_work(conn, grace)
                    + audit.held_runs_with_room(conn) + audit.idle_windows(conn)
                    + audit.undelivered_alerts(conn))
        queued = audit.queued_by_queue(conn, grace)
    findings += _missing_messages(rt, queued)
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    elif not findings:
        click.echo("ok: every unfinished task has a live worker or a message in flight")
    for f in [] if as_json else findings:
        where = " ".join(x for x in (f.run_id, f.node) if x)
        click.echo(f"{f.kind}: {where}: {f.detail}" if where else f"{f.kind}: {f.detail}")
    sys.exit(1 if findings else 0)


def _missing_messages(rt, queued: dict[str | None, int]) -> list[audit.Finding]:
    """Queues where the DB has more tasks waiting (for longer than the grace) than the
    broker has messages: some of those tasks have no message."""
    from qflow.store import audit

    if rt.config.embedded or not queued:
        return []
    rt.engine.dispatcher.check()
    out = []
    for queue, count in sorted(queued.items(), key=lambda kv: kv[0] or ""):
        name = queue or rt.config.default_queue
        waiting = rt.engine.dispatcher.waiting(name)
        if waiting is None or waiting < count:
            held = "no such queue" if waiting is None else f"{waiting} message(s)"
            out.append(audit.Finding(
                "no_message", f"{count} task(s) queued in {name!r} for over "
                f"{rt.config.worker_lost_timeout:g}s, but the broker holds {held} there"))
    return out
