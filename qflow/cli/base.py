"""What every command shares: the click group, per-invocation state, parameters, waiting."""
from __future__ import annotations

import json
import sys
from typing import Any

import click
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import DatabaseError
from sqlalchemy.exc import OperationalError as DBOperationalError

from qflow.cli import progress, render
from qflow.config import load_config
from qflow.errors import QflowError, UnreachableError, UserError, hide_password, one_line
from qflow.loader import load_app
from qflow.runtime import Runtime
from qflow.store import read


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
            fail(str(exc), exc.exit_code)
        except DBOperationalError as exc:
            rt = ctx.obj._rt if ctx.obj else None
            url = rt.config.database_url if rt else "?"
            fail(str(UnreachableError("results DB", url, exc.orig or exc)), 3)
        except DatabaseError as exc:        # e.g. a SQLite file corrupt past its header
            rt = ctx.obj._rt if ctx.obj else None
            url = hide_password(rt.config.database_url) if rt else "?"
            fail(f"the results DB at {url} failed: {one_line(exc.orig or exc)}", 3)
        except KombuOperationalError as exc:
            rt = ctx.obj._rt if ctx.obj else None
            url = rt.config.broker_url if rt else "?"
            fail(str(UnreachableError("broker", url, exc)), 3)


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


def wait_for(rt: Runtime, run_id: str, timeout: float | None, quiet: bool = False) -> dict:
    """Wait for the run, showing its progress (live on a terminal, plain lines otherwise)."""
    show = None if quiet else progress.Progress(rt.store, run_id)
    try:
        return rt.engine.wait(run_id, show, timeout)
    except TimeoutError as exc:
        raise QflowError(str(exc)) from None
    finally:
        if show is not None:
            show.close()


def print_summary(rt: Runtime, run: dict) -> None:
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


