"""`qflow flower`: Flower on qflow's Celery app, set up from qflow's config.

Settings go to Flower through its ``FLOWER_*`` environment variables rather than the
command line, so a password never shows in the process list; the user's own ``FLOWER_*``
variables and Flower options on the command line still win.
"""
from __future__ import annotations

import os
from typing import Sequence

from celery import Celery, states
from celery.events.state import Task

from qflow.config import Config


def flower_env(config: Config) -> dict[str, str]:
    """The FLOWER_* variables qflow's config asks for."""
    env = {"FLOWER_MAX_TASKS": str(config.flower_max_tasks)}
    if config.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = config.flower_basic_auth
    if config.flower_purge_offline_workers > 0:
        env["FLOWER_PURGE_OFFLINE_WORKERS"] = str(config.flower_purge_offline_workers)
    return env


class QflowTask(Task):
    """Flower's record of a task that keeps its ``workflow.node`` name.

    The worker's events carry that name (Celery's ``shadow``), but the publisher's
    ``task-sent`` event names the generic ``qflow.execute``. Sent after the message, it
    can reach Flower after the worker's first events, and Celery then merges all of its
    fields, name included: here a late ``task-sent`` keeps only its routing fields.
    """

    merge_rules = {**Task.merge_rules, states.PENDING: (
        "queue", "exchange", "routing_key", "eta", "expires", "root_id", "parent_id")}


def start_flower(app: Celery, config: Config, args: Sequence[str]) -> None:
    """Run Flower in this process until it is stopped."""
    for key, value in flower_env(config).items():
        os.environ.setdefault(key, value)
    from flower.events import EventsState

    EventsState.Task = QflowTask
    app.control.enable_events()        # now, not at Flower's first periodic reminder
    app.start(["flower", *args])
