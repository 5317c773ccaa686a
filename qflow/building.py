"""What a workflow body's task calls build: one node per call, the handles that stand for
them, the edges between them. A run of a million tasks calls :meth:`Builder.add` a million
times, so the work per call is kept to what differs between calls: what a task
contributes to every node of it is worked out once per build, plain arguments are taken
as they are, and the data edges are noted as the arguments are read, not searched for
again afterwards."""
from __future__ import annotations

import json
from typing import Any

from qflow.core import dag
from qflow.core import params as P
from qflow.errors import UserError

# Options that go into each task row (JSON), as opposed to callables kept in the process.
ROW_OPTIONS = ("retries", "retry_delay", "retry_backoff", "max_retry_delay", "retry_jitter",
               "timeout", "pool", "priority", "isolation", "result_max_bytes", "branch",
               "serializer", "outlets", "sensor", "deadline")
_PLAIN = frozenset({str, int, float, bool, type(None)})     # JSON as they are
# The keyword arguments of every node called without any, and the options of the nodes of
# one task: shared, since nothing changes a node once it is built.
_NO_KWARGS: dict = {}


class Handle:
    """What a task call returns inside a workflow body: a reference to a node."""

    __slots__ = ("node_id", "ref", "_builder")

    def __init__(self, node_id: str, builder: Builder):
        self.node_id = node_id
        self.ref = {dag.REF_KEY: node_id}      # how a child's arguments name this node
        self._builder = builder

    def __rshift__(self, other):          # self >> other: other runs after self
        self._builder.order(self, other)
        return other

    def __lshift__(self, other):          # self << other: self runs after other
        self._builder.order(other, self)
        return other

    def __rrshift__(self, other):         # [a, b] >> self
        self._builder.order(other, self)
        return self

    def __rlshift__(self, other):         # [a, b] << self
        self._builder.order(self, other)
        return self

    def __repr__(self) -> str:
        return f"<qflow node {self.node_id}>"

    def __bool__(self) -> bool:
        raise UserError(f"node {self.node_id!r} has no value while the workflow is built; "
                        "pass it to a task instead of testing it in the workflow body")


class Builder:
    """Collects the nodes and edges while a workflow body runs."""

    def __init__(self, workflow: str):
        self.workflow = workflow
        self.nodes: dict[str, dag.Node] = {}
        self.order_edges: list[tuple[str, str]] = []
        # node -> the nodes whose values it takes (a list, not a set: a million sets would
        # take 130 MB more; a node taking one twice is one edge, see dag.build_graph)
        self.parents: dict[str, list[str]] = {}
        self._next: dict[str, int] = {}
        self._tasks: dict[int, tuple] = {}           # id(TaskDef) -> what its nodes share

    def graph(self) -> dag.Graph:
        return dag.build_graph(self.workflow, self.nodes, self.order_edges, self.parents)

    def add(self, tdef, args: tuple, kwargs: dict, mapped: bool = False) -> Handle:
        shared = self._tasks.get(id(tdef))
        if shared is None:
            shared = self._tasks[id(tdef)] = _shared(tdef)
        name, key, rule, queue, options = shared
        node_id = self._new_id(name)
        if mapped:
            if options.get("branch"):
                raise UserError(f"node {node_id!r}: a branch task cannot be mapped")
            options = {**options, "map": {}}
        refs: list[str] = []
        self.nodes[node_id] = dag.Node(
            id=node_id, task=key, args=self._arguments(args, node_id, refs),
            kwargs=self._template(kwargs, node_id, refs) if kwargs else _NO_KWARGS,
            trigger_rule=rule, queue=queue, options=options)
        if refs:
            self.parents[node_id] = refs
        return Handle(node_id, self)

    def _arguments(self, args: tuple, node_id: str, refs: list[str]) -> list:
        """The positional arguments as :meth:`_template` makes them, with what most of
        them are (a plain value, a handle of this body) taken here without a call each."""
        out = []
        for value in args:
            kind = type(value)
            if kind in _PLAIN:
                out.append(value)
            elif kind is Handle and value._builder is self:
                refs.append(value.node_id)
                out.append(value.ref)
            else:
                out.append(self._template(value, node_id, refs))
        return out

    def _new_id(self, name: str) -> str:
        n = self._next.get(name, 0)
        self._next[name] = n + 1
        node_id = name if n == 0 else f"{name}__{n}"
        while node_id in self.nodes:
            n += 1
            self._next[name] = n + 1
            node_id = f"{name}__{n}"
        return node_id

    def _template(self, value: Any, node_id: str, refs: list[str]) -> Any:
        """``value`` as JSON-ready data, a handle written ``{"__qflow_ref__": id}`` (its id
        noted in ``refs``), a Secret parameter by name."""
        if type(value) in _PLAIN:
            return value
        if isinstance(value, Handle):
            refs.append(self._own(value).node_id)
            return value.ref
        if isinstance(value, (list, tuple)):
            return [self._template(v, node_id, refs) for v in value]
        if isinstance(value, dict):
            return {str(k): self._template(v, node_id, refs) for k, v in value.items()}
        return _other(value, node_id)

    def order(self, before: Any, after: Any) -> None:
        for b in self._handles(before):
            for a in self._handles(after):
                self.order_edges.append((b.node_id, a.node_id))

    def _handles(self, value: Any) -> list[Handle]:
        items = value if isinstance(value, (list, tuple, set)) else [value]
        if not all(isinstance(h, Handle) for h in items):
            raise UserError(f"workflow {self.workflow!r}: >> and << take task calls "
                            f"(or lists of them), got {value!r}")
        return [self._own(h) for h in items]

    def _own(self, handle: Handle) -> Handle:
        """``handle``, if a call of this body made it: one kept from another body, or from
        an earlier expansion, may name a node this graph does not have, or another."""
        if handle._builder is not self:
            raise UserError(f"workflow {self.workflow!r}: {handle!r} was made by another "
                            "workflow body, or an earlier run of this one: pass only the "
                            "values of this body's own task calls")
        return handle


def _shared(tdef) -> tuple:
    """What every node of task ``tdef`` has in common: name, registry key, trigger rule,
    queue and the options its rows keep."""
    opts = tdef.options
    return (tdef.name, tdef.key, opts.get("trigger_rule", "all_success"), opts.get("queue"),
            {k: opts[k] for k in ROW_OPTIONS if opts.get(k) is not None})


def _other(value: Any, node_id: str) -> Any:
    """An argument that is neither plain JSON, a handle, a list nor a dict."""
    from qflow.authoring import TaskDef

    if isinstance(value, TaskDef):
        raise UserError(f"node {node_id!r}: got task {value.name!r} itself; call it "
                        f"({value.name}(...)) to use its result")
    if isinstance(value, P.Secret):    # the worker puts the value in, from the run
        if value.name is None:
            raise UserError(f"node {node_id!r}: a Secret passed to a task must be a "
                            "workflow parameter annotated Secret")
        return {P.PARAM_KEY: value.name}
    value = P.to_json(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise UserError(f"node {node_id!r}: argument {value!r} is not JSON-serialisable"
                        ) from None
    return value
