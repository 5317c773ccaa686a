"""qflow: a workflow (DAG) orchestrator on Celery.

Author workflows with :func:`task` and :func:`workflow`; run them with the ``qflow`` CLI.
"""
from qflow.authoring import container, shell, task, workflow
from qflow.context import TaskContext, context
from qflow.errors import Fail

__all__ = ["task", "workflow", "shell", "container", "Fail", "context", "TaskContext"]
__version__ = "0.1.0"
