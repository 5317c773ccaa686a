"""The DAG model: nodes, edges, validation and ordering (standard library only)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from qflow.errors import CycleError, UserError

REF_KEY = "__qflow_ref__"


@dataclass(frozen=True)
class Node:
    """One task instance of a workflow: what to call and with which arguments.

    ``args``/``kwargs`` are JSON-ready templates in which a parent's value is written
    ``{"__qflow_ref__": parent_id}``; the worker substitutes the stored results.
    """

    id: str
    task: str                        # registry key of the TaskDef
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    trigger_rule: str = "all_success"
    queue: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    """A validated workflow graph: nodes in creation order and (parent, child) edges."""

    workflow: str
    nodes: dict[str, Node]
    edges: frozenset[tuple[str, str]]

    def parents(self, node_id: str) -> list[str]:
        return sorted(p for p, c in self.edges if c == node_id)

    def children(self, node_id: str) -> list[str]:
        return sorted(c for p, c in self.edges if p == node_id)

    def roots(self) -> list[str]:
        has_parent = {c for _, c in self.edges}
        return [n for n in self.nodes if n not in has_parent]

    def leaves(self) -> list[str]:
        has_child = {p for p, _ in self.edges}
        return [n for n in self.nodes if n not in has_child]

    def order(self) -> list[str]:
        """Node ids in a topological order (stable: creation order breaks ties)."""
        return topological_order(self.nodes, self.edges)


def refs_in(value: Any) -> set[str]:
    """Node ids referenced anywhere inside a JSON-ready template."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if REF_KEY in item and len(item) == 1:
                found.add(item[REF_KEY])
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def substitute(value: Any, results: dict[str, Any]) -> Any:
    """Replace each ``{"__qflow_ref__": id}`` in a template by ``results[id]``."""
    if isinstance(value, dict):
        if REF_KEY in value and len(value) == 1:
            return results.get(value[REF_KEY])
        return {k: substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    return value


def topological_order(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm; raises CycleError naming the nodes of one cycle."""
    order_index = {n: i for i, n in enumerate(nodes)}
    children: dict[str, list[str]] = {n: [] for n in order_index}
    indegree = dict.fromkeys(order_index, 0)
    for parent, child in edges:
        children[parent].append(child)
        indegree[child] += 1
    ready = deque(n for n in order_index if indegree[n] == 0)
    out: list[str] = []
    while ready:
        node = ready.popleft()
        out.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(out) < len(order_index):
        stuck = {n for n, d in indegree.items() if d > 0}
        raise CycleError("cycle in workflow: " + " -> ".join(find_cycle(stuck, children)))
    return out


def find_cycle(stuck: set[str], children: dict[str, list[str]]) -> list[str]:
    """One cycle among ``stuck`` nodes, as a closed path ``[a, b, ..., a]``."""
    start = min(stuck)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(c for c in children[node] if c in stuck)
    return path[seen[node]:] + [node]


def build_graph(workflow: str, nodes: dict[str, Node],
                order_edges: Iterable[tuple[str, str]]) -> Graph:
    """Combine data edges (from refs) with order-only edges and validate the result."""
    edges: set[tuple[str, str]] = set()
    for node in nodes.values():
        data_parents = refs_in(node.args) | refs_in(node.kwargs)
        if data_parents and node.trigger_rule == "always":
            raise UserError(f"node {node.id!r}: trigger_rule 'always' cannot take "
                            "another task's value (use 'all_done')")
        edges.update((p, node.id) for p in data_parents)
    for parent, child in order_edges:
        if parent == child:
            raise CycleError(f"cycle in workflow: {parent} -> {parent}")
        edges.add((parent, child))
    unknown = {n for e in edges for n in e if n not in nodes}
    if unknown:
        raise UserError(f"workflow {workflow!r} refers to unknown nodes: {sorted(unknown)}")
    graph = Graph(workflow, dict(nodes), frozenset(edges))
    topological_order(graph.nodes, graph.edges)
    return graph
