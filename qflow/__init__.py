"""qflow: a workflow (DAG) orchestrator on Celery.

Author workflows with :func:`task` and :func:`workflow`; run them with the ``qflow`` CLI.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# ``context`` is also a submodule's name: bound now so that the function, not the module,
# is what ``from qflow import context`` finds.
from qflow.context import TaskContext, context

# The other names are imported on first use: the `qflow` command imports this package
# before anything else, and most commands need none of them (bench/cli_startup.py).
_LAZY = {"task": "qflow.authoring", "workflow": "qflow.authoring",
         "shell": "qflow.command_tasks", "container": "qflow.command_tasks", "Fail": "qflow.errors",
         "Client": "qflow.client", "Asset": "qflow.assets", "Secret": "qflow.core.params"}

__all__ = ["task", "workflow", "shell", "container", "Fail", "context", "TaskContext",
           "Client", "Asset", "Secret"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from qflow.assets import Asset  # noqa: F401
    from qflow.authoring import task, workflow  # noqa: F401
    from qflow.client import Client  # noqa: F401
    from qflow.command_tasks import container, shell  # noqa: F401
    from qflow.core.params import Secret  # noqa: F401
    from qflow.errors import Fail  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
