"""`qflow assets` and `qflow assets touch`: what updated each asset, and updates from
outside qflow."""
from __future__ import annotations

import json

import click

from qflow.cli.base import Obj, cli, json_option


def _runtime(obj: Obj):
    """The runtime, with the workflows loaded when an app is configured (they name the
    assets, their producers and consumers); the DB alone otherwise."""
    rt = obj.runtime()
    if rt.config.app:
        from qflow.loader import load_app

        load_app(rt.config.app)
    rt.ready_store()
    return rt


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def assets(ctx: click.Context, as_json: bool) -> None:
    """Assets: each one's last update (when, by which run), producers and consumers."""
    if ctx.invoked_subcommand is not None:
        return
    from qflow.client import asset_list

    rows = asset_list(_runtime(ctx.obj).store)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from qflow.cli import tables

    tables.emit(_table(rows))


def _table(rows: list[dict]):
    from qflow.cli.render import visible
    from qflow.cli.tables import cut, grid

    table = grid(("ASSET", "LAST UPDATE", "BY", "UPDATES", "PRODUCERS", "CONSUMERS"),
                 flexible=("PRODUCERS", "CONSUMERS"))
    for r in rows:
        by = f"{r['run_id']} {r['node']}" if r["run_id"] else (
            "outside" if r["updates"] else "")
        table.add_row(visible(r["asset"]), r["last_update"] or "never", by,
                      str(r["updates"]), cut(visible(", ".join(r["producers"]))),
                      cut(visible(", ".join(r["consumers"]))))
    return table


@assets.command("touch")
@click.argument("name")
@click.pass_obj
def assets_touch(obj: Obj, name: str) -> None:
    """Record an update of asset NAME from outside qflow: the workflows scheduled on it
    start once their other assets are updated too."""
    from qflow.client import touch_asset

    update = touch_asset(_runtime(obj).store, name)
    click.echo(f"asset {name} updated at {update['at']} (update {update['update_id']})")
