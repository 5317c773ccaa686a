"""Every command, registered on the group by importing its module."""
from __future__ import annotations

from qflow.cli import (  # noqa: F401 - each registers its commands
    assets,
    doctor,
    keys,
    logs,
    prune,
    run,
    schedule,
    show,
    steer,
    web,
)
from qflow.cli.base import cli

__all__ = ["cli"]
