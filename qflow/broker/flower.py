"""`qflow flower`: Flower on qflow's Celery app, with qflow's console and API on the same
port behind the same login.

Settings go to Flower through its ``FLOWER_*`` environment variables rather than the
command line, so a password never shows in the process list; the user's own ``FLOWER_*``
variables and Flower options on the command line still win. qflow's routes (/qflow/...)
are added to Flower's Tornado application, and its navbar gets "Workflows" and "Runs".
"""
from __future__ import annotations

import ast
import os
import re
import sys
from typing import Any, Sequence

import tornado.template
from celery import states
from celery.events.state import Task

from qflow.config import Config
from qflow.loader import load_app
from qflow.web.app import listen_address, qflow_handlers
from qflow.web.auth import WebSettings

RUN_ID = re.compile(r"[0-9a-f]{32}")
NAV_LINKS = "".join(f'<li class="nav-item"><a class="nav-link" href="{href}">{label}</a></li>\n'
                    for href, label in (("/qflow/", "Workflows"), ("/qflow/runs", "Runs"),
                                        ("/qflow/assets", "Assets")))


def flower_env(config: Config) -> dict[str, str]:
    """The FLOWER_* variables qflow's config asks for."""
    env = {"FLOWER_MAX_TASKS": str(config.flower_max_tasks)}
    users = WebSettings.from_config(config).users
    if users:
        env["FLOWER_BASIC_AUTH"] = ",".join(users)
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
    def as_dict(self) -> dict[str, Any]:
        """Flower's serialisation of the task, with ``"qflow"``: {"run_id", "node"} of a
        qflow task (None for another Celery task). Its task list rows (/tasks/datatable)
        and /api/tasks carry it, and qflow's script links each row to the run (see
        TASKS_SCRIPT); the task page, which lists _fields, already has its own row."""
        out = super().as_dict()
        found = qflow_task(self)
        out["qflow"] = None if found is None else {"run_id": found[0], "node": found[1]}
        return out


class FlowerTemplates(tornado.template.Loader):
    """Flower's templates with qflow's links: "Workflows", "Runs" and "Assets" in the
    navbar, on a task's page the qflow run it belongs to, and on the task list a link
    from each qflow task's row to its run."""

    def _create_template(self, name: str) -> tornado.template.Template:
        patch = _PATCHES.get(name)
        if patch is None:
            return super()._create_template(name)
        with open(os.path.join(self.root, name), "rb") as fh:
            text = fh.read().decode()
        at = text.find(patch[0])
        if at >= 0:                       # a Flower that changed its pages keeps them
            text = text[:at] + patch[1] + text[at:]
        return tornado.template.Template(text, name=name, loader=self)


RUN_ROW = """      {% set qflow_of = handler.application.qflow_task(task) %}
      {% if qflow_of %}
      <div class="detail-row task-data-row">
        <dt>qflow run</dt>
        <dd><a href="/qflow/runs/{{ qflow_of[0] }}">{{ qflow_of[0] }}</a>
          &middot; {{ qflow_of[1] }}</dd>
      </div>
      {% end %}
"""
# Flower draws its task list in the browser from /tasks/datatable: the links are added
# there, to what it drew, from each row's "qflow" field.
TASKS_SCRIPT = """{% block extra_scripts %}
<script src="/qflow/static/flower-tasks.js"></script>
{% end %}
"""
# template: (the text to insert before, the text inserted)
_PATCHES = {"navbar.html": ("</ul>", NAV_LINKS),         # Flower's first list: its main links
            "task.html": ('      <div class="detail-row task-data-row">\n        <dt>UUID',
                          RUN_ROW),
            "tasks.html": ("{% block container %}", TASKS_SCRIPT)}


def qflow_task(task: Any) -> tuple[str, str] | None:
    """(run id, node) of a Flower task that is a qflow task, from its arguments."""
    try:
        args = ast.literal_eval(getattr(task, "args", "") or "")
    except (ValueError, SyntaxError):
        return None
    if (isinstance(args, (list, tuple)) and len(args) == 3 and isinstance(args[0], str)
            and RUN_ID.fullmatch(args[0]) and isinstance(args[1], str)):
        return args[0], args[1]
    return None


def flower_class(runtime: Any) -> type:
    """Flower's application class, with qflow's routes and navbar links added."""
    from flower.app import Flower

    class QflowFlower(Flower):
        def __init__(self, options: Any = None, **kwargs: Any):
            if kwargs.get("template_path"):
                kwargs["template_loader"] = FlowerTemplates(kwargs["template_path"])
            super().__init__(options=options, **kwargs)
            settings = WebSettings.from_config(
                runtime.config, in_flower=True,
                more_users=tuple(self.options.basic_auth or ()))
            if self.options.auth:
                settings = WebSettings(settings.users, settings.tokens, True,
                                       self.options.auth)
            # Before Flower's own rules, which end in a catch-all 404.
            self.add_handlers(".*$", qflow_handlers(runtime, settings))

        qflow_task = staticmethod(qflow_task)

    return QflowFlower


def _option(args: list[str], name: str) -> str | None:
    """The value of Flower option ``--name`` on the command line (either spelling)."""
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key.lstrip("-").replace("-", "_") == name:
            if eq:
                return value
            return args[i + 1] if i + 1 < len(args) else ""
    return None


def start_flower(runtime: Any, args: Sequence[str]) -> None:
    """Run Flower with qflow's pages and API in this process until it is stopped.

    Without a login configured (basic auth or Flower's OAuth) it listens on 127.0.0.1
    only; another ``--address`` then needs ``--insecure``."""
    given = list(args)
    args = [a for a in given if a != "--insecure"]
    for key, value in flower_env(runtime.config).items():
        os.environ.setdefault(key, value)
    address = _option(args, "address")
    if address is None:
        address = os.environ.get("FLOWER_ADDRESS")
    guarded = any(_option(args, name) or os.environ.get(f"FLOWER_{name.upper()}")
                  for name in ("basic_auth", "auth"))
    host, note = listen_address(address, guarded, len(args) < len(given),
                                "Flower's --address")
    if address is None:
        args.append(f"--address={host}")
    if note:
        print(f"qflow flower: {note}", file=sys.stderr, flush=True)
    if runtime.config.app:
        load_app(runtime.config.app)
    import flower.command
    from flower.events import EventsState

    flower.command.Flower = flower_class(runtime)
    EventsState.Task = QflowTask
    runtime.celery.control.enable_events()   # now, not at Flower's first periodic reminder
    runtime.celery.start(["flower", *args])
