"""The REST API under /qflow/api/v1/ (paths, shapes and status codes: CONTRACT.md).

Answers are the objects the CLI prints with ``--json`` (built by :mod:`qflow.client`);
errors are ``{"error": "one line"}`` with 400 (bad input), 401, 404 (unknown run, task,
workflow), 409 (the run's state does not allow it) or 503 (broker or DB unreachable).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable
from urllib.parse import urlencode

from qflow import authoring, client
from qflow.cli import timing
from qflow.core.states import RUN_STATES
from qflow.errors import UnreachableError, UserError
from qflow.store import observe, read
from qflow.web import metrics, openapi
from qflow.web.auth import QflowHandler, WebSettings

PREFIX = "/qflow/api/v1"
MAX_LIMIT = 1000
TASKS_WHOLE = 10_000      # a run of more tasks comes a page at a time (WEB_JSON_MAX_S was
                          # set at this size)
TASKS_LIMIT = 500         # tasks per page unless ?limit= says
TASKS_MAX_LIMIT = 10_000


class ApiHandler(QflowHandler):
    """An API endpoint: bearer tokens are accepted besides HTTP basic."""

    accepts_tokens = True

    async def call(self, fn: Callable[..., Any], *args: Any, user_error: int = 400) -> Any:
        """``fn(*args)`` off the event loop, qflow's errors turned into answers:
        NotFound 404, Conflict 409, other UserErrors ``user_error``, unreachable 503."""
        try:
            return await self.blocking(fn, *args)
        except client.NotFound as exc:
            self.fail(404, str(exc))
        except client.Conflict as exc:
            self.fail(409, str(exc))
        except UserError as exc:
            self.fail(user_error, str(exc))
        except UnreachableError as exc:
            self.fail(503, str(exc))

    def _when(self, name: str) -> dt.datetime | None:
        value = self.get_query_argument(name, None)
        if not value:
            return None
        try:
            return timing.parse_when(value, dt.datetime.now(dt.timezone.utc))
        except ValueError as exc:
            self.fail(400, f"{name}: {exc}")

    def _int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return default
        if not value.isdigit() or not lo <= int(value) <= hi:
            self.fail(400, f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
        return int(value)

    def known_workflow(self, name: str) -> authoring.WorkflowDef:
        wdef = authoring.WORKFLOWS.get(name)
        if wdef is None:
            self.fail(404, f"unknown workflow {name!r}")
        return wdef

    def known_run(self, conn: Any, run_id: str) -> dict[str, Any]:
        run = read.get_run(conn, run_id, with_tasks=False)
        if run is None:
            raise client.NotFound(f"unknown run {run_id!r}")
        return run


class Workflows(ApiHandler):
    async def get(self) -> None:
        paused = await self.call(client.paused_of, self.runtime.store)
        self.write_json(client.workflow_list(paused))


class Trigger(ApiHandler):
    async def post(self, name: str) -> None:
        wdef = self.known_workflow(name)
        params = self.json_body().get("params") or {}
        if not isinstance(params, dict):
            self.fail(400, '"params" must be a JSON object')
        run_id = await self.call(self.runtime.engine.trigger, wdef.name, params)
        self.set_header("Location", f"{PREFIX}/runs/{run_id}")
        self.write_json({"run_id": run_id}, 201)


class Pause(ApiHandler):
    async def post(self, name: str, action: str) -> None:
        self.known_workflow(name)
        paused = action == "pause"
        changed = await self.call(client.set_paused, self.runtime.store, name, paused)
        self.write_json({"workflow": name, "paused": paused, "changed": changed})


class Runs(ApiHandler):
    async def get(self) -> None:
        args = self._filters()
        limit = self._int("limit", 20, 1, MAX_LIMIT)
        before = self.get_query_argument("before", None) or None
        rows = await self.call(client.run_list, self.runtime.store, args["workflow"],
                               args["state"], limit, args["since"], args["until"], before)
        if len(rows) == limit:
            query = {k: v for k, v in self.request.query_arguments.items() if k != "before"}
            query = {k: v[-1].decode() for k, v in query.items()}
            self.set_header("Link", f'<{PREFIX}/runs?'
                            f'{urlencode({**query, "before": rows[-1]["run_id"]})}>; '
                            'rel="next"')
        self.write_json(rows)

    def _filters(self) -> dict[str, Any]:
        state = self.get_query_argument("state", None) or None
        if state is not None and state not in RUN_STATES:
            self.fail(400, f"unknown state {state!r} (one of: {', '.join(RUN_STATES)})")
        return {"workflow": self.get_query_argument("workflow", None) or None,
                "state": state, "since": self._when("since"), "until": self._when("until")}

class Run(ApiHandler):
    """`status --json` for a run of up to TASKS_WHOLE tasks; above it, or when asked with
    ``limit`` or ``after``, the run with a page of its tasks in node-id order, the next
    page's address (``tasks_next``, also a ``Link: rel="next"`` header) and the run's
    counters (``task_counts``)."""

    async def get(self, run_id: str) -> None:
        paged = {"limit", "after"} & set(self.request.query_arguments)
        limit = self._int("limit", TASKS_LIMIT, 1, TASKS_MAX_LIMIT)
        after = self.get_query_argument("after", None)
        if not paged:
            run = await self.call(self._run, run_id)
            if run["tasks_total"] <= TASKS_WHOLE:
                self.write_json(await self.call(client.run_status, self.runtime, run_id))
                return
        run = await self.call(self._page, run_id, after, limit)
        if run["tasks_next"]:
            self.set_header("Link", f'<{run["tasks_next"]}>; rel="next"')
        self.write_json(run)

    def _run(self, run_id: str) -> dict[str, Any]:
        with self.runtime.store.read() as conn:
            return self.known_run(conn, run_id)

    def _page(self, run_id: str, after: str | None, limit: int) -> dict[str, Any]:
        with self.runtime.store.read() as conn:
            run = self.known_run(conn, run_id)
            if after is not None and not observe.has_node(conn, run_id, after):
                raise UserError(f"after: run {run_id} has no task {after!r}")
            tasks = observe.task_page(conn, run_id, after, limit + 1)
            run["task_counts"] = observe.run_counters(conn, run_id)
            run["triggered_by"] = read.triggered_by(conn, run_id)
        run["tasks"] = tasks[:limit]
        run["tasks_next"] = f"{PREFIX}/runs/{run_id}?" + urlencode(
            {"limit": limit, "after": tasks[limit - 1]["node"]}) if len(tasks) > limit else None
        return run


class Result(ApiHandler):
    async def get(self, run_id: str, node: str) -> None:
        node, value = await self.call(client.task_result, self.runtime.store, run_id, node)
        self.write_json({"node": node, "value": value})


class Logs(ApiHandler):
    async def get(self, run_id: str, node: str) -> None:
        attempt = self._int("attempt", 0, 1, 1_000_000) or None
        self.write_json(await self.call(client.task_log, self.runtime.store, run_id, node,
                                        attempt))


class Retry(ApiHandler):
    async def post(self, run_id: str) -> None:
        from_node = self.json_body().get("from")
        if from_node is not None and not isinstance(from_node, str):
            self.fail(400, '"from" must be a node id (a string)')
        released = await self.call(self._retry, run_id, from_node, user_error=409)
        self.write_json({"run_id": run_id, "released": released})

    def _retry(self, run_id: str, from_node: str | None) -> int:
        with self.runtime.store.read() as conn:
            self.known_run(conn, run_id)
            if from_node is not None and not observe.has_node(conn, run_id, from_node):
                raise client.NotFound(f"run {run_id} has no task {from_node!r}")
        return self.runtime.engine.resume(run_id, from_node)


class Cancel(ApiHandler):
    async def post(self, run_id: str) -> None:
        state = await self.call(self._cancel, run_id, user_error=409)
        self.write_json({"run_id": run_id, "state": state})

    def _cancel(self, run_id: str) -> str:
        with self.runtime.store.read() as conn:
            self.known_run(conn, run_id)
        ended = self.runtime.engine.cancel(run_id)
        if ended is not None:
            return ended
        with self.runtime.store.read() as conn:      # running tasks are being revoked
            return self.known_run(conn, run_id)["state"]


class TouchAsset(ApiHandler):
    async def post(self, name: str) -> None:
        self.write_json(await self.call(client.touch_asset, self.runtime.store, name))


class OpenApi(ApiHandler):
    def get(self) -> None:
        self.write_json(openapi.document())


def handlers(runtime: Any, settings: WebSettings) -> list:
    """The API's routes (and /qflow/metrics), each handler given the runtime and the web
    settings."""
    kw = dict(runtime=runtime, web=settings)
    run, node = r"/runs/([^/]+)", r"/tasks/([^/]+)"
    return [(PREFIX + path, handler, kw) for path, handler in (
        (r"/workflows", Workflows),
        (r"/workflows/([^/]+)/runs", Trigger),
        (r"/workflows/([^/]+)/(pause|unpause)", Pause),
        (r"/runs", Runs),
        (run, Run),
        (run + node + r"/result", Result),
        (run + node + r"/logs", Logs),
        (run + r"/retry", Retry),
        (run + r"/cancel", Cancel),
        (r"/assets/([^/]+)/touch", TouchAsset),
        (r"/openapi.json", OpenApi),
    )] + [(r"/qflow/metrics", metrics.MetricsHandler,
           dict(kw, collector=metrics.Collector()))]
