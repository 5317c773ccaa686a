"""A new run's rows are the same however they are written: in one statement (a small run
on PostgreSQL), by COPY (a big one; binary format), or by INSERTs (SQLite)."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from test_store import migrated

from qflow.core.dag import Graph, Node, build_graph
from qflow.store import Store, lifecycle, newrun
from qflow.store.lifecycle import Limits, NewRun
from qflow.store.models import edges, tasks

ODD = ["tab\there", "back\\slash", "new\nline", "cr\rx", "quote\"s", "é漢字", "\\N", ""]


def _graph() -> Graph:
    """Node ids and values with every character COPY's formats treat apart."""
    nodes = {
        "root\t1": Node("root\t1", "flows.odd", args=[*ODD, 1.5, None, True, 2**40],
                        kwargs={"k\\": {"n": ODD}}, queue="q\\1",
                        options={"deadline": 1.25, "priority": 7, "pool": "p\t1"}),
        "é\\2": Node("é\\2", "flows.odd", args=[{"__qflow_ref__": "root\t1"}],
                     trigger_rule="all_done", options={"retries": 3}),
        "plain": Node("plain", "flows.odd", options={"deadline": 30}),   # int and float
        "after": Node("after", "flows.odd"),
    }
    parents = {"é\\2": {"root\t1"}}
    return build_graph("odd", nodes, [("plain", "after"), ("root\t1", "after")], parents)


def _rows(store: Store, run_id: str) -> tuple[list, list]:
    skip = {"id", "run_id", "queued_at"}        # the time of each run's insert: whether set
    columns = [*(c for c in tasks.c if c.name not in skip), tasks.c.queued_at.is_(None)]
    with store.read() as conn:
        task_rows = conn.execute(select(*columns).where(tasks.c.run_id == run_id)
                                 .order_by(tasks.c.node)).all()
        edge_rows = conn.execute(select(edges.c.parent, edges.c.child)
                                 .where(edges.c.run_id == run_id)
                                 .order_by(edges.c.parent, edges.c.child)).all()
    return [tuple(r) for r in task_rows], [tuple(r) for r in edge_rows]


def _insert(store: Store, graph: Graph) -> str:
    run_id = uuid.uuid4().hex
    new = NewRun(run_id, graph, {"x": "\\\t"}, window=1, limits=Limits(pools={"p\t1": 2}))
    store.transact(lifecycle.insert_run, new)
    return run_id


@pytest.fixture
def store(db_url):
    store = migrated(db_url)
    yield store
    store.dispose()


def test_a_big_runs_rows_are_those_a_small_run_gets(store, monkeypatch):
    graph = _graph()
    small = _rows(store, _insert(store, graph))
    monkeypatch.setattr(newrun, "AT_ONCE", 0)           # every run written as a big one
    big_id = _insert(store, graph)
    big = _rows(store, big_id)
    assert big == small
    task_rows, edge_rows = big
    assert [r[0] for r in task_rows] == sorted(graph.nodes)
    assert sorted(edge_rows) == sorted(graph.edges)
    root = next(r for r in task_rows if r[0] == "root\t1")
    assert root[1:6] == ("flows.odd", "queued", "all_success", "q\\1", root[5])
    with store.read() as conn:
        deadlines = dict(conn.execute(select(tasks.c.node, tasks.c.deadline_s)
                                      .where(tasks.c.run_id == big_id)).all())
    assert deadlines == {"root\t1": 1.25, "é\\2": None, "plain": 30.0, "after": None}


def test_the_edges_in_the_order_they_were_made_are_the_graphs_edges():
    graph = _graph()
    assert len(graph.in_order()) == len(graph.edges) == 3
    assert set(graph.in_order()) == graph.edges
    again = build_graph("odd", dict(graph.nodes), [("root\t1", "é\\2"), ("root\t1", "é\\2")],
                        {"é\\2": {"root\t1"}})
    assert again.in_order() == [("root\t1", "é\\2")]


def test_a_parent_named_twice_is_one_edge_in_order_and_in_the_set(registry):
    @registry.task
    def f(*values):
        return 1

    @registry.workflow
    def twice():
        a = f()
        b = f(a, a, [a, {"k": a}])
        a >> b
        f(b, a)

    graph = twice.expand({})
    assert graph.in_order() == [("f", "f__1"), ("f__1", "f__2"), ("f", "f__2")]
    assert graph.edges == frozenset(graph.in_order())
