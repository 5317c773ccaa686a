"""The OpenAPI 3 description of the REST API, served at /qflow/api/v1/openapi.json."""
from __future__ import annotations

from typing import Any

import qflow

RUN_STATES = ["queued", "running", "succeeded", "failed", "canceled"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _param(name: str, where: str, description: str, schema: dict | None = None,
           required: bool | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description,
            "required": where == "path" if required is None else required,
            "schema": schema or {"type": "string"}}


RUN_ID = _param("run_id", "path", "The run's id (32 hex digits).")
NODE = _param("node", "path", "A node id of the run, e.g. `load` or `process[3]`.")
WORKFLOW = _param("name", "path", "A workflow name.")
COMMON = {"401": _error("Missing or wrong credentials.")}
NO_RUN = {"404": _error("Unknown run, node or workflow.")}


def _op(summary: str, responses: dict[str, Any], params: list | None = None,
        body: dict | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {**responses, **COMMON}}
    if body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": body}}}
    return op


def _schemas() -> dict[str, Any]:
    when = {"type": "string", "format": "date-time", "nullable": True}
    task = {"type": "object", "properties": {
        "node": {"type": "string"}, "state": {"type": "string"},
        "attempts": {"type": "integer"}, "started_at": when, "finished_at": when,
        "error": {"type": "string", "nullable": True},
        "worker": {"type": "string", "nullable": True},
        "celery_id": {"type": "string", "nullable": True},
        "queue": {"type": "string", "nullable": True}}}
    run = {"type": "object", "properties": {
        "run_id": {"type": "string"}, "workflow": {"type": "string"},
        "state": {"type": "string", "enum": RUN_STATES}, "params": {"type": "object"},
        "created_at": when, "started_at": when, "finished_at": when,
        "logical_time": when, "tasks_total": {"type": "integer"},
        "tasks_done": {"type": "integer"}}}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string", "description": "One line."}}},
        "Task": task,
        "Run": run,
        "RunStatus": {"allOf": [_ref("Run"), {"type": "object", "properties": {
            "tasks": {"type": "array", "items": _ref("Task")},
            "summary": {"type": "object", "nullable": True,
                        "description": "Once the run ended: duration, critical path, "
                                       "slowest tasks."},
            "warnings": {"type": "array", "items": {"type": "string"},
                         "description": "Why waiting tasks may never start."}}}]},
        "RunPage": {"allOf": [_ref("Run"), {"type": "object", "properties": {
            "tasks": {"type": "array", "items": _ref("Task")},
            "tasks_next": {"type": "string", "nullable": True,
                           "description": "The next page's address; null on the last."},
            "task_counts": {"type": "object", "description": "The run's counters: total, "
                            "done, left, failed (or upstream_failed), canceled.",
                            "additionalProperties": {"type": "integer"}}}}]},
        "Workflow": {"type": "object", "properties": {
            "name": {"type": "string"},
            "params": {"type": "object", "additionalProperties": {"type": "string"}},
            "tasks": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "schedule": {"type": "string", "nullable": True},
            "paused": {"type": "boolean"},
            "next_fire_time": {"type": "string", "nullable": True},
            "module": {"type": "string"}}},
    }


def _paths() -> dict[str, Any]:
    runs_list = [_param("workflow", "query", "Only this workflow's runs."),
                 _param("state", "query", "Only runs in this state.",
                        {"type": "string", "enum": RUN_STATES}),
                 _param("since", "query", "Created since: an age (30m, 2h, 7d) or ISO time."),
                 _param("until", "query", "Created before: an age or an ISO time."),
                 _param("limit", "query", "At most this many (1-1000, default 20).",
                        {"type": "integer", "minimum": 1, "maximum": 1000}),
                 _param("before", "query", "A run id: the page of runs after it, newest "
                        "first (the `Link: rel=next` header of a full page names it).")]
    ok = {"type": "object"}
    return {
        "/workflows": {"get": _op("Loaded workflows with parameters, tasks and schedule "
                                  "(as `qflow workflows --json`).",
                                  {"200": _json({"type": "array", "items": _ref("Workflow")},
                                                "The workflows.")})},
        "/workflows/{name}/runs": {"post": _op(
            "Trigger a run; parameters are validated as on the command line.",
            {"201": _json({"type": "object", "properties": {"run_id": {"type": "string"}}},
                          "The run was recorded and its first tasks sent."),
             "400": _error("Bad parameters."), **NO_RUN,
             "503": _error("Broker or results DB unreachable.")},
            [WORKFLOW], {"type": "object", "properties": {"params": {"type": "object"}}})},
        "/workflows/{name}/pause": {"post": _op("Stop creating scheduled runs.",
                                                {"200": _json(ok, "Paused."), **NO_RUN},
                                                [WORKFLOW])},
        "/workflows/{name}/unpause": {"post": _op("Resume scheduled runs.",
                                                  {"200": _json(ok, "Unpaused."), **NO_RUN},
                                                  [WORKFLOW])},
        "/runs": {"get": _op("Recent runs, newest first (as `qflow runs --json`).",
                             {"200": _json({"type": "array", "items": _ref("Run")}, "Runs."),
                              "400": _error("Bad filter.")}, runs_list)},
        "/runs/{run_id}": {"get": _op(
            "A run and every task (as `qflow status --json`) for a run of up to 10,000 "
            "tasks; a bigger one, or one asked with `limit` or `after`, with a page of its "
            "tasks in node-id order (RunPage; the next page: `tasks_next`, also the "
            "`Link: rel=next` header).",
            {"200": _json({"oneOf": [_ref("RunStatus"), _ref("RunPage")]}, "The run."),
             "400": _error("Bad limit, or a node the run has no task of as after."),
             **NO_RUN},
            [RUN_ID, _param("limit", "query", "Tasks per page (1-10000, default 500).",
                            {"type": "integer", "minimum": 1, "maximum": 10000}),
             _param("after", "query", "A node id: the page of tasks after it.")])},
        "/runs/{run_id}/tasks/{node}/result": {"get": _op(
            "What a task returned.",
            {"200": _json({"type": "object", "properties": {"node": {"type": "string"},
                                                             "value": {}}}, "The value."),
             **NO_RUN, "409": _error("The task has no result (it has not succeeded).")},
            [RUN_ID, NODE])},
        "/runs/{run_id}/tasks/{node}/logs": {"get": _op(
            "What one attempt printed and logged (default: the latest attempt).",
            {"200": _json({"type": "object", "properties": {
                "text": {"type": "string"}, "attempt": {"type": "integer", "nullable": True},
                "state": {"type": "string"}, "error": {"type": "string", "nullable": True}}},
                "The attempt's output."), **NO_RUN},
            [RUN_ID, NODE, _param("attempt", "query", "Attempt number, 1 first.",
                                  {"type": "integer", "minimum": 1})])},
        "/runs/{run_id}/retry": {"post": _op(
            "Resume a failed or canceled run in place (and `from` a node onwards).",
            {"200": _json({"type": "object", "properties": {"released": {"type": "integer"}}},
                          "Tasks queued at once."), **NO_RUN,
             "409": _error("The run cannot be retried in its state.")},
            [RUN_ID], {"type": "object", "properties": {"from": {"type": "string"}}})},
        "/runs/{run_id}/cancel": {"post": _op(
            "Cancel queued and waiting tasks and revoke running ones.",
            {"200": _json({"type": "object", "properties": {"state": {"type": "string"}}},
                          "The run's state now."), **NO_RUN,
             "409": _error("The run has already ended.")}, [RUN_ID])},
        "/assets/{name}/touch": {"post": _op(
            "Record an external update of an asset.",
            {"200": _json(ok, "Recorded."), "404": _error("Unknown asset.")},
            [_param("name", "path", "The asset's name.")])},
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "qflow REST API", "version": qflow.__version__,
                 "description": "Trigger, watch and steer qflow workflow runs. Errors are "
                                "`{\"error\": \"one line\"}`. POST bodies are JSON "
                                "(`Content-Type: application/json`)."},
        "servers": [{"url": "/qflow/api/v1"}],
        "security": [{"basic": []}, {"bearer": []}],
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                           "bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": _schemas()},
        "paths": _paths(),
    }
