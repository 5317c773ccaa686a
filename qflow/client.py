"""The Python client (``from qflow import Client``) and the JSON views it shares with the
CLI (``status --json``, ``runs --json``, ``workflows --json``, ``qflow result``) and the
REST API, so that all three answer the same objects.

The client talks to the results DB and the broker directly, through the same
:class:`~qflow.runtime.Runtime` as the CLI: no web server is needed.
"""
from __future__ import annotations

import datetime as dt
from contextlib import ExitStack
from typing import Any, Callable

from qflow import authoring
from qflow.config import load_config
from qflow.errors import UserError
from qflow.loader import load_app
from qflow.runtime import Runtime
from qflow.store import Store, observe, read, schedules, status


class NotFound(UserError):
    """An unknown run, node, workflow or attempt (HTTP 404)."""


class Conflict(UserError):
    """The request does not fit the run's state, e.g. no result yet (HTTP 409)."""


# -- the JSON views -------------------------------------------------------------------
def run_status(rt: Runtime, run_id: str, every: bool = True,
               then: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """The run and every task in it, with where its time went and why waiting tasks may
    never start (``warnings``): `status --json`. ``every`` and ``then``: see
    :func:`qflow.store.status.plainly`."""
    with rt.store.read() as conn:
        found = status.status(conn, run_id, rt.config, every, lazy=then is not None)
        if found is None:
            raise NotFound(f"unknown run {run_id!r}")
        return found if then is None else then(found)


def snapshot(store: Store, run_id: str, every: bool = True
             ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run with its tasks and, once it ended, where its time went (see
    :func:`qflow.store.status.snapshot`, also for ``every``); UserError for an unknown
    run."""
    with store.read() as conn:
        found = status.snapshot(conn, run_id, every)
    if found is None:
        raise UserError(f"unknown run {run_id!r}")
    return found


def run_list(store: Store, workflow: str | None = None, state: str | None = None,
             limit: int = 20, since: dt.datetime | None = None,
             until: dt.datetime | None = None, before: str | None = None
             ) -> list[dict[str, Any]]:
    """Recent runs, newest first: `runs --json`. ``before`` is a run id: the page that
    follows it (keyset paging)."""
    from qflow.cli import timing

    with store.read() as conn:
        if before is not None and read.get_run(conn, before, with_tasks=False) is None:
            raise UserError(f"before: unknown run {before!r}")
        rows = read.list_runs(conn, workflow, state, limit, since, until, before)
    for row in rows:
        row["duration_seconds"] = timing.seconds(row["started_at"], row["finished_at"])
    return rows


def workflow_list(paused: set[str]) -> list[dict[str, Any]]:
    """The loaded workflows with parameters, tasks and schedule (``paused``: the names of
    the paused ones): `workflows --json`."""
    from qflow.engine.scheduler import now_aware, schedule_summary

    now = now_aware()
    out = []
    for name in sorted(authoring.WORKFLOWS):
        wdef = authoring.WORKFLOWS[name]
        try:
            nodes = list(wdef.expand(wdef.resolve_params(wdef.options.get("params"))).nodes)
        except UserError:
            nodes = None                       # needs parameters without defaults
        out.append({"name": name, **schedule_summary(wdef, name in paused, now),
                    "params": {p: v.describe() for p, v in wdef.params.items()},
                    "tasks": nodes, "module": wdef.fn.__module__})
    return out


def paused_of(store: Store) -> set[str]:
    """Names of the paused workflows (no query when none has a schedule)."""
    from qflow.engine.scheduler import any_scheduled, paused_workflows

    return paused_workflows(store) if any_scheduled() else set()


def task_result(store: Store, run_id: str, node: str | None = None) -> tuple[str, Any]:
    """``(node, value)``: what ``node`` (default: the run's last leaf) returned.
    NotFound for an unknown run or node; Conflict while it has no result."""
    with store.read() as conn:
        run = read.get_run(conn, run_id, with_tasks=False)
        if run is None:
            raise NotFound(f"unknown run {run_id!r}")
        if node is None:
            leaves = read.leaves(conn, run_id)
            node = leaves[-1] if leaves else None
        if node is None or not observe.has_node(conn, run_id, node):
            raise NotFound(f"run {run_id} has no task {node!r}")
        values = read.results(conn, run_id, [node])
    if node not in values:
        raise Conflict(f"task {node!r} of run {run_id} has no result (it has not "
                       "succeeded)")
    return node, values[node]


def task_log(store: Store, run_id: str, node: str, attempt: int | None = None
             ) -> dict[str, Any]:
    """One attempt of ``node`` (default: its latest) with what it printed and logged
    (``text``) and how it ended; ``attempt`` is None before the first try."""
    with store.read() as conn:
        if read.get_run(conn, run_id, with_tasks=False) is None:
            raise NotFound(f"unknown run {run_id!r}")
        if not observe.has_node(conn, run_id, node):
            raise NotFound(f"run {run_id} has no task {node!r}")
        rows = observe.attempt_logs(conn, run_id, node, attempt)
    if not rows:
        if attempt is not None:
            raise NotFound(f"task {node!r} of run {run_id} has no attempt {attempt}")
        return {"node": node, "attempt": None, "text": ""}
    # A running attempt comes twice, its live log last: the newest row of the newest try.
    row = max(reversed(rows), key=lambda r: r["attempt"])
    text = row.pop("log") or ""
    return {**row, "text": text}


def set_paused(store: Store, workflow: str, paused: bool) -> bool:
    """Pause or unpause a loaded workflow's schedule; False when it already was."""
    from qflow.engine.scheduler import now_aware, to_store

    if workflow not in authoring.WORKFLOWS:
        raise NotFound(f"unknown workflow {workflow!r}")
    return store.transact(schedules.set_paused, workflow, paused, to_store(now_aware()))


def asset_list(store: Store) -> list[dict[str, Any]]:
    """Each asset the loaded workflows name or that was ever updated: its last update
    (when, by which run and node), how many it had, its producers and consumers:
    `assets --json`."""
    from qflow import assets as A
    from qflow.store import assets

    with store.read() as conn:
        last = assets.last_updates(conn)
    made, used = A.producers(), A.consumers()
    return [{"asset": name, "last_update": last.get(name, {}).get("at"),
             "run_id": last.get(name, {}).get("run_id"),
             "node": last.get(name, {}).get("node"),
             "updates": last.get(name, {}).get("updates", 0),
             "producers": made.get(name, []), "consumers": used.get(name, [])}
            for name in sorted(A.declared() | set(last))]


def touch_asset(store: Store, name: str) -> dict[str, Any]:
    """Record an update of asset ``name`` from outside qflow; NotFound for a name no
    loaded workflow uses and nothing ever updated."""
    from qflow import assets as A
    from qflow.store import assets
    from qflow.store.transitions import utcnow

    if name not in A.declared():
        with store.read() as conn:
            if not assets.is_known(conn, name):
                raise NotFound(f"unknown asset {name!r}")
    return store.transact(assets.touch, name, utcnow())


# -- the client -----------------------------------------------------------------------
class Client:
    """Trigger, watch and steer runs from Python, with the CLI's configuration.

    ``Client(config_path=None, **overrides)`` reads the config file (``config_path``,
    else ``$QFLOW_CONFIG``), then ``QFLOW_*`` variables, then ``overrides`` (any setting,
    e.g. ``database_url=...``) and imports the workflows of the ``app`` setting. With no
    broker configured (the embedded default) the client starts an in-process worker on
    first use, so triggered runs execute; :meth:`close` (or ``with Client() as c``)
    stops it.
    """

    def __init__(self, config_path: str | None = None, **overrides: Any):
        self.runtime = Runtime(load_config(config_path, **overrides))
        self.config = self.runtime.config
        if self.config.app:
            load_app(self.config.app)
        self._stack: ExitStack | None = None

    @property
    def store(self) -> Store:
        return self.runtime.store

    def _ready(self) -> Runtime:
        if self._stack is None:
            self.runtime.ready_store()
            stack = ExitStack()
            stack.enter_context(self.runtime.embedded())
            self._stack = stack
        return self.runtime

    def trigger(self, name: str, params: dict[str, Any] | None = None) -> str:
        """Start a run of workflow ``name``; returns its id. UserError for an unknown
        workflow or bad parameters (nothing is recorded then)."""
        return self._ready().engine.trigger(name, params or {})

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the run to end; returns :meth:`status`. TimeoutError after
        ``timeout`` seconds."""
        self._ready().engine.wait(run_id, timeout=timeout)
        return self.status(run_id)

    def status(self, run_id: str) -> dict[str, Any]:
        """The run and its tasks, as `qflow status --json` prints them."""
        return run_status(self._ready(), run_id)

    def result(self, run_id: str, node: str | None = None) -> Any:
        """What ``node`` (default: the run's last leaf) returned."""
        return task_result(self._ready().store, run_id, node)[1]

    def runs(self, workflow: str | None = None, state: str | None = None,
             limit: int = 20) -> list[dict[str, Any]]:
        """Recent runs, newest first, as `qflow runs --json` prints them."""
        return run_list(self._ready().store, workflow, state, limit)

    def touch_asset(self, name: str) -> dict[str, Any]:
        """Record an update of asset ``name`` (as its producers' successes do): the
        workflows scheduled on it may start. NotFound for an unknown asset."""
        return touch_asset(self._ready().store, name)

    def retry(self, run_id: str, from_node: str | None = None) -> int:
        """Resume a failed or canceled run (and ``from_node`` onwards); returns how many
        tasks were queued at once."""
        return self._ready().engine.resume(run_id, from_node)

    def cancel(self, run_id: str) -> str | None:
        """Cancel the run; returns its state if it ended at once."""
        return self._ready().engine.cancel(run_id)

    def close(self) -> None:
        """Stop the in-process worker (embedded default) and release DB connections."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.runtime.store.dispose()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
