"""`qflow scheduler`, `backfill`, `pause` and `unpause` (registered on the main group)."""
from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING

import click

from qflow.cli.base import Obj, cli, json_option, param_option, parse_params
from qflow.core.states import SUCCEEDED
from qflow.errors import UserError, hide_password

if TYPE_CHECKING:                   # the commands import them: they need a DB (SQLAlchemy)
    from qflow.core.schedule import Schedule
    from qflow.engine import scheduler as S
    from qflow.runtime import Runtime

BACKFILL_LIMIT = 10_000


def _log():
    """The scheduler's logger (logging is imported when a scheduler runs, not with the CLI)."""
    import logging

    return logging.getLogger("qflow.scheduler")


@cli.command()
@click.option("--interval", type=float, default=None,
              help="Most seconds between two looks at the DB (scheduler_interval, 1.0).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.pass_obj
def scheduler(obj: Obj, interval: float | None, loglevel: str) -> None:
    """Create the runs that workflow schedules make due (safe to run more than one).

    With the embedded default (no broker) the runs execute on an in-process worker.
    """
    from qflow.engine import scheduler as S

    rt = obj.app(scheduler_interval=interval)
    rt.ready_store()
    rt.engine.dispatcher.check()
    loaded = [(w, s.describe()) for w, s in S.scheduled_workflows()]
    loaded += [(w, "on updates of " + ", ".join(names)) for w, names in S.asset_workflows()]
    if not loaded:
        raise UserError("no loaded workflow has a schedule")
    _log_to_stderr(loglevel)
    where = f" (embedded worker, results DB {hide_password(rt.config.database_url)})" \
        if rt.config.embedded else ""
    stop = threading.Event()
    with rt.embedded():
        # After the embedded worker's setup, which installs handlers of its own; "started"
        # is said once a SIGTERM stops the scheduler cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        _log().info("scheduler started%s: %s", where,
                    ", ".join(f"{w.name} ({d})" for w, d in loaded))
        S.Scheduler(rt.engine).run(stop, rt.config.scheduler_interval, _report)
    _log().info("scheduler stopped")


def _log_to_stderr(level: str) -> None:
    """The scheduler's own handler: the embedded worker reconfigures the root logger."""
    import logging

    log = _log()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/scheduler] "
                                           "%(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


def _report(fired: S.Fired) -> None:
    from qflow.engine import scheduler as S

    log, when = _log(), fired.logical_time.isoformat()
    if fired.outcome == S.CREATED:
        log.info("created run %s of %s for %s", fired.run_id, fired.workflow, when)
    elif fired.outcome == S.FAILED:
        log.error("cannot create the run of %s for %s: %s", fired.workflow, when,
                  fired.error)
    else:
        log.debug("%s for %s: %s", fired.workflow, when, fired.outcome)


@cli.command()
@click.argument("workflow")
@click.option("--start", required=True, help="First logical time: ISO date or datetime "
              "(without an offset: in the workflow's timezone).")
@click.option("--end", required=True, help="Last logical time, included (a date: that whole "
              "day).")
@param_option
@click.option("--rerun", is_flag=True, help="Also re-run logical times whose run succeeded.")
@click.option("--wait", is_flag=True, help="Wait for the runs to end; exit 1 if one fails "
              "(always so with the embedded default).")
@json_option
@click.pass_obj
def backfill(obj: Obj, workflow: str, start: str, end: str, params: tuple[str, ...],
             rerun: bool, wait: bool, as_json: bool) -> None:
    """Create one run of WORKFLOW per logical time of its schedule in [START, END].

    Skips times whose run succeeded (unless --rerun) or is still queued or running.
    """
    from qflow.engine import scheduler as S

    rt = obj.app()
    wdef = rt.engine.workflow(workflow)
    schedule = S.schedule_of(wdef)
    times = _backfill_times(schedule, start, end)
    given = parse_params(params)
    wdef.resolve_params(S.scheduled_params(wdef, given))     # fail before starting
    rt.ready_store()
    with rt.embedded():
        fired = S.backfill(rt.engine, wdef, times, given, rerun)
        _print_backfill(schedule, fired, as_json)
        if not (wait or rt.config.embedded):
            return
        states = [_wait(rt, f, schedule, as_json) for f in fired if f.outcome == S.CREATED]
    sys.exit(0 if all(s == SUCCEEDED for s in states) else 1)


def _backfill_times(schedule: Schedule, start: str, end: str) -> list[dt.datetime]:
    from qflow.core.schedule import parse_range
    from qflow.engine import scheduler as S

    lo, hi = parse_range(start, end, schedule.tz)
    now = S.now_aware()
    if lo > now:
        raise UserError("--start is in the future; the scheduler creates those runs")
    return _fire_times(schedule, lo, min(hi, now))


_WINDOW = dt.timedelta(days=366)


def _fire_times(schedule: Schedule, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
    """The fire times in [lo, hi], searched a year at a time: a rule looks a few years
    ahead at most for its next fire time, so one search over a longer range would stop
    early, without a word."""
    out: list[dt.datetime] = []
    start = lo
    while start <= hi:
        end = hi if hi - start < _WINDOW else start + _WINDOW
        try:
            out += schedule.between(start, end, BACKFILL_LIMIT - len(out))
        except UserError:
            raise UserError(f"more than {BACKFILL_LIMIT} logical times between "
                            f"{lo.isoformat()} and {hi.isoformat()}; use a shorter "
                            "range") from None
        start = end + dt.timedelta(microseconds=1)
    return out


def _print_backfill(schedule: Schedule, fired: list[S.Fired], as_json: bool) -> None:
    from qflow.engine import scheduler as S

    skipped = {S.SUCCEEDED_ALREADY: "skipped: its run succeeded (--rerun to run it again)",
               S.ACTIVE: "skipped: its run is queued or running",
               S.EXISTS: "skipped: created meanwhile by a scheduler or another backfill"}
    rows = [{"logical_time": schedule.local(f.logical_time).isoformat(),
             "outcome": f.outcome, "run_id": f.run_id, "error": f.error} for f in fired]
    created = sum(f.outcome == S.CREATED for f in fired)
    if as_json:
        click.echo(json.dumps({"created": created, "skipped": len(fired) - created,
                               "logical_times": rows}, indent=2))
        return
    for row in rows:
        what = (f"run {row['run_id']}" if row["outcome"] == S.CREATED
                else row["error"] or skipped.get(row["outcome"], row["outcome"]))
        click.echo(f"{row['logical_time']}  {what}")
    click.echo(f"created {created} runs, skipped {len(fired) - created}")


def _wait(rt: Runtime, fired: S.Fired, schedule: Schedule, quiet: bool) -> str:
    state = rt.engine.wait(fired.run_id)["state"]
    if not quiet:
        click.echo(f"{schedule.local(fired.logical_time).isoformat()}  run {fired.run_id} "
                   f"{state}")
    return state


@cli.command()
@click.argument("workflows", nargs=-1, required=True)
@click.pass_obj
def pause(obj: Obj, workflows: tuple[str, ...]) -> None:
    """Stop creating scheduled runs of WORKFLOWS (runs already created go on)."""
    _set_paused(obj, workflows, True)


@cli.command()
@click.argument("workflows", nargs=-1, required=True)
@click.pass_obj
def unpause(obj: Obj, workflows: tuple[str, ...]) -> None:
    """Resume scheduled runs of WORKFLOWS (with catchup=True, missed times run too)."""
    _set_paused(obj, workflows, False)


def _set_paused(obj: Obj, workflows: tuple[str, ...], paused: bool) -> None:
    from qflow.engine import scheduler as S
    from qflow.store import schedules

    rt = obj.app()
    for name in workflows:
        rt.engine.workflow(name)                # all known before changing any
    store = rt.ready_store()
    word = "paused" if paused else "unpaused"
    for name in workflows:
        changed = store.transact(schedules.set_paused, name, paused, S.to_store(S.now_aware()))
        click.echo(f"{word} {name}" if changed else f"{name} was already {word}")
