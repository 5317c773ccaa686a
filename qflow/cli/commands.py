"""Every command, registered on the group by importing its module."""
from __future__ import annotations

from qflow.cli import assets, doctor, keys, logs, run, schedule, show, steer, web  # noqa: F401
from qflow.cli.base import cli

__all__ = ["cli"]
