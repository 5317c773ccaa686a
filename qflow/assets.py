"""Assets: named pieces of data that tasks update and workflows wait for.

``Asset("warehouse.sales")`` names one; ``@task(outlets=[asset])`` makes each success of
the task an update of it, recorded with the task's outcome; ``@workflow(schedule=[asset,
...])`` starts a run once every listed asset was updated since the workflow's last such
run (several updates before that run starts make one run).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from qflow.errors import UserError

ASSETS: dict[str, "Asset"] = {}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]{0,199}$")


@dataclass(frozen=True)
class Asset:
    """A named asset (letters, digits and ``_ . : / @ + -``, at most 200 characters)."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UserError(f"bad asset name {self.name!r}: use letters, digits and "
                            "_ . : / @ + - (at most 200 characters)")
        ASSETS.setdefault(self.name, self)

    def __repr__(self) -> str:
        return f"Asset({self.name!r})"


def outlet_names(kind: str, target: str, value: Any) -> list[str]:
    """The asset names of an ``outlets=`` option (a list of :class:`Asset`)."""
    items = [value] if isinstance(value, Asset) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(a, Asset) for a in items):
        raise UserError(f"@{kind} on {target!r}: outlets must be a list of Asset, "
                        f"got {value!r}")
    return sorted({a.name for a in items})


def split_schedule(target: str, value: Any) -> tuple[Any, tuple[str, ...]]:
    """A ``schedule=`` option as (cron or interval, asset names): an Asset or a list of
    them schedules on updates; anything else is a time schedule."""
    if isinstance(value, Asset):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value, ()
    if not value or not all(isinstance(a, Asset) for a in value):
        raise UserError(f"@workflow on {target!r}: schedule must be a cron string, an "
                        f"interval, or a list of Asset, got {value!r}")
    return None, tuple(sorted({a.name for a in value}))


def producers() -> dict[str, list[str]]:
    """Asset name -> the loaded tasks (module.function) whose success updates it."""
    from qflow import authoring

    return _by_asset((t.key, t.options.get("outlets")) for t in authoring.TASKS.values())


def consumers() -> dict[str, list[str]]:
    """Asset name -> the loaded workflows that its updates start."""
    from qflow import authoring

    return _by_asset((w.name, w.options.get("assets")) for w in authoring.WORKFLOWS.values())


def _by_asset(pairs: Iterable[tuple[str, Iterable[str] | None]]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for who, names in pairs:
        for name in names or ():
            out.setdefault(name, set()).add(who)
    return {name: sorted(whos) for name, whos in out.items()}


def declared() -> set[str]:
    """Every asset the loaded app names (constructed, an outlet or a schedule)."""
    return set(ASSETS) | set(producers()) | set(consumers())
