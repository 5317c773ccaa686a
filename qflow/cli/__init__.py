"""The `qflow` command line: thin click commands over the engine.

The group and what the commands share live in :mod:`qflow.cli.base`; each command module
registers its commands on it when :mod:`qflow.cli.commands` imports it.
"""
from __future__ import annotations


def main() -> None:
    from qflow.cli.commands import cli

    cli.main(prog_name="qflow")
