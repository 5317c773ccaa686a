"""The console's HTML pages under /qflow/ (paths: CONTRACT.md) and the small JSON
documents the run page polls. Every page is a Tornado template (autoescaped); the run
page draws its graph, Gantt and table in the browser from :mod:`qflow.web.runview`'s
documents, and its live updates ask only for the tasks that changed."""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from urllib.parse import urlencode

from qflow import authoring, client
from qflow.cli.timing import parse_when
from qflow.core import params as P
from qflow.core.states import RUN_STATES
from qflow.engine import scheduler as S
from qflow.errors import ParamError, QflowError, UserError
from qflow.store import mapview, observe, read, schedules
from qflow.store.transitions import utcnow
from qflow.web import runview
from qflow.web.auth import QflowHandler, Refused, WebSettings

RUN = r"([0-9a-f]{32})"
POLL_MS = 1000            # how often an open run page asks what changed
GRID_RUNS = 25            # columns of the workflow grid
LAST_RUNS = 12            # dots per workflow on the workflows page
PAGE_SIZE = 50            # runs per page of the runs list
GANTT_TASKS = 100_000     # a run of more tasks has no Gantt (it reads every attempt)


class Page(QflowHandler):
    """A console page: errors other than 401 come back as a page, not JSON."""

    def render_page(self, template: str, tab: str = "", **values: Any) -> None:
        self.render(template, tab=tab, in_flower=self.web.in_flower,
                    notice=self.get_query_argument("notice", None),
                    problem=self.get_query_argument("error", None), **values)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 401 or self.request.path.endswith(".json"):
            super().write_error(status_code, **kwargs)
            return
        message = exc.message if isinstance(exc, Refused) else self._reason
        self.render_page("error.html", status=status_code, message=message)

    def back(self, url: str, **query: str) -> None:
        """Redirect (303) to ``url`` with a notice or error to show there."""
        self.redirect(url + ("?" + urlencode(query) if query else ""), status=303)

    def query(self, fn, *args: Any) -> Any:
        """``fn(conn, *args)`` on a read connection (call through :meth:`blocking`)."""
        with self.runtime.store.read() as conn:
            return fn(conn, *args)

    async def run_or_404(self, run_id: str) -> dict[str, Any]:
        run = await self.blocking(self.query, read.get_run, run_id, False)
        if run is None:
            self.fail(404, f"unknown run {run_id!r}")
        return run

    def workflow_or_404(self, name: str) -> authoring.WorkflowDef:
        try:
            return self.runtime.engine.workflow(name)
        except UserError as exc:
            raise Refused(404, str(exc)) from None


# -- workflows -----------------------------------------------------------------------
class WorkflowsPage(Page):
    async def get(self) -> None:
        names = sorted(authoring.WORKFLOWS)
        paused, recent = await self.blocking(self._load, names)
        now = S.now_aware()
        rows = [{"name": n, "params": _describe(authoring.WORKFLOWS[n]),
                 "recent": recent[n],
                 **S.schedule_summary(authoring.WORKFLOWS[n], n in paused, now)}
                for n in names]
        self.render_page("workflows.html", tab="workflows", workflows=rows)

    def _load(self, names: list[str]) -> tuple[set[str], dict[str, list]]:
        with self.runtime.store.read() as conn:
            return (schedules.paused_workflows(conn),
                    {n: observe.recent_states(conn, n, LAST_RUNS) for n in names})


class PauseAction(Page):
    async def post(self, name: str, action: str) -> None:
        self.workflow_or_404(name)
        paused = action == "pause"
        await self.blocking(client.set_paused, self.runtime.store, name, paused)
        back = self.get_body_argument("next", "/qflow/")
        self.back(back if back.startswith("/qflow/") else "/qflow/",
                  notice=f"{name} {'paused' if paused else 'unpaused'}")


class WorkflowPage(Page):
    """The grid of recent runs × tasks and the Trigger form."""

    async def get(self, name: str) -> None:
        wdef = self.workflow_or_404(name)
        await self.show(wdef, _form_values(wdef), {}, None)

    async def post(self, name: str) -> None:
        wdef = self.workflow_or_404(name)
        given = {p: self.get_body_argument(f"param.{p}", "").strip() for p in wdef.params}
        given = {p: v for p, v in given.items() if v != ""}      # empty: the default
        errors = field_errors(wdef, given)
        problem = None
        if not errors:
            try:
                run_id = await self.blocking(self.runtime.engine.trigger, name, given)
            except QflowError as exc:
                problem = str(exc)
            else:
                self.back(f"/qflow/runs/{run_id}", notice="run triggered")
                return
        self.set_status(400)
        typed = {k: v for k, v in given.items() if not P.is_secret(wdef.params[k].type)}
        await self.show(wdef, {**_form_values(wdef), **typed}, errors, problem)

    async def show(self, wdef: authoring.WorkflowDef, values: dict[str, str],
                   errors: dict[str, str], problem: str | None) -> None:
        runs, cells, paused = await self.blocking(self._grid, wdef.name)
        self.render_page("workflow.html", tab="workflows", wdef=wdef, values=values,
                         errors=errors, form_error=problem, runs=runs,
                         rows=runview.grid(runs, cells), paused=paused,
                         summary=S.schedule_summary(wdef, paused, S.now_aware()),
                         fields=_fields(wdef))

    def _grid(self, name: str) -> tuple[list[dict], list[tuple], bool]:
        with self.runtime.store.read() as conn:
            runs = observe.runs_page(conn, workflow=name, limit=GRID_RUNS)[::-1]
            cells = observe.grid_cells(conn, [r["run_id"] for r in runs])
            return runs, cells, name in schedules.paused_workflows(conn)


def field_errors(wdef: authoring.WorkflowDef, given: dict[str, str]) -> dict[str, str]:
    """Each field's error, found by the same validation `qflow trigger -p` runs, one
    parameter at a time so that each message goes next to its field."""
    merged = {**(wdef.options.get("params") or {}), **given}
    errors = {}
    for name, param in wdef.params.items():
        try:
            P.resolve({name: param}, {name: merged[name]} if name in merged else {}, wdef.name)
        except ParamError as exc:
            errors[name] = str(exc)
    return errors


def _form_values(wdef: authoring.WorkflowDef) -> dict[str, str]:
    """Each parameter's default as one would type it after ``-p name=`` (none for a
    Secret: its field starts empty, and empty means the default)."""
    defaults = {n: p.default for n, p in wdef.params.items() if not p.required}
    defaults.update(wdef.options.get("params") or {})
    return {n: v if isinstance(v, str) else json.dumps(P.to_json(v), default=str)
            for n, v in defaults.items() if not P.is_secret(wdef.params[n].type)}


def _fields(wdef: authoring.WorkflowDef) -> list[dict[str, Any]]:
    return [{"name": n, "type": P.type_name(p.type) or "any", "required": p.required,
             "bool": p.type is bool, "secret": P.is_secret(p.type)}
            for n, p in wdef.params.items()]


def _describe(wdef: authoring.WorkflowDef) -> list[tuple[str, str]]:
    return [(n, p.describe()) for n, p in wdef.params.items()]


# -- runs ----------------------------------------------------------------------------
class RunsPage(Page):
    async def get(self) -> None:
        q = {k: self.get_query_argument(k, "").strip()
             for k in ("workflow", "state", "since", "until", "before")}
        keep = {k: v for k, v in q.items() if v and k != "before"}
        runs, older, problem = [], None, None
        try:
            filters = _run_filters(q)
        except ValueError as exc:
            self.set_status(400)
            problem = str(exc)
        else:
            runs = await self.blocking(self.query, observe.runs_page, *filters, PAGE_SIZE + 1)
            if len(runs) > PAGE_SIZE:
                runs = runs[:PAGE_SIZE]
                older = "?" + urlencode({**keep, "before": _page_key(runs[-1])})
        self.render_page("runs.html", tab="runs", q=q, runs=runs, older=older,
                         newest="?" + urlencode(keep), form_error=problem, states=RUN_STATES,
                         iso=read.iso, workflows=sorted(authoring.WORKFLOWS))


def _run_filters(q: dict[str, str]) -> tuple:
    """(workflow, state, since, until, before) from the runs page's query; ValueError
    with a one-line reason for a bad one."""
    if q["state"] and q["state"] not in RUN_STATES:
        raise ValueError(f"unknown state {q['state']!r} (one of {', '.join(RUN_STATES)})")
    now = dt.datetime.now(dt.timezone.utc)
    when = {}
    for key in ("since", "until"):
        try:
            when[key] = parse_when(q[key], now) if q[key] else None
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return (q["workflow"] or None, q["state"] or None, when["since"], when["until"],
            _parse_key(q["before"]) if q["before"] else None)


def _page_key(run: dict[str, Any]) -> str:
    return f"{run['created_at'].isoformat()}~{run['run_id']}"


def _parse_key(text: str) -> tuple[dt.datetime, str]:
    at, _, run_id = text.partition("~")
    try:
        if not re.fullmatch(RUN, run_id):
            raise ValueError
        return dt.datetime.fromisoformat(at), run_id
    except ValueError:
        raise ValueError(f"bad page key {text!r}") from None


# -- assets --------------------------------------------------------------------------
class AssetsPage(Page):
    """Each asset as `qflow assets --json` lists it."""

    async def get(self) -> None:
        rows = await self.blocking(client.asset_list, self.runtime.store)
        self.render_page("assets.html", tab="assets", assets=rows)


# -- one run -------------------------------------------------------------------------
class RunPage(Page):
    async def get(self, run_id: str) -> None:
        run = await self.run_or_404(run_id)
        run["triggered_by"] = await self.blocking(self.query, read.triggered_by, run_id)
        base = f"/qflow/runs/{run_id}"
        app = {"view": f"{base}/view.json", "changes": f"{base}/changes.json",
               "task": f"{base}/task.json", "attempt": f"{base}/attempt.json",
               "elements": f"{base}/elements.json",
               "gantt": f"{base}/gantt.json", "api": f"/qflow/api/v1/runs/{run_id}",
               "retry": f"{base}/retry", "xsrf": self.xsrf_token.decode(), "poll": POLL_MS,
               "focus": self.get_query_argument("task", ""),
               "flower": "/task/" if self.web.in_flower else ""}
        self.render_page("run.html", tab="runs", run=run, app=app)


class RunAction(Page):
    """Retry (optionally from a node) or cancel, then back to the run page."""

    async def post(self, run_id: str, action: str) -> None:
        engine = self.runtime.engine
        try:
            if action == "cancel":
                state = await self.blocking(engine.cancel, run_id)
                notice = f"canceled; the run is {state}" if state else "cancel requested"
            else:
                node = self.get_body_argument("from", "").strip() or None
                n = await self.blocking(engine.resume, run_id, node)
                notice = f"retrying{' from ' + node if node else ''}: {n} task(s) released"
        except QflowError as exc:
            self.back(f"/qflow/runs/{run_id}", error=str(exc))
            return
        self.back(f"/qflow/runs/{run_id}", notice=notice)


def big_run(run: dict[str, Any]) -> bool:
    """Whether the run page reads ``run`` without a row per element of its big maps."""
    return run["tasks_total"] > mapview.LETTERS_MAX


class RunView(Page):
    async def get(self, run_id: str) -> None:
        run = await self.run_or_404(run_id)
        if big_run(run):
            *shape, maps = await self.blocking(self.query, mapview.big_view_shape, run_id)
        else:
            shape, maps = await self.blocking(self.query, observe.view_shape, run_id), {}
        view = runview.build_view(run, *shape, maps=maps)
        self.write_json({**view, "letters_max": mapview.LETTERS_MAX})


class RunChanges(Page):
    """What changed since the page's cursor: the run row and one indexed task query."""

    async def get(self, run_id: str) -> None:
        since = _since(self.get_query_argument("since", ""))
        run, (rows, latest) = await self.blocking(self._load, run_id, since)
        if run is None:
            self.fail(404, f"unknown run {run_id!r}")
        self.write_json({"run": run, "tasks": [runview.wire(r) for r in rows],
                         "cursor": runview.cursor_after(latest, since)})

    def _load(self, run_id: str, since: dt.datetime
              ) -> tuple[dict | None, tuple[list[tuple], dt.datetime | None]]:
        with self.runtime.store.read() as conn:
            run = read.get_run(conn, run_id, with_tasks=False)
            if run is None:
                return None, ([], None)
            # A big run's map queues all its elements at once: only the latest of them.
            most = mapview.WINDOW if big_run(run) else None
            return run, observe.changed_since(conn, run_id, since, most)


class ElementsPage(Page):
    """A page of a big map's elements: ``{"size", "first", "letters"}`` (one state
    letter each, as view.json's groups), from element ``first``."""

    async def get(self, run_id: str) -> None:
        node = self.get_query_argument("node", "")
        first = _whole(self.get_query_argument("first", "0"), "first")
        count = min(_whole(self.get_query_argument("count", "400"), "count"),
                    mapview.PAGE_MAX)
        found = await self.blocking(self.query, mapview.element_page, run_id, node, first,
                                    count)
        if found is None:
            self.fail(404, f"run {run_id} has no task {node!r}")
        size, rows = found
        states = {runview.element_of(n, {node})[1]: s for n, s in rows}
        letters = "".join(runview.CODES.get(states.get(i), "P")
                          for i in range(first, min(first + count, size)))
        self.write_json({"node": node, "size": size, "first": first, "letters": letters})


def _whole(text: str, name: str) -> int:
    if not text.isdigit():
        raise Refused(400, f"{name} must be a whole number, got {text!r}")
    return int(text)


def _since(text: str) -> dt.datetime:
    if not text:
        return runview.EPOCH
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Refused(400, f"bad since {text!r}: expected an ISO time") from None
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


class TaskDetail(Page):
    async def get(self, run_id: str) -> None:
        node = self.get_query_argument("node", "")
        found = await self.blocking(self.query, observe.task_detail, run_id, node)
        if found is None:
            self.fail(404, f"run {run_id} has no task {node!r}")
        self.write_json(found)


class AttemptText(Page):
    async def get(self, run_id: str) -> None:
        node = self.get_query_argument("node", "")
        try:
            number = int(self.get_query_argument("attempt", ""))
        except ValueError:
            raise Refused(400, "attempt must be a number") from None
        found = await self.blocking(self.query, observe.attempt_traceback, run_id, node, number)
        if found is None:
            self.fail(404, f"task {node!r} has no attempt {number}")
        self.write_json(found)


class RunGantt(Page):
    async def get(self, run_id: str) -> None:
        run = await self.run_or_404(run_id)
        if run["tasks_total"] > GANTT_TASKS:    # every attempt of a million tasks
            self.write_json({"span": 0, "rows": [], "more": 0, "critical": [], "start": None,
                             "note": f"The Gantt is drawn for runs of up to {GANTT_TASKS} "
                                     f"tasks; this one has {run['tasks_total']}."})
            return
        shown, elements, edges, _ = await self.blocking(self.query, observe.view_shape, run_id)
        spans = await self.blocking(self.query, observe.attempt_spans, run_id)
        self.write_json(runview.gantt(shown, elements, spans, edges, utcnow()))


def handlers(runtime: Any, settings: WebSettings) -> list:
    """The console's routes, each handler given the runtime and the web settings."""
    kw = dict(runtime=runtime, web=settings)
    run = "/qflow/runs/" + RUN
    return [(r"/qflow/?", WorkflowsPage, kw),
            (r"/qflow/workflows/([^/]+)/(pause|unpause)", PauseAction, kw),
            (r"/qflow/workflows/([^/]+)", WorkflowPage, kw),
            (r"/qflow/runs/?", RunsPage, kw),
            (r"/qflow/assets/?", AssetsPage, kw),
            (run, RunPage, kw),
            (run + r"/(retry|cancel)", RunAction, kw),
            (run + r"/view\.json", RunView, kw),
            (run + r"/changes\.json", RunChanges, kw),
            (run + r"/elements\.json", ElementsPage, kw),
            (run + r"/task\.json", TaskDetail, kw),
            (run + r"/attempt\.json", AttemptText, kw),
            (run + r"/gantt\.json", RunGantt, kw)]
