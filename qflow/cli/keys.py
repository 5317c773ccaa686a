"""`qflow keygen`: a new encryption key."""
from __future__ import annotations

import click

from qflow.cli.base import cli


@cli.command()
def keygen() -> None:
    """Print a new encryption_key (the last line). To rotate keys, put the new one first:
    encryption_key = "NEW,OLD" encrypts with NEW and still reads what OLD encrypted."""
    from qflow.results.crypto import new_key

    click.echo("# encryption_key for qflow.toml or QFLOW_ENCRYPTION_KEY; keep it secret", err=True)
    click.echo(new_key())
