"""The web console at size: a run page of a map of 10,000 and of 100,000, and the runs list
over 100,000 runs, served by `qflow web` on a private PostgreSQL.

    python bench/web_console.py            # maps of 10,000 and 100,000; 100,000 runs
    python bench/web_console.py --quick    # maps of 1,000 and 10,000; 10,000 runs

The runs and tasks are written straight into the results DB, shaped as a finished map
writes them (one ``items`` task, the mapped node, its elements with one attempt each, a
few failed), so that no worker has to run 100,000 tasks first; what is measured is what
the pages read. Figures (medians of --repeat requests):

- JSON: the API's ``GET /qflow/api/v1/runs/RUN`` (every task; its median and best wall
  time and the server's CPU time per request), the run page's own ``view.json`` (a
  map's elements as one letter each) and one live-update poll (``changes.json``), plus
  the poll's query plan (it must use indexes only);
- first paint: headless Chromium (Debian's, through Playwright, if installed), from
  navigation start to the first contentful paint and to the graph drawn (the page's
  ``qflow-graph`` performance mark); then the click that expands the map's box;
- runs list: the first page, a page 50,000 runs deep (keyset), a filtered page.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

CHROMIUM = os.environ.get("QFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
T0 = dt.datetime(2026, 11, 1, 8)


# -- synthetic rows ----------------------------------------------------------------------
def add_map_run(url: str, n: int, failed_every: int = 997) -> str:
    """A succeeded-or-failed run of ``items -> element.map(items)`` with ``n`` elements."""
    import sqlalchemy as sa

    from qflow.store import Store
    from qflow.store.models import edges, runs, tasks
    store = Store(url)
    run_id = uuid.uuid4().hex
    ms = dt.timedelta(milliseconds=3)          # one end every 3 ms: ~330 tasks/s
    rows = [_task(run_id, "items", "succeeded", T0, T0 + 5 * ms, '["element"]'),
            _task(run_id, "element", "failed", None, T0 + (n + 20) * ms, "[]")]
    rows += [_task(run_id, f"element[{i}]", "failed" if i % failed_every == 7 else "succeeded",
                   T0 + (10 + i) * ms, T0 + (12 + i) * ms, '["element"]') for i in range(n)]
    with store.write() as conn:
        conn.execute(sa.insert(runs).values(
            id=run_id, workflow="bench_map", state="failed", params='{"n": %d}' % n,
            created_at=T0, started_at=T0, finished_at=T0 + (n + 20) * ms,
            tasks_total=n + 2, tasks_left=0, tasks_failed=n // failed_every + 1))
        _insert(conn, tasks, rows)
        _insert(conn, edges, [dict(run_id=run_id, parent="items", child="element")] +
                [dict(run_id=run_id, parent=f"element[{i}]", child="element")
                 for i in range(n)])
        conn.execute(sa.text(
            "INSERT INTO qflow_attempts (task_id, number, state, worker, started_at,"
            " finished_at, error) SELECT id, 1, state, worker, started_at, finished_at, error"
            " FROM qflow_tasks WHERE run_id = :r AND started_at IS NOT NULL"), {"r": run_id})
        conn.execute(sa.text("ANALYZE"))
    store.dispose()
    return run_id


def _insert(conn, table, rows: list[dict]) -> None:
    """``rows`` (dicts with the same keys, in the same order) as the store inserts a run's."""
    from qflow.store.bulk import bulk_insert
    bulk_insert(conn, table, list(rows[0]), (tuple(r.values()) for r in rows))


def _task(run_id: str, node: str, state: str, start, end, children: str) -> dict:
    return dict(run_id=run_id, node=node, task="bench.element", state=state,
                trigger_rule="all_success", queue="celery", call="{}", n_parents=0,
                up_succeeded=0, up_failed=0, up_skipped=0, attempts=1 if start else 0,
                worker="bench@host" if start else None, started_at=start, finished_at=end,
                error="ValueError: bad element" if state == "failed" and start else None,
                unsent=False, holding=False, children=children)


def add_runs(url: str, count: int) -> None:
    """``count`` ended runs of three workflows, one a second."""
    from qflow.store import Store
    from qflow.store.models import runs
    store = Store(url)
    states = ("succeeded",) * 8 + ("failed", "canceled")
    rows = [dict(id=uuid.uuid4().hex, workflow=f"wf_{i % 3}", state=states[i % 10],
                 params="{}", created_at=T0 - dt.timedelta(seconds=i),
                 started_at=T0 - dt.timedelta(seconds=i),
                 finished_at=T0 - dt.timedelta(seconds=i - 1),
                 tasks_total=4, tasks_left=0, tasks_failed=0, tasks_canceled=0, held=False)
            for i in range(count)]
    with store.write() as conn:
        _insert(conn, runs, rows)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE qflow_runs")
        conn.commit()
    store.dispose()


# -- measuring ---------------------------------------------------------------------------
def get(url: str) -> tuple[float, int]:
    """Seconds to fetch ``url`` completely, and its size in bytes."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - t0, len(body)


def timings(url: str, repeat: int) -> tuple[list[float], int]:
    """Seconds of each of ``repeat`` fetches of ``url`` after a warm one, and its size."""
    get(url)                                    # warm: templates, pools, caches
    runs = [get(url) for _ in range(repeat)]
    return [r[0] for r in runs], runs[0][1]


def timed_get(url: str, repeat: int) -> tuple[float, int]:
    times, size = timings(url, repeat)
    return C.median(times), size


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_ms(pid: int, url: str, repeat: int) -> float:
    """The server's CPU milliseconds per request of ``url`` (less sensitive to the
    machine's load than the wall time)."""
    get(url)
    before = cpu_seconds(pid)
    for _ in range(repeat):
        get(url)
    return (cpu_seconds(pid) - before) * 1000 / repeat


def _changes(base: str, run_id: str, since: dt.datetime) -> str:
    stamp = urllib.parse.quote(since.isoformat() + "+00:00")
    return f"{base}/qflow/runs/{run_id}/changes.json?since={stamp}"


def poll_plan(url: str, run_id: str, end: dt.datetime) -> list[str]:
    """The plan of a live-update query in a run's last second: the scans it makes."""
    import sqlalchemy as sa

    from qflow.store import observe
    query = observe.changes_query(run_id, end - dt.timedelta(seconds=1))
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sql = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = [r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}")]
    engine.dispose()
    return [line.strip().lstrip("-> ").split("  (")[0] for line in plan
            if "Scan" in line]


def browse(base: str, run_id: str) -> dict[str, float] | None:
    """In Chromium, milliseconds from navigation start to the first contentful paint and
    to the graph drawn (the page's own ``qflow-graph`` mark), and the time the click that
    expands the map's box takes to draw its first page of elements; None without Chromium
    or Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists(CHROMIUM):
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        for _ in range(2):              # the first visit warms the server up
            page.goto(f"{base}/qflow/runs/{run_id}")
            page.wait_for_selector("#gantt svg")
        page.wait_for_selector('#dag g.node[data-node="element"]')
        marks = page.evaluate("""() => ({
            paint: performance.getEntriesByName('first-contentful-paint')[0].startTime,
            graph: performance.getEntriesByName('qflow-graph')[0].startTime})""")
        expand = page.evaluate("""() => {
            const t = performance.now();
            document.querySelector('#dag [data-toggle="element"]')
                .dispatchEvent(new MouseEvent('click', {bubbles: true}));
            const cells = document.querySelectorAll('#dag rect.cell').length;
            return {ms: performance.now() - t, cells};
        }""")
        browser.close()
    return {"first_paint_ms": round(marks["paint"]), "graph_drawn_ms": round(marks["graph"]),
            "expand_ms": round(expand["ms"]), "cells_drawn": expand["cells"]}


def serve(s: C.Servers, url: str, snapshot: str = "") -> tuple[subprocess.Popen, str]:
    """`qflow web` on ``url`` (of this checkout, or of the qflow extracted at
    ``snapshot``: see common.extract) and its address."""
    port = C.free_port()
    env = C._clean_env(QFLOW_DATABASE_URL=url, QFLOW_BROKER_URL=s.redis_url(0),
                       QFLOW_APP=str(C.FLOWS))
    if snapshot:
        env["PYTHONPATH"] = snapshot + os.pathsep + env["PYTHONPATH"]
    log = s.folder / "web.log"
    proc = subprocess.Popen([C.qflow_bin(), "web", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        C.wait_port(port, timeout=60)
    except TimeoutError:
        proc.kill()
        raise SystemExit(f"qflow web did not start:\n{log.read_text()}") from None
    return proc, f"http://127.0.0.1:{port}"


def run_page_case(base: str, url: str, run_id: str, n: int, repeat: int, pid: int) -> dict:
    # The median, and the best: on a shared machine, what it does when given a core.
    times, api_bytes = timings(f"{base}/qflow/api/v1/runs/{run_id}", repeat)
    api, api_best = C.median(times), min(times)
    api_cpu = server_cpu_ms(pid, f"{base}/qflow/api/v1/runs/{run_id}", repeat)
    view, view_bytes = timed_get(f"{base}/qflow/runs/{run_id}/view.json", repeat)
    # A poll while the run moves at full speed (the tasks that ended in its last second)
    # and one of a page that has seen everything.
    end = T0 + dt.timedelta(milliseconds=3 * (n + 20))
    poll, changed = timed_get(_changes(base, run_id, end - dt.timedelta(seconds=1)), repeat)
    idle, _ = timed_get(_changes(base, run_id, end + dt.timedelta(seconds=1)), repeat)
    page, _ = timed_get(f"{base}/qflow/runs/{run_id}", repeat)
    row = {"elements": n, "api_run_json_s": round(api, 3), "api_run_json_bytes": api_bytes,
           "api_run_json_best_s": round(api_best, 3), "api_cpu_ms": round(api_cpu, 1),
           "view_json_s": round(view, 3), "view_json_bytes": view_bytes,
           "page_html_s": round(page, 3), "poll_s": round(poll, 4), "poll_bytes": changed,
           "idle_poll_s": round(idle, 4), "poll_plan": poll_plan(url, run_id, end),
           "browser": browse(base, run_id)}
    C.say(f"map of {n:,}: API run JSON {api * 1000:.0f} ms (best {api_best * 1000:.0f} ms, "
          f"{api_bytes / 1e6:.1f} MB, server CPU {api_cpu:.0f} ms), "
          f"view.json {view * 1000:.0f} ms ({view_bytes / 1e3:.0f} kB), "
          f"page HTML {page * 1000:.0f} ms, poll {poll * 1000:.1f} ms "
          f"({changed / 1e3:.0f} kB), idle poll {idle * 1000:.1f} ms; "
          f"poll plan: {', '.join(row['poll_plan'])}")
    if row["browser"]:
        b = row["browser"]
        C.say(f"  Chromium: first paint {b['first_paint_ms']} ms, graph drawn "
              f"{b['graph_drawn_ms']} ms after navigation start; expanding the map drew "
              f"{b['cells_drawn']} elements in {b['expand_ms']} ms")
    else:
        C.say("  Chromium/Playwright not installed: no first-paint figures")
    return row


def runs_list_case(base: str, url: str, count: int, repeat: int) -> dict:
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        deep = conn.exec_driver_sql(
            "SELECT created_at, id FROM qflow_runs ORDER BY created_at DESC, id DESC "
            f"OFFSET {count // 2} LIMIT 1").one()
    engine.dispose()
    key = urllib.parse.quote(f"{deep[0].isoformat()}~{deep[1]}")
    cases = {"first_page": "/qflow/runs", "deep_page": f"/qflow/runs?before={key}",
             "filtered": "/qflow/runs?workflow=wf_1&state=failed",
             "api_runs_50": "/qflow/api/v1/runs?limit=50"}
    row = {"runs": count}
    for name, path in cases.items():
        row[f"{name}_s"] = round(timed_get(base + path, repeat)[0], 4)
    C.say(f"runs list over {count:,} runs: first page {row['first_page_s'] * 1000:.1f} ms, "
          f"{count // 2:,} deep {row['deep_page_s'] * 1000:.1f} ms, workflow+state filter "
          f"{row['filtered_s'] * 1000:.1f} ms, API 50 runs {row['api_runs_50_s'] * 1000:.1f} ms")
    return row


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    args = p.parse_args()
    repeat = C.repeats(args) + 2
    sizes = (1_000, 10_000) if args.quick else (10_000, 100_000)
    run_count = 10_000 if args.quick else 100_000
    with C.servers_up(pg=True, redis=True) as s:
        url = s.database_url("pg")
        t0 = time.perf_counter()
        maps = {n: add_map_run(url, n) for n in sizes}
        add_runs(url, run_count)
        C.say(f"wrote {sum(sizes):,} tasks and {run_count:,} runs in "
              f"{time.perf_counter() - t0:.1f} s; load average {C.loadavg()}")
        proc, base = serve(s, url)
        try:
            pages = [run_page_case(base, url, run_id, n, repeat, proc.pid)
                     for n, run_id in maps.items()]
            listing = runs_list_case(base, url, run_count + len(sizes), repeat)
        finally:
            proc.terminate()
            proc.wait(10)
    C.emit(args, "web_console", {"run_pages": pages, "runs_list": listing,
                                 "machine": C.machine()})


if __name__ == "__main__":
    main()
