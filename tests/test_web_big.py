"""The run page and the API's run on a big run: a map of more elements than the page draws
one by one is counted per state (from its counters, without a row per element), its
failed and running elements and a page of them come with it, the live poll stays
bounded, and the API's run comes a page of tasks at a time. The bounds are lowered here
so that a map of 40 is "big"; the run is a real one (tests/flows.py's ``mapped``, run in
process with a stub dispatcher), served by `qflow web`'s app in this process, on SQLite
and PostgreSQL.
"""
from __future__ import annotations

import base64
from collections import Counter

import flows  # noqa: F401 - registers the workflows
import pytest
from sqlalchemy import select, update
from test_store import StubDispatcher, migrated
from test_web_api import Api, InProcessServer
from test_web_pages import browser  # noqa: F401 - the fixture: headless Chromium

from qflow.config import Config
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.runtime import Runtime
from qflow.store import mapview, observe
from qflow.store.models import tasks
from qflow.web import api as web_api
from qflow.web import pages, runview
from qflow.web.auth import WebSettings

N = 40
BASIC = "Basic " + base64.b64encode(b"ada:s3cret").decode()


@pytest.fixture
def fresh(db_url):
    """A ``mapped`` run of N elements just triggered (nothing ran) and `qflow web`'s app
    over its DB: (engine, run id, page client, API client)."""
    store = migrated(db_url)
    engine = Engine(Config(database_url=db_url), store, StubDispatcher())
    run_id = engine.trigger("mapped", {"n": N, "fail_on": 7})
    rt = Runtime(Config(database_url=db_url))
    server = InProcessServer(rt, WebSettings(users=("ada:s3cret",), tokens=("tok-123",)))
    base = f"http://127.0.0.1:{server.port}"
    yield engine, run_id, Api(base, BASIC), Api(base)
    server.stop()
    rt.store.dispose()
    store.dispose()


@pytest.fixture
def served(fresh):
    """``fresh``'s run with 25 elements run (element 7 failed), 2 running, 13 queued."""
    engine, run_id = fresh[:2]
    step(engine, lambda node: "[" not in node)              # numbers and const: the map
    step(engine, lambda node: node.startswith("scale[") and int(node[6:-1]) < 25)
    with engine.store.write() as conn:                        # two claimed, not ended
        conn.execute(update(tasks).where(tasks.c.run_id == run_id,
                                         tasks.c.node.in_(["scale[30]", "scale[31]"]))
                     .values(state="running", attempts=1))
    return fresh


def step(engine: Engine, which) -> None:
    """Execute the sent messages ``which`` accepts (by node), keep the others."""
    kept = []
    for item in engine.dispatcher.sent:
        if which(item.node):
            Executor(engine).execute(item.run_id, item.node, item.attempt, worker="test")
        else:
            kept.append(item)
    engine.dispatcher.sent = kept


def counted(engine: Engine, run_id: str) -> dict[str, int]:
    """The map's elements per state, as a GROUP BY over every element counts them."""
    with engine.store.read() as conn:
        states = conn.execute(select(tasks.c.state).where(
            tasks.c.run_id == run_id, tasks.c.node.like("scale[%"))).scalars().all()
    return dict(Counter(states))


def test_a_big_map_is_drawn_as_its_counts_and_its_failed_and_running_elements(
        served, monkeypatch):
    engine, run_id, page, _ = served
    monkeypatch.setattr(mapview, "LETTERS_MAX", 10)
    status, view, _ = page.get(f"/qflow/runs/{run_id}/view.json")
    assert status == 200, view
    expected = {"queued": 13, "running": 2, "succeeded": 24, "failed": 1}
    assert counted(engine, run_id) == expected                 # what the page must say
    big = view["maps"]["scale"]
    assert (big["size"], big["counts"]) == (N, expected)
    assert sorted(row[0] for row in big["window"]) == ["scale[30]", "scale[31]", "scale[7]"]
    assert "scale" not in view["groups"]
    assert [row[0] for row in view["tasks"]] == ["numbers", "const", "scale", "total_of"]
    assert sorted(map(tuple, view["edges"])) == [("const", "scale"), ("numbers", "scale"),
                                                 ("scale", "total_of")]

    status, elements, _ = page.get(f"/qflow/runs/{run_id}/elements.json?node=scale&first=5"
                                   "&count=4")
    assert (status, elements["size"], elements["letters"]) == (200, N, "SSFS")
    assert page.get(f"/qflow/runs/{run_id}/elements.json?node=nope")[0] == 404
    assert page.get(f"/qflow/runs/{run_id}/elements.json?node=scale&first=-1")[0] == 400
    assert page.get(f"/qflow/runs/{run_id}/gantt.json")[1]["rows"] != []
    monkeypatch.setattr(pages, "GANTT_TASKS", 10)          # every attempt: not for a page
    gantt = page.get(f"/qflow/runs/{run_id}/gantt.json")[1]
    assert gantt["rows"] == [] and gantt["note"].endswith("up to 10 tasks; this one has 44.")

    # The rest runs: the counts follow it to the end.
    step(engine, lambda node: node not in ("scale[30]", "scale[31]"))
    assert page.get(f"/qflow/runs/{run_id}/view.json")[1]["maps"]["scale"]["counts"] == \
        counted(engine, run_id) == {"running": 2, "succeeded": 37, "failed": 1}
    with engine.store.write() as conn:           # the two claims were lost: sent again
        conn.execute(update(tasks).where(tasks.c.run_id == run_id,
                                         tasks.c.node.in_(["scale[30]", "scale[31]"]))
                     .values(state="queued", attempts=0))
    step(engine, lambda node: True)
    view = page.get(f"/qflow/runs/{run_id}/view.json")[1]
    assert view["run"]["state"] == "failed"
    assert view["maps"]["scale"]["counts"] == counted(engine, run_id) == \
        {"succeeded": 39, "failed": 1}


def test_a_canceled_big_maps_waiting_and_running_elements_are_counted_canceled(
        served, monkeypatch):
    engine, run_id, page, _ = served
    monkeypatch.setattr(mapview, "LETTERS_MAX", 10)
    engine.cancel(run_id)
    view = page.get(f"/qflow/runs/{run_id}/view.json")[1]
    assert view["run"]["state"] == "failed"              # element 7 failed before
    assert view["maps"]["scale"]["counts"] == counted(engine, run_id) == \
        {"succeeded": 24, "failed": 1, "canceled": 15}


def test_a_run_under_the_bound_is_drawn_as_before_and_the_big_path_agrees_with_it(served):
    engine, run_id, page, _ = served
    with engine.store.read() as conn:
        shown, elements, links, latest = observe.view_shape(conn, run_id)
        big = mapview.big_view_shape(conn, run_id, letters_max=N)
        # More nodes than the bound besides the elements (a big grid): read as before.
        grid = mapview.big_view_shape(conn, run_id, letters_max=3)
    assert grid == (shown, elements, links, latest, {})
    old = runview.build_view({"run_id": run_id}, shown, elements, links, latest)
    new = runview.build_view({"run_id": run_id}, *big[:4], maps=big[4])
    assert big[4] == {} and {**new, "edges": sorted(new["edges"])} == \
        {**old, "edges": sorted(old["edges"])}
    assert old["groups"]["scale"] == "S" * 7 + "F" + "S" * 17 + "Q" * 5 + "RR" + "Q" * 8
    status, view, _ = page.get(f"/qflow/runs/{run_id}/view.json")
    assert view["groups"] == old["groups"] and view["maps"] == {}
    assert view["tasks"] == [runview.wire(r) for r in shown]


def test_a_big_runs_poll_sends_only_the_latest_queueings(served):
    engine, run_id, page, _ = served
    with engine.store.read() as conn:
        every, _ = observe.changed_since(conn, run_id, runview.EPOCH)
        bounded, _ = observe.changed_since(conn, run_id, runview.EPOCH, queued_max=4)
    queued = [r for r in every if r[1] == "queued"]
    assert len(queued) == 13                                 # all of them, as before
    assert [r for r in bounded if r[1] == "queued"] != [] and \
        len([r for r in bounded if r[1] == "queued"]) == 4
    assert sorted(r[0] for r in bounded if r[1] != "queued") == \
        sorted(r[0] for r in every if r[1] != "queued")


def test_the_apis_run_pages_through_every_task_exactly_once(served, monkeypatch):
    engine, run_id, _, client = served
    status, whole, _ = client.get(f"/qflow/api/v1/runs/{run_id}")
    assert status == 200 and len(whole["tasks"]) == N + 4 and "summary" in whole
    monkeypatch.setattr(web_api, "TASKS_WHOLE", 10)
    seen, path, pages = [], f"/qflow/api/v1/runs/{run_id}?limit=7", 0
    while path:
        status, body, headers = client.get(path)
        assert status == 200, body
        assert len(body["tasks"]) <= 7 and body["task_counts"]["total"] == N + 4
        seen += body["tasks"]
        path, pages = body["tasks_next"], pages + 1
        assert headers.get("Link") == (f'<{path}>; rel="next"' if path else None)
    assert pages == 7 and len(seen) == N + 4
    assert sorted(seen, key=lambda t: t["node"]) == sorted(whole["tasks"],
                                                          key=lambda t: t["node"])
    assert seen == sorted(seen, key=lambda t: t["node"])
    assert next(t for t in seen if t["node"] == "scale[7]")["traceback"]

    # Over the bound, the run comes paged without asking; bad pages are one-line 400s.
    status, body, _ = client.get(f"/qflow/api/v1/runs/{run_id}")
    assert len(body["tasks"]) == N + 4 and body["tasks_next"] is None
    # Ended: numbers, const, 25 elements, and the map and total_of with element 7.
    assert body["task_counts"] == {"total": N + 4, "done": 29, "left": 15, "failed": 3,
                                   "canceled": 0}
    for query in ("limit=0", "limit=x", "limit=10001", "after=nope"):
        status, body, _ = client.get(f"/qflow/api/v1/runs/{run_id}?{query}")
        assert status == 400 and list(body) == ["error"] and "\n" not in body["error"]


def test_the_page_draws_a_big_maps_counts_and_follows_them_live(served, browser,  # noqa: F811
                                                                monkeypatch):
    engine, run_id, page, _ = served
    monkeypatch.setattr(mapview, "LETTERS_MAX", 10)
    context = browser.new_context(http_credentials={"username": "ada", "password": "s3cret"})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(f"{page.base}/qflow/runs/{run_id}")
    row = tab.locator('#tasks-body tr[data-node="scale"]')
    row.locator(".counts").wait_for()
    assert row.locator("td").first.inner_text() == f"scale ×{N}"
    assert row.locator(".counts").inner_text() == "13 queued, 2 running, 24 succeeded, 1 failed"
    for listed in ("scale[7]", "scale[30]", "scale[31]"):       # the ones worth a look
        assert tab.locator(f'#tasks-body tr[data-node="{listed}"]').count() == 1
    assert tab.locator('#tasks-body tr[data-node="scale[8]"]').count() == 0

    step(engine, lambda node: node in {f"scale[{i}]" for i in range(25, 30)})
    tab.wait_for_function("""() => document.querySelector(
        '#tasks-body tr[data-node="scale"] .counts').textContent ===
        '8 queued, 2 running, 29 succeeded, 1 failed'""")
    tab.click('#dag [data-toggle="scale"]')
    tab.wait_for_selector("#dag rect.cell")
    cells = tab.locator("#dag rect.cell")
    assert cells.count() == N
    assert cells.nth(7).get_attribute("data-state") == "failed"
    assert cells.nth(30).get_attribute("data-state") == "running"
    assert cells.nth(29).get_attribute("data-state") == "succeeded"
    assert not errors
    context.close()


def test_a_page_opened_before_a_big_map_expands_counts_it_once_it_has(
        fresh, browser, monkeypatch):  # noqa: F811
    engine, run_id, page, _ = fresh
    monkeypatch.setattr(mapview, "LETTERS_MAX", 10)
    context = browser.new_context(http_credentials={"username": "ada", "password": "s3cret"})
    tab = context.new_page()
    tab.goto(f"{page.base}/qflow/runs/{run_id}")
    tab.locator('#tasks-body tr[data-node="scale"]').wait_for()   # 4 tasks: drawn as ever
    assert tab.locator('#tasks-body tr[data-node="scale"] .counts').count() == 0
    step(engine, lambda node: "[" not in node)                   # the map expands
    tab.wait_for_function("""() => { const c = document.querySelector(
        '#tasks-body tr[data-node="scale"] .counts'); return c && c.textContent ===
        '40 queued'; }""")
    assert tab.locator('#tasks-body tr[data-node="scale"] td').first.inner_text() == \
        f"scale ×{N}"
    context.close()
