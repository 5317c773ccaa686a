"""`qflow web` (the web console and REST API alone) and `qflow result`."""
from __future__ import annotations

import json

import click

from qflow.cli.base import Obj, cli, json_option


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8844, show_default=True)
@click.option("--address", default=None, help="Address to listen on [default: 127.0.0.1]; "
              "another one needs web_auth or web_tokens, or --insecure.")
@click.option("--insecure", is_flag=True, help="Listen on ADDRESS even though no "
              "credentials are configured (anyone who can connect may steer runs).")
@click.pass_obj
def web(obj: Obj, port: int, address: str | None, insecure: bool) -> None:
    """Serve the web console (/qflow/) and the REST API (/qflow/api/v1/).

    With the embedded default (no broker) triggered runs execute on an in-process worker.
    """
    from qflow.web.app import listen_address, serve
    from qflow.web.auth import WebSettings

    rt = obj.runtime()
    listen_address(address, WebSettings.from_config(rt.config).protected, insecure)
    if rt.config.app:
        obj.app()
    rt.ready_store()
    with rt.embedded():
        serve(rt, port, address, insecure)


@cli.command()
@click.argument("run_id")
@click.argument("node", required=False)
@json_option
@click.pass_obj
def result(obj: Obj, run_id: str, node: str | None, as_json: bool) -> None:
    """Print what NODE of RUN_ID returned (default: the run's last leaf task)."""
    from qflow import client

    store = obj.runtime().ready_store()
    node, value = client.task_result(store, run_id, node)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "node": node, "value": value}, indent=2))
    elif isinstance(value, str):
        click.echo(value)
    else:
        click.echo(json.dumps(value, indent=2))
