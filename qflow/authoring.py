"""The authoring API: ``@task`` and ``@workflow`` (what a workflow body's calls build is in
:mod:`qflow.building`)."""
from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from qflow.building import Builder
from qflow.core import dag
from qflow.core import params as P
from qflow.core.durations import parse_duration
from qflow.core.states import TRIGGER_RULES
from qflow.errors import UserError

TASK_OPTIONS = frozenset({
    "name", "retries", "retry_delay", "retry_backoff", "max_retry_delay", "retry_jitter",
    "retry_on", "timeout", "queue", "trigger_rule", "pool", "priority", "isolation",
    "on_failure", "on_success", "on_retry", "result_max_bytes", "serializer", "outlets",
    "deadline", "on_late",
    # isolation="container": the image and how to run it (see container())
    "image", "env", "volumes", "workdir", "user", "network", "cpus", "memory", "pull",
})
CONTAINER_OPTIONS = ("image", "env", "volumes", "workdir", "user", "network", "cpus",
                     "memory", "pull")
WORKFLOW_OPTIONS = frozenset({
    "name", "schedule", "timezone", "start_date", "end_date", "catchup", "max_active_runs",
    "max_active_tasks", "fail_fast", "on_failure", "on_success", "description", "params",
    "deadline", "on_late",
})
TASKS: dict[str, "TaskDef"] = {}
WORKFLOWS: dict[str, "WorkflowDef"] = {}

_builder: contextvars.ContextVar["Builder | None"] = contextvars.ContextVar(
    "qflow_builder", default=None)


class OptionError(UserError, TypeError):
    """An unknown or ill-typed decorator option."""


def _check_options(kind: str, target: str, given: dict, allowed: frozenset) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise OptionError(f"@{kind} on {target!r}: unknown option {unknown[0]!r} "
                          f"(allowed: {', '.join(sorted(allowed))})")


def _identity(fn: Callable) -> tuple[str, str]:
    code = getattr(fn, "__code__", None)
    return (code.co_filename if code else fn.__module__, fn.__qualname__)


@dataclass(eq=False)
class TaskDef:
    """A decorated task function. Called in a workflow body it adds a node."""

    fn: Callable
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"

    @property
    def name(self) -> str:
        return self.options.get("name") or self.fn.__name__

    def __call__(self, *args, **kwargs):
        builder = _builder.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add(self, args, kwargs)

    def map(self, items, *args, **kwargs):
        """One task instance per element of ``items`` (a list, or a handle whose value is
        a list at run time), each called as ``fn(element, *args, **kwargs)``. A child
        receives the list of their results, in order."""
        builder = _builder.get()
        if builder is None:
            return [self.fn(item, *args, **kwargs) for item in items]
        return builder.add(self, (items, *args), kwargs, mapped=True)

    def __repr__(self) -> str:
        return f"<qflow task {self.key}>"


def task(fn: Callable | None = None, /, **options) -> Any:
    """Declare a task. Works bare (``@task``) and with options (``@task(retries=3)``)."""
    return _declare(fn, options, branch=False)


def _branch(fn: Callable | None = None, /, **options) -> Any:
    """Declare a branch task: it returns the id (or list of ids) of the children to follow;
    its other children are skipped."""
    return _declare(fn, options, branch=True)


def _sensor(fn: Callable | None = None, /, *, poke_interval: float = 60,
            timeout: float = 3600, mode: str = "reschedule", **options) -> Any:
    """Declare a sensor: poked every ``poke_interval`` seconds until it returns a truthy
    value (its result); between pokes it is ``sensing`` and holds no worker and no pool
    slot. After ``timeout`` seconds it fails with SensorTimeout (and retries as any
    task)."""
    from qflow.sensors import sensor_options

    return _declare(fn, options, branch=False,
                    sensor=sensor_options(poke_interval, timeout, mode))


task.branch = _branch
task.sensor = _sensor


def _declare(fn: Callable | None, options: dict, branch: bool,
             sensor: dict | None = None) -> Any:
    def wrap(f: Callable) -> TaskDef:
        _check_options("task", getattr(f, "__name__", repr(f)), options, TASK_OPTIONS)
        _validate_task_options(f.__name__, options)
        extra = {"branch": True} if branch else {"sensor": sensor} if sensor else {}
        tdef = TaskDef(f, {**options, **extra})
        functools.update_wrapper(tdef, f, updated=())
        TASKS[tdef.key] = tdef
        return tdef
    if fn is not None:
        if not callable(fn):
            raise OptionError(f"@task takes options as keywords, got {fn!r}")
        return wrap(fn)
    return wrap


def _validate_task_options(name: str, options: dict) -> None:
    rule = options.get("trigger_rule", "all_success")
    if rule not in TRIGGER_RULES:
        raise OptionError(f"@task on {name!r}: unknown trigger_rule {rule!r} "
                          f"(one of: {', '.join(TRIGGER_RULES)})")
    for key in ("retries", "timeout", "retry_delay", "retry_backoff", "max_retry_delay",
                "priority", "result_max_bytes"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise OptionError(f"@task on {name!r}: {key} must be a number >= 0, got {value!r}")
    if options.get("isolation") not in (None, "subprocess", "container"):
        raise OptionError(f"@task on {name!r}: isolation must be 'subprocess' or "
                          f"'container', got {options['isolation']!r}")
    if options.get("isolation") == "container" or any(
            options.get(k) is not None for k in CONTAINER_OPTIONS):
        from qflow.command_tasks import validate_container
        validate_container(name, options)
    priority = options.get("priority")
    if priority is not None and (not isinstance(priority, int) or not 0 <= priority <= 9):
        raise OptionError(f"@task on {name!r}: priority must be an int from 0 to 9 "
                          f"(9 runs first), got {priority!r}")
    if options.get("serializer") not in (None, "json", "pickle"):
        raise OptionError(f"@task on {name!r}: serializer must be 'json' or 'pickle', got "
                          f"{options['serializer']!r}")
    queue = options.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise OptionError(f"@task on {name!r}: queue must be a non-empty string")
    retry_on = options.get("retry_on")
    if retry_on is not None:
        kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        if not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
            raise OptionError(f"@task on {name!r}: retry_on must be an exception class or a "
                              f"tuple of them, got {retry_on!r}")
        options["retry_on"] = kinds
    for hook in ("on_failure", "on_success", "on_retry", "on_late"):
        if options.get(hook) is not None and not callable(options[hook]):
            raise OptionError(f"@task on {name!r}: {hook} must be callable")
    _deadline_option("task", name, options)
    if options.get("outlets") is not None:
        from qflow.assets import outlet_names
        options["outlets"] = outlet_names("task", name, options["outlets"])


@dataclass(eq=False)
class WorkflowDef:
    """A decorated workflow body plus its options."""

    fn: Callable
    name: str
    options: dict
    params: dict[str, P.Param]

    def resolve_params(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validated, coerced, JSON-ready parameter values: ``given``, then the workflow's
        ``params=`` option, then the body's defaults."""
        return P.resolve(self.params, {**(self.options.get("params") or {}), **(given or {})},
                         self.name)

    def expand(self, stored_params: dict[str, Any] | None = None) -> dag.Graph:
        """Run the body with a run's parameters and return the validated graph."""
        values = P.body_values(self.params, stored_params or self.resolve_params())
        builder = Builder(self.name)
        token = _builder.set(builder)
        with dag.collection_paused():
            try:
                self.fn(**values)
            except UserError:
                raise
            except Exception as exc:
                raise UserError(f"workflow {self.name!r}: body raised "
                                f"{type(exc).__name__}: {exc}") from exc
            finally:
                _builder.reset(token)
            if not builder.nodes:
                raise UserError(f"workflow {self.name!r} has no tasks")
            return builder.graph()

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _deadline_option(kind: str, name: str, options: dict) -> None:
    """``deadline=`` ("10m", "2h", or seconds) becomes seconds."""
    if options.get("deadline") is None:
        return
    try:
        options["deadline"] = parse_duration(options["deadline"])
    except ValueError as exc:
        raise OptionError(f"@{kind} on {name!r}: deadline: {exc}") from None


def workflow(fn: Callable | None = None, /, **options) -> Any:
    """Declare a workflow. Works bare and with options (``@workflow(name=..., schedule=...)``)."""
    def wrap(f: Callable) -> WorkflowDef:
        _check_options("workflow", getattr(f, "__name__", repr(f)), options, WORKFLOW_OPTIONS)
        name = options.get("name") or f.__name__
        _deadline_option("workflow", name, options)
        for hook in ("on_failure", "on_success", "on_late"):
            if options.get(hook) is not None and not callable(options[hook]):
                raise OptionError(f"@workflow on {name!r}: {hook} must be callable")
        wdef = WorkflowDef(f, name, _split_schedule(name, options), P.params_of(f))
        _validate_schedule(wdef)
        functools.update_wrapper(wdef, f, updated=())
        register_workflow(wdef)
        return wdef
    if fn is not None:
        if not callable(fn):
            raise OptionError(f"@workflow takes options as keywords, got {fn!r}")
        return wrap(fn)
    return wrap


def _split_schedule(name: str, options: dict) -> dict:
    """The options with an asset schedule (a list of Asset) moved to ``assets``."""
    from qflow.assets import split_schedule
    if not options.get("schedule"):
        return dict(options)
    try:
        when, assets = split_schedule(name, options["schedule"])
    except UserError as exc:
        raise OptionError(str(exc)) from None
    return {**options, "schedule": when, **({"assets": assets} if assets else {})}


def _validate_schedule(wdef: WorkflowDef) -> None:
    """Fail at decoration time on a bad schedule, timezone, date or scheduled-run params."""
    from qflow.core.schedule import check_options
    try:
        if check_options(wdef.options) is not None or wdef.options.get("params"):
            wdef.resolve_params(wdef.options.get("params"))
    except UserError as exc:
        raise OptionError(f"@workflow on {wdef.name!r}: {exc}") from None


def register_workflow(wdef: WorkflowDef) -> None:
    """Add to the registry; the same function loaded again replaces itself."""
    existing = WORKFLOWS.get(wdef.name)
    if existing is not None and _identity(existing.fn) != _identity(wdef.fn):
        where = f"{existing.fn.__module__}.{existing.fn.__qualname__}"
        raise UserError(f"duplicate workflow name {wdef.name!r} (also defined by {where})")
    WORKFLOWS[wdef.name] = wdef


def find_task(key: str) -> TaskDef | None:
    """The task registered under ``key``, else the only one with that qualified name."""
    found = TASKS.get(key)
    if found is not None:
        return found
    matches = [t for t in TASKS.values() if key.endswith("." + t.fn.__qualname__)]
    return matches[0] if len(matches) == 1 else None
