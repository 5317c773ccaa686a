"""The DAG model: nodes, edges, validation and ordering (standard library only)."""
from __future__ import annotations

import gc
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from qflow.errors import CycleError, UserError

REF_KEY = "__qflow_ref__"


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a big graph is built or written. A
    body making a million nodes, with their argument lists and edges, would otherwise
    have it go over all of them again and again as they pile up (a third of the time of
    300,000 nodes), to find no garbage: everything built is kept until the run is
    committed. Once resumed, the first collection would still go over every object made
    meanwhile (3 s of a million nodes' 15): they are moved to the oldest generation at
    once instead (freeze + unfreeze, two list splices), looked at only by the next full
    collection, as long-lived objects are. Left as it is if something else froze objects
    (a process about to fork), which unfreezing would undo."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


@dataclass(frozen=True, slots=True)      # slots: a million nodes take less memory
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
    # The same edges, each once, in the order a workflow body made them (see in_order).
    made: list[tuple[str, str]] | None = field(default=None, compare=False, repr=False)

    def in_order(self) -> list[tuple[str, str]] | frozenset[tuple[str, str]]:
        """The edges in the order they were made, if known, else the set's order. Walking
        a million nodes' edges in the set's order (by hash) jumps all over the memory
        they take: 8 s for two million, where the order they were made in, which is the
        order of their place in memory, takes one."""
        return self.edges if self.made is None else self.made

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
    indegree = dict.fromkeys(nodes, 0)          # in creation order
    children: dict[str, list[str]] = {}         # only nodes that have any
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
        indegree[child] += 1
    ready = deque(n for n, d in indegree.items() if d == 0)
    out: list[str] = []
    while ready:
        node = ready.popleft()
        out.append(node)
        for child in children.get(node, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(out) < len(indegree):
        stuck = {n for n, d in indegree.items() if d > 0}
        raise CycleError("cycle in workflow: " + " -> ".join(find_cycle(stuck, children)))
    return out


def find_cycle(stuck: set[str], children: dict[str, list[str]]) -> list[str]:
    """One cycle among ``stuck`` nodes, as a closed path ``[a, b, ..., a]``. Walked
    backwards: every stuck node has a stuck parent, while a stuck node downstream of a
    cycle may have no child at all."""
    parents: dict[str, list[str]] = {}
    for parent, kids in children.items():
        if parent in stuck:
            for child in kids:
                if child in stuck:
                    parents.setdefault(child, []).append(parent)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = min(stuck)
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(parents[node])
    ring = path[seen[node]:][::-1]              # forwards
    first = ring.index(min(ring))               # named from its first node by name
    ring = ring[first:] + ring[:first]
    return ring + ring[:1]


def build_graph(workflow: str, nodes: dict[str, Node],
                order_edges: Iterable[tuple[str, str]],
                parents: dict[str, list[str]]) -> Graph:
    """Combine data edges with order-only edges and validate the result. ``parents`` maps
    each node to the nodes whose values it takes, each made before it (a body passes only
    its own calls' handles: see qflow.building), so only an order edge can name an
    unknown node or point backwards, and only those are looked at: with a million nodes,
    two million data edges are not looked up again. A node may name a parent twice (it
    takes its value twice): one edge."""
    for child in parents:
        if nodes[child].trigger_rule == "always":
            raise UserError(f"node {child!r}: trigger_rule 'always' cannot take "
                            "another task's value (use 'all_done')")
    order_edges = list(order_edges)
    for parent, child in order_edges:
        if parent == child:
            raise CycleError(f"cycle in workflow: {parent} -> {parent}")
    made = [(p, c) for c, found in parents.items() for p in found]
    made.extend(order_edges)
    edges = frozenset(made)
    if len(edges) < len(made):                  # a parent named twice, by values or order
        made = list(dict.fromkeys(made))
    # Nodes are made in the body's order and a call takes only values made before it, so
    # a graph whose every order edge goes forward in that order has no cycle: only then
    # is the full check (Kahn's algorithm, which names a cycle) left out.
    position = {n: i for i, n in enumerate(nodes)} if order_edges else {}
    unknown: set[str] = set()
    forward = True
    for parent, child in order_edges:
        before, after = position.get(parent), position.get(child)
        if before is None or after is None:
            unknown.update(n for n in (parent, child) if n not in position)
        elif before >= after:
            forward = False
    if unknown:
        raise UserError(f"workflow {workflow!r} refers to unknown nodes: {sorted(unknown)}")
    graph = Graph(workflow, dict(nodes), edges, made)
    if not forward:
        topological_order(graph.nodes, graph.edges)
    return graph
