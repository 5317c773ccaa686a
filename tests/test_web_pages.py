"""The web console's pages in a real browser: headless Chromium (Debian's package) driven by
Playwright, against `qflow web` with real workers on Redis and PostgreSQL. The page
queries behind them run on real SQLite and PostgreSQL.

Locally a missing Chromium or Playwright skips the browser tests; with CI=true it fails
them (install: apt-get install chromium chromium-driver; pip install playwright).
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import uuid

import pytest
import servers
import sqlalchemy as sa
from conftest import IN_CI, ROOT, start_cluster, wait_for

CHROMIUM = os.environ.get("QFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
USER, PASSWORD = "admin", "s3cret"
PAYLOAD = '<script>alert("xss")</script><img src=x onerror=alert(2)>'
RUN_URL = re.compile(r"/qflow/runs/([0-9a-f]{32})")


def _need(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs {what}", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("Playwright: pip install playwright")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _need(f"Chromium at {CHROMIUM}: apt-get install chromium chromium-driver")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def console(browser, redis_url, pg_server_url, tmp_path_factory):
    """`qflow web` with HTTP basic auth, and one worker, serving tests/web_flows.py."""
    folder = tmp_path_factory.mktemp("web")
    key = subprocess.run(["qflow", "keygen"], capture_output=True, text=True, check=True)
    # A Redis DB of its own: the session's cluster (tests/flows.py) must not take its tasks.
    cluster = start_cluster(redis_url.rsplit("/", 1)[0] + "/13", pg_server_url, folder, 1,
                            app=str(ROOT / "tests" / "web_flows.py"),
                            QFLOW_ENCRYPTION_KEY=key.stdout.strip().splitlines()[-1])
    port = servers.free_port()
    log = open(folder / "web.log", "w")
    server = subprocess.Popen(["qflow", "web", "--port", str(port)], stdout=log,
                              stderr=subprocess.STDOUT,
                              env={**cluster.env, "QFLOW_WEB_AUTH": f"{USER}:{PASSWORD}"})
    try:
        try:
            servers.wait_port(port, timeout=40)
        except TimeoutError:
            pytest.fail(f"qflow web did not start:\n{(folder / 'web.log').read_text()}")
        yield {"base": f"http://127.0.0.1:{port}", "folder": folder,
               "database_url": cluster.database_url, "env": cluster.env}
    finally:
        server.terminate()
        server.wait(10)
        cluster.stop()


@pytest.fixture
def page(browser, console):
    """A logged-in tab; fails the test if any dialog (alert) opens in it."""
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                  viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    tab.set_default_timeout(30_000)
    yield tab
    context.close()
    assert tab.dialogs == [], f"a dialog opened: {tab.dialogs}"


def trigger(page, base: str, workflow: str, **values) -> str:
    """Fill the workflow's Trigger form and submit it; the run's id."""
    page.goto(f"{base}/qflow/workflows/{workflow}")
    for name, value in values.items():
        page.fill(f"#param-{name}", str(value))
    with page.expect_navigation():
        page.click("#trigger button[type=submit]")
    found = RUN_URL.search(page.url)
    assert found, f"no run page after triggering: {page.url}"
    return found.group(1)


def wait_state(page, state: str) -> None:
    page.wait_for_selector(f'#run-state[data-state="{state}"]')


def all_green_in_place(page, count: int) -> None:
    """Wait until the graph's ``count`` nodes and the run have succeeded, on the page that
    set ``window.sameDocument`` (live updates, no reload)."""
    page.wait_for_function("""count => {
        const nodes = [...document.querySelectorAll('#dag g.node')];
        return nodes.length === count && nodes.every(g => g.dataset.state === 'succeeded');
    }""", arg=count)
    assert page.evaluate("window.sameDocument") is True       # no reload on the way
    wait_state(page, "succeeded")


# -- in the browser ---------------------------------------------------------------------
def test_without_credentials_nothing_is_served_and_with_them_the_workflows_are_listed(
        browser, console):
    anonymous = browser.new_context()
    for path in ("/qflow/", "/qflow/runs", "/qflow/workflows/web_steps"):
        response = anonymous.request.get(console["base"] + path)
        assert response.status == 401
        assert "web_steps" not in response.text()
    anonymous.close()
    user = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    tab = user.new_page()
    assert tab.goto(console["base"] + "/qflow/").status == 200
    names = tab.locator("#workflows tr[data-workflow]").evaluate_all(
        "rows => rows.map(r => r.dataset.workflow)")
    assert {"web_steps", "web_flaky", "web_echo", "web_sleepy"} <= set(names)
    assert "count: int = 3" in tab.locator('tr[data-workflow="web_steps"]').inner_text()
    user.close()


def test_a_bad_parameter_is_shown_next_to_its_field_and_a_good_one_runs_live(page, console):
    base = console["base"]
    page.goto(f"{base}/qflow/workflows/web_steps")
    page.fill("#param-count", "many")
    page.fill("#param-label", "kept as typed")
    with page.expect_navigation() as nav:
        page.click("#trigger button[type=submit]")
    assert nav.value.status == 400
    assert "expected an int" in page.inner_text("#error-count")
    assert page.inner_text("#error-seconds") == ""
    assert page.input_value("#param-label") == "kept as typed"
    assert page.get_attribute('[data-param="count"]', "class").split() == ["field", "invalid"]

    page.fill("#param-count", "3")
    with page.expect_navigation():
        page.click("#trigger button[type=submit]")
    assert RUN_URL.search(page.url)
    page.wait_for_selector("#dag g.node")
    page.evaluate("window.sameDocument = true")
    first = page.locator("#dag g.node").evaluate_all("gs => gs.map(g => g.dataset.state)")
    assert len(first) == 3 and first.count("succeeded") < 3, first
    all_green_in_place(page, 3)
    assert page.inner_text("#run-progress") == "3 / 3"
    page.wait_for_function("document.querySelectorAll('#gantt rect.bar').length === 3")


def test_a_task_waiting_for_a_pool_slot_is_seen_queued_then_green_without_reloading(
        page, console):
    subprocess.run(["qflow", "pools", "set", "web_single", "1"], env=console["env"],
                   check=True, capture_output=True)
    marker = console["folder"] / f"held-{uuid.uuid4().hex}"
    trigger(page, console["base"], "web_held", marker=marker)
    node = '#dag g.node[data-node="{}"][data-state="{}"]'
    page.wait_for_selector(node.format("gate", "running"))
    page.evaluate("window.sameDocument = true")
    assert page.get_attribute('#dag g.node[data-node="held"]', "data-state") == "pending"
    open(f"{marker}.gate", "w").close()
    # Released once the gate ends, but hold_slot has the pool's one slot: held waits queued
    # (pending -> queued, which the page learns from the queued-since cursor).
    page.wait_for_selector(node.format("held", "queued"))
    open(f"{marker}.slot", "w").close()
    all_green_in_place(page, 3)


def test_a_failed_tasks_traceback_and_logs_open_and_a_retry_from_it_succeeds(page, console):
    marker = console["folder"] / f"flaky-{uuid.uuid4().hex}"
    trigger(page, console["base"], "web_flaky", marker=marker)
    wait_state(page, "failed")
    page.click('#dag g.node[data-node="flaky"]')
    page.wait_for_selector("#detail-node")
    assert page.inner_text("#detail-node") == "flaky"
    page.click("#detail .attempt .show-traceback")
    traceback = page.locator('#detail pre[data-what="traceback"]')
    traceback.wait_for()
    assert "Traceback" in traceback.inner_text()
    assert "RuntimeError: first attempt fails on purpose" in traceback.inner_text()
    page.click("#detail .attempt .show-logs")
    logs = page.locator('#detail pre[data-what="log"]')
    logs.wait_for()
    assert "flaky attempt printing to its log" in logs.inner_text()

    with page.expect_navigation():
        page.click("#detail form.retry-from button")
    assert "retrying from flaky" in page.inner_text(".notice")
    wait_state(page, "succeeded")
    assert page.get_attribute('#dag g.node[data-node="flaky"]', "data-state") == "succeeded"
    page.click('#dag g.node[data-node="flaky"]')
    page.wait_for_selector('#detail .attempt[data-attempt="2"]')
    page.click("#detail .show-result")
    page.wait_for_function(
        "() => document.querySelector('#detail pre.result-text').textContent.includes('lucky')")


def test_in_flower_a_task_row_links_to_its_run_and_the_navbar_to_qflows_pages(page, console):
    port = servers.free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(console["folder"] / "flower.log", "w")
    flower = subprocess.Popen(["qflow", "flower", f"--port={port}", "--address=127.0.0.1"],
                              stdout=log, stderr=subprocess.STDOUT,
                              env={**console["env"], "QFLOW_WEB_AUTH": f"{USER}:{PASSWORD}"})
    try:
        servers.wait_port(port, timeout=40)
        # Flower lists what task events tell it: it must be listening before the run.
        wait_for(lambda: 'flower_worker_online{worker="w1@' in
                 page.request.get(f"{base}/metrics").text(), timeout=30,
                 what="a worker heartbeat in Flower")
        run_id = trigger(page, console["base"], "web_steps", count=1, seconds=0)
        wait_state(page, "succeeded")
        link = f'#tasks-table a.qflow-run[href="/qflow/runs/{run_id}?task=step"]'

        def listed() -> bool:
            page.goto(f"{base}/tasks")
            page.wait_for_selector("#tasks-table tbody tr")
            return page.locator(link).count() == 1

        wait_for(listed, timeout=30, what="the run's task in Flower's list, linked")
        nav = {a.inner_text(): a.get_attribute("href")
               for a in page.locator("nav a.nav-link").all()}
        assert (nav["Workflows"], nav["Runs"], nav["Assets"]) == \
            ("/qflow/", "/qflow/runs", "/qflow/assets")
        with page.expect_navigation():
            page.click(link)
        page.wait_for_selector("#detail-node")
        assert page.inner_text("#detail-node") == "step"
    finally:
        flower.terminate()
        flower.wait(20)
        log.close()


def test_a_long_run_is_canceled_from_its_page(page, console):
    trigger(page, console["base"], "web_sleepy", seconds=120)
    page.wait_for_selector('#dag g.node[data-node="nap"][data-state="running"]')
    with page.expect_navigation():
        page.click("#cancel-run")
    wait_state(page, "canceled")
    assert page.get_attribute('#dag g.node[data-node="nap"]', "data-state") == "canceled"
    assert page.is_disabled("#cancel-run")


def test_script_payloads_in_a_parameter_an_error_and_a_log_line_render_as_text(page, console):
    base = console["base"]
    page.goto(f"{base}/qflow/workflows/web_steps")
    page.fill("#param-count", PAYLOAD)
    with page.expect_navigation():
        page.click("#trigger button[type=submit]")
    assert PAYLOAD in page.inner_text("#error-count")        # the echoed bad value
    assert page.input_value("#param-count") == PAYLOAD

    trigger(page, base, "web_echo", note=PAYLOAD)
    wait_state(page, "failed")
    assert PAYLOAD in page.inner_text('#run-params [data-param="note"]')
    assert PAYLOAD in page.inner_text('#tasks-body tr[data-node="echo"] td.err')
    page.click('#tasks-body tr[data-node="echo"]')
    page.wait_for_selector("#detail .attempt .show-logs")
    assert PAYLOAD in page.inner_text("#detail pre.error-text")
    page.click("#detail .attempt .show-logs")
    page.wait_for_function("""() => {
        const pre = document.querySelector('#detail pre[data-what="log"]');
        return pre && pre.textContent.includes('log line:');
    }""")
    assert f"log line: {PAYLOAD}" in page.inner_text('#detail pre[data-what="log"]')
    assert page.locator("#detail img, #tasks-body img, #run-params img").count() == 0
    page.goto(f"{base}/qflow/runs?workflow=web_echo")
    page.goto(f"{base}/qflow/workflows/web_echo")
    assert page.locator("script:not([src])").count() == 0


def test_a_secret_parameter_is_typed_blind_and_shown_as_stars(page, console):
    secret = f"hunter2-{uuid.uuid4().hex}"
    page.goto(f"{console['base']}/qflow/workflows/web_secret")
    assert page.get_attribute("#param-token", "type") == "password"
    page.fill("#param-rounds", "x")                  # a bad neighbour: the page comes back
    page.fill("#param-token", secret)
    with page.expect_navigation():
        page.click("#trigger button[type=submit]")
    assert page.input_value("#param-token") == "" and secret not in page.content()
    run_id = trigger(page, console["base"], "web_secret", token=secret, rounds=2)
    wait_state(page, "succeeded")
    assert page.inner_text('#run-params [data-param="token"]') == "token = ***"
    assert secret not in page.content()
    page.click('#dag g.node[data-node="use_token"]')
    page.click("#detail .show-result")
    page.wait_for_function(
        "() => document.querySelector('#detail pre.result-text').textContent.trim() === '"
        f"{len(secret)}'")
    page.goto(f"{console['base']}/qflow/")
    assert secret not in page.content() and run_id


def test_the_grid_links_each_cell_to_the_run_page_focused_on_that_task(page, console):
    base = console["base"]
    run_id = trigger(page, base, "web_map", n=30)
    wait_state(page, "succeeded")
    group = page.locator('#dag g.node[data-node="element"]')
    assert "×30" in group.text_content()
    assert group.locator("rect.seg").evaluate_all("rs => rs.map(r => r.dataset.state)") == \
        ["succeeded"]
    group.locator("[data-toggle]").click()
    assert page.locator('#dag g.node[data-node="element"] rect.cell').count() == 30
    page.goto(f"{base}/qflow/workflows/web_map")
    cell = page.locator(f'#grid tr[data-node="items"] td.cell a[href*="{run_id}"]')
    assert cell.get_attribute("href").endswith("?task=items")
    with page.expect_navigation():
        cell.click()
    page.wait_for_selector("#detail-node")
    assert page.inner_text("#detail-node") == "items"
    assert page.locator('#grid tr[data-node^="element["]').count() == 0


def test_the_runs_list_filters_by_workflow_and_state(page, console):
    base = console["base"]
    run_id = trigger(page, base, "web_echo", note="plain")
    wait_state(page, "failed")
    page.goto(f"{base}/qflow/runs?workflow=web_echo&state=failed")
    assert page.locator(f'#runs tr[data-run="{run_id}"]').count() == 1
    states = page.locator("#runs tr[data-run] .badge").all_inner_texts()
    workflows = page.locator("#runs tr[data-run] td:nth-child(2)").all_inner_texts()
    assert set(states) == {"failed"} and set(workflows) == {"web_echo"}
    page.goto(f"{base}/qflow/runs?workflow=web_echo&state=succeeded")
    assert page.locator(f'#runs tr[data-run="{run_id}"]').count() == 0
    response = page.goto(f"{base}/qflow/runs?since=yesterday")
    assert response.status == 400
    assert "since:" in page.inner_text("#form-error")


def test_older_links_page_through_the_runs_list(page, console):
    from qflow.store import Store
    store = Store(console["database_url"])
    t = dt.datetime(2026, 1, 1)
    ids = _add_runs(store, "web_paging", [t + dt.timedelta(seconds=i // 2) for i in range(61)])
    store.dispose()
    page.goto(f"{console['base']}/qflow/runs?workflow=web_paging")
    seen = []
    while True:
        seen += page.locator("#runs tr[data-run]").evaluate_all(
            "rows => rows.map(r => r.dataset.run)")
        if page.locator("#older").count() == 0:
            break
        assert "workflow=web_paging" in page.get_attribute("#older", "href")
        with page.expect_navigation():
            page.click("#older")
    assert len(seen) == 61 and sorted(seen) == sorted(ids)
    assert page.locator("#newest").count() == 1


def test_the_assets_page_and_the_consumers_run_name_the_update_that_started_it(
        page, console):
    from qflow.store import Store, schedules
    folder, store = console["folder"], Store(console["database_url"])
    log = open(folder / "scheduler.log", "w")
    scheduler = subprocess.Popen(["qflow", "scheduler"], env=console["env"], stdout=log,
                                 stderr=subprocess.STDOUT, cwd=folder)
    try:
        # Updates count once a scheduler has seen the consumer.
        wait_for(lambda: _state_of(store, schedules, "web_report"), what="the scheduler")
        producer = trigger(page, console["base"], "web_publish", n=4)
        wait_state(page, "succeeded")
        consumer = wait_for(lambda: _runs_of(store, "web_report"), what="the consumer's run")
    finally:
        scheduler.terminate()
        scheduler.wait(10)
        store.dispose()
    page.click("nav >> text=Assets")
    row = page.locator('#assets tr[data-asset="web.sales"]')
    assert row.locator("td.updates").inner_text() == "1"
    assert row.locator("td.producers").inner_text() == "web_flows.publish_sales"
    assert row.locator("td.consumers").inner_text() == "web_report"
    assert row.locator("td.last time").count() == 1
    with page.expect_navigation():
        row.locator("td.by a").click()
    assert RUN_URL.search(page.url).group(1) == producer
    page.wait_for_selector("#detail-node")
    assert page.inner_text("#detail-node") == "publish_sales"
    assert page.locator("#triggered-by").count() == 0         # started by hand

    page.goto(f"{console['base']}/qflow/runs/{consumer[0]}")
    line = page.locator('#triggered-by .trigger[data-asset="web.sales"]')
    assert f"web.sales by {producer[:12]} publish_sales at" in " ".join(line.inner_text().split())
    assert line.locator("a").nth(1).get_attribute("href").startswith(f"/qflow/runs/{producer}")


def _state_of(store, schedules, workflow: str):
    with store.read() as conn:
        return schedules.get_state(conn, workflow)


def _runs_of(store, workflow: str) -> list[str]:
    from qflow.store import read
    with store.read() as conn:
        return [r["run_id"] for r in read.list_runs(conn, workflow)]


# -- the queries behind the pages -------------------------------------------------------
def _store(db_url: str):
    from qflow.store import Store
    from qflow.store.migrate import upgrade
    store = Store(db_url)
    upgrade(store)
    return store


def _add_runs(store, workflow: str, times: list[dt.datetime]) -> list[str]:
    from qflow.store.models import runs
    ids = [uuid.uuid4().hex for _ in times]
    with store.write() as conn:
        conn.execute(sa.insert(runs), [dict(id=i, workflow=workflow, state="succeeded",
                                            params="{}", created_at=t)
                                       for i, t in zip(ids, times, strict=True)])
    return ids


def test_runs_pages_follow_each_other_without_gaps_or_repeats(db_url):
    from qflow.store import observe
    store = _store(db_url)
    t = dt.datetime(2026, 11, 1)
    # Three runs share each creation time: the key must break ties by run id.
    ids = _add_runs(store, "w", [t + dt.timedelta(seconds=i // 3) for i in range(20)])
    _add_runs(store, "other", [t] * 3)
    seen, before = [], None
    with store.read() as conn:
        while True:
            page = observe.runs_page(conn, workflow="w", before=before, limit=7)
            if not page:
                break
            seen += [r["run_id"] for r in page]
            before = (page[-1]["created_at"], page[-1]["run_id"])
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    created = [next(r for r in _all(store) if r[0] == i)[1] for i in seen]
    assert created == sorted(created, reverse=True)


def _all(store):
    from qflow.store.models import runs
    with store.read() as conn:
        return conn.execute(sa.select(runs.c.id, runs.c.created_at)).all()


def test_changes_since_are_the_tasks_that_ended_or_were_queued_since_and_those_running(
        db_url):
    from qflow.store import observe
    from qflow.store.models import tasks
    store = _store(db_url)
    t = dt.datetime(2026, 11, 1, 12)
    s = dt.timedelta(seconds=1)
    run_id = _add_runs(store, "w", [t])[0]
    # (node, state, queued_at, finished_at)
    rows = [("old", "succeeded", t, t), ("new", "failed", t, t + 10 * s),
            ("busy", "running", t, None), ("waiting", "pending", None, None),
            ("again", "retrying", t + 60 * s, None), ("held", "queued", None, None),
            ("early", "queued", t + 4 * s, None), ("admitted", "queued", t + 12 * s, None)]
    with store.write() as conn:
        conn.execute(sa.insert(tasks), [dict(run_id=run_id, node=n, task="m.f", state=st,
                                             queued_at=q, finished_at=f, attempts=0)
                                        for n, st, q, f in rows])
    with store.read() as conn:
        changed, latest = observe.changed_since(conn, run_id, t + 5 * s)
        ended, ended_latest = observe.changed_since(conn, run_id, t + 11 * s)
        shape = observe.view_shape(conn, run_id)
        other = observe.changed_since(conn, uuid.uuid4().hex, t)
    assert sorted(r[0] for r in changed) == ["admitted", "again", "busy", "new"]
    assert [r[:2] for r in changed if r[0] == "admitted"] == [("admitted", "queued")]
    assert latest == t + 12 * s                    # the last queueing, after the last end
    assert sorted(r[0] for r in ended) == ["admitted", "again", "busy"]
    assert ended_latest == t + 12 * s
    assert shape[3] == t + 12 * s                  # where the page's first poll starts
    assert other == ([], None)


def test_the_run_view_folds_mapped_elements_into_state_letters():
    from qflow.web import runview
    t = dt.datetime(2026, 11, 1, 12)
    shown = [("items", "succeeded", 1, t, t, "w", None, None, None),
             ("double", "pending", 0, None, None, None, None, None, None)]
    elements = [("double[2]", "failed"), ("double[0]", "succeeded"), ("odd[3]", "queued")]
    view = runview.build_view({"run_id": "r"}, shown, elements, [("items", "double")],
                              t + dt.timedelta(seconds=9))
    assert [row[0] for row in view["tasks"]] == ["items", "double", "odd[3]"]  # no "odd"
    assert view["groups"] == {"double": "SPF"}          # element 1 not expanded yet
    assert view["edges"] == [["items", "double"]]
    assert view["codes"]["F"] == "failed"
    assert view["cursor"] == "2026-11-01T12:00:07+00:00"     # 2 s before the last end


def test_the_gantt_puts_a_maps_elements_on_one_row_and_marks_the_critical_path():
    from qflow.web import runview
    t = dt.datetime(2026, 11, 1, 12)
    s = dt.timedelta(seconds=1)
    shown = [("a", "succeeded", 1, t, t + s, "w", None, None, None),
             ("b", "succeeded", 1, t + s, t + 2 * s, "w", None, None, None),
             ("m", "failed", 0, None, t + 9 * s, None, None, None, None)]
    elements = [("m[0]", "succeeded"), ("m[1]", "failed")]
    spans = [("a", 1, "succeeded", t, t + s), ("b", 1, "succeeded", t + s, t + 2 * s),
             ("m[0]", 1, "succeeded", t + s, t + 3 * s), ("m[1]", 1, "failed", t + s, t + 8 * s)]
    chart = runview.gantt(shown, elements, spans, [("a", "b"), ("a", "m")], t + 20 * s)
    assert [(r["node"], r["label"]) for r in chart["rows"]] == \
        [("a", "a"), ("b", "b"), ("m", "m ×2")]
    assert chart["rows"][2]["bars"] == [[1.0, 8.0, "failed", "2 attempts"]]
    assert chart["critical"] == ["a", "m"]
    assert chart["span"] == 8.0
