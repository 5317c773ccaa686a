"""The results DB: models, sessions, migrations and the state-changing queries."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qflow.store.db import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    # Store (and SQLAlchemy with it) loads on first use, not with the package: `qflow
    # status` reads through qflow.store.plain without SQLAlchemy.
    if name == "Store":
        from qflow.store.db import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
