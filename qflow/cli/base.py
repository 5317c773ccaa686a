"""What every command shares: the click group, per-invocation state, parameters, waiting."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import click

from qflow.errors import QflowError, UnreachableError, UserError, hide_password, one_line

# Everything heavier (SQLAlchemy, Celery, rich) is imported by the commands that use it:
# `qflow --help` and the read-only commands start fast (bench/cli_startup.py).
if TYPE_CHECKING:
    from qflow.cli.progress import Progress
    from qflow.runtime import Runtime


class Obj:
    """Per-invocation state: global flags, and the runtime built from them on demand."""

    def __init__(self, flags: dict[str, Any]):
        self.flags = flags
        self._rt: Runtime | None = None

    def runtime(self, **more: Any) -> Runtime:
        from qflow.config import load_config
        from qflow.runtime import Runtime

        if self._rt is None:
            flags = {**self.flags, **more}
            path = flags.pop("config_path")
            self._rt = Runtime(load_config(path, **flags))
        return self._rt

    def app(self, **more: Any) -> Runtime:
        """The runtime with the user's workflows imported."""
        from qflow.loader import load_app

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
            fail(str(exc), exc.exit_code)
        except Exception as exc:
            message = _unreachable(ctx.obj._rt if ctx.obj else None, exc)
            if message is None:
                raise
            fail(message, 3)


def _unreachable(rt: Runtime | None, exc: Exception) -> str | None:
    """The one-line message for an error of the results DB or the broker, else None.
    Their libraries' error classes are looked up only if the library was imported: if it
    was not, ``exc`` cannot come from it."""
    db, broker = sys.modules.get("sqlalchemy.exc"), sys.modules.get("kombu.exceptions")
    if db is not None and isinstance(exc, db.OperationalError):
        return str(UnreachableError("results DB", rt.config.database_url if rt else "?",
                                    exc.orig or exc))
    if db is not None and isinstance(exc, db.DatabaseError):   # e.g. a corrupt SQLite file
        url = hide_password(rt.config.database_url) if rt else "?"
        return f"the results DB at {url} failed: {one_line(exc.orig or exc)}"
    if broker is not None and isinstance(exc, broker.OperationalError):
        return str(UnreachableError("broker", rt.config.broker_url if rt else "?", exc))
    return None


def warn(messages: list[str]) -> None:
    """Tell the user, on stderr, what will keep a run from going on (see
    :meth:`Runtime.warnings`)."""
    for message in messages:
        click.echo(f"qflow: warning: {message}", err=True)


def fail(message: str, code: int) -> None:
    click.echo(f"qflow: error: {message}", err=True)
    sys.exit(code)


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
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


@contextmanager
def showing(rt: Runtime, quiet: bool = False, since: Any = None) -> Iterator[Progress | None]:
    """The progress display of a run about to be waited on (None when ``quiet``): live on
    a terminal, plain lines otherwise. Enter it before starting the embedded worker, so
    that on a terminal what its tasks print goes above the display. ``since``: show no
    event before that time (a resumed run's history)."""
    if quiet:
        yield None
        return
    from qflow.cli.progress import Progress

    with Progress(rt.store, since=since) as show:
        yield show


def wait_for(rt: Runtime, run_id: str, timeout: float | None,
             show: Progress | None = None) -> dict:
    """Wait for the run to end, shown on ``show`` (see :func:`showing`)."""
    try:
        return rt.engine.wait(run_id, show.follow(run_id) if show else None, timeout)
    except TimeoutError as exc:
        raise QflowError(str(exc)) from None


def print_summary(rt: Runtime, run: dict) -> None:
    from qflow.cli.render import seconds_text
    from qflow.store import read

    with rt.store.read() as conn:
        leaves = read.leaves(conn, run["run_id"])
        values = read.results(conn, run["run_id"], leaves)
    took = seconds_text(run["started_at"], run["finished_at"])
    click.echo(f"run {run['run_id']} {run['state']} ({run['tasks_done']}/{run['tasks_total']} "
               f"tasks{', ' + took if took else ''})")
    for node in leaves:
        if node in values:
            text = json.dumps(values[node], indent=2, default=str)
            if len(text) > 2000:
                text = text[:2000] + " …"
            click.echo(f"{node} returned:\n{text}")


