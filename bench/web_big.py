"""The run page and the API's run JSON of a run of a million tasks, against their budgets.

    python bench/web_big.py                      # a map of 1,000,000 elements
    python bench/web_big.py --n 100000 --base HEAD~3   # and the same with that commit

The run is written straight into a private PostgreSQL by SQL (INSERT ... SELECT
generate_series), shaped as a map run in progress writes it: ``items`` succeeded, the
mapped node ``element`` pending with its counters (qflow_tasks.up_*), and its N elements
(60 % ended: succeeded, one in 997 failed, with one attempt each; 4 running; the rest
queued, those past the first 1,000 held back), an edge from each element to the mapped
node; then ANALYZE, no VACUUM (a run's pages are not all-visible while it moves).
`qflow web` (no worker: a broker is set) serves it; each URL is fetched once cold and
--repeat times, median and best reported: the page's HTML, its view.json, a live poll
(changes.json since a second before the latest end), a page of 400 elements
(elements.json), and the API's run JSON (its first page, and a page deep in the run).
With --base, the same at that commit's qflow (its view.json and API read every task:
fetched once each, with --base-timeout). Budgets: bench/run_all.py, qflow.web.pages.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import web_console as W  # noqa: E402
from bench.run_all import WEB_BIG_PAGE_MAX_MS, WEB_JSON_MAX_S  # noqa: E402

RUN = "b" * 32
DONE = 0.6                      # share of the elements ended
FILL = """
INSERT INTO qflow_runs (id, workflow, state, params, created_at, started_at, tasks_total,
  tasks_left, tasks_failed, tasks_canceled, held, unsigned, late, dispatch_window,
  in_flight, backlog)
VALUES (:run, 'bench_map', 'running', '{"n": :n}', now() - interval '1 hour',
  now() - interval '1 hour', :n + 2, :n - :done + 1, :failed, 0, false, false, false, 1000,
  1000, :n - :done - 1000);
INSERT INTO qflow_tasks (run_id, node, task, state, trigger_rule, queue, call, n_parents,
  up_succeeded, up_failed, up_skipped, attempts, worker, queued_at, started_at,
  finished_at, children)
VALUES (:run, 'items', 'bench_flows.items', 'succeeded', 'all_success', 'celery',
  '{"args": [:n], "kwargs": {}}', 0, 0, 0, 0, 1, 'w1@host', now() - interval '1 hour',
  now() - interval '1 hour', now() - interval '1 hour', '["element"]');
INSERT INTO qflow_tasks (run_id, node, task, state, trigger_rule, queue, call, options,
  n_parents, up_succeeded, up_failed, up_skipped, attempts, children, expanded)
VALUES (:run, 'element', 'bench_flows.noop', 'pending', 'all_success', 'celery',
  '{"args": [{"__qflow_ref__": "items"}], "kwargs": {}}', '{"map": {"max": 2000000}}',
  :n + 1, 1 + :done - :failed, :failed, 0, 0, '[]', :n);
INSERT INTO qflow_tasks (run_id, node, task, state, trigger_rule, queue, call, n_parents,
  up_succeeded, up_failed, up_skipped, attempts, worker, celery_id, queued_at, started_at,
  finished_at, children, held_back, error)
SELECT :run, 'element[' || i || ']', 'bench_flows.noop',
  CASE WHEN i < :done AND mod(i, 997) = 7 THEN 'failed' WHEN i < :done THEN 'succeeded'
       WHEN i < :done + 4 THEN 'running' ELSE 'queued' END,
  'all_success', 'celery', '{"args": [' || i || '], "kwargs": {}}', 0, 0, 0, 0,
  CASE WHEN i < :done + 4 THEN 1 ELSE 0 END,
  CASE WHEN i < :done + 4 THEN 'w' || mod(i, 2) || '@host' END,
  CASE WHEN i < :done + 4 THEN md5(i::text) END,
  now() - interval '1 hour' + i * interval '3 ms',
  CASE WHEN i < :done + 4 THEN now() - interval '1 hour' + i * interval '5 ms' END,
  CASE WHEN i < :done THEN now() - interval '1 hour' + i * interval '5 ms'
                           + interval '2 ms' END,
  '["element"]', i >= :done + 1000,
  CASE WHEN i < :done AND mod(i, 997) = 7 THEN 'ValueError: bad element ' || i END
FROM generate_series(0, :n - 1) AS i;
INSERT INTO qflow_edges (run_id, parent, child) VALUES (:run, 'items', 'element');
INSERT INTO qflow_edges (run_id, parent, child)
SELECT :run, 'element[' || i || ']', 'element' FROM generate_series(0, :n - 1) AS i;
INSERT INTO qflow_attempts (task_id, number, state, worker, celery_id, started_at,
  finished_at, error, traceback)
SELECT id, 1, state, worker, celery_id, started_at, finished_at, error,
  CASE WHEN error IS NOT NULL THEN 'Traceback: ' || error END
FROM qflow_tasks WHERE run_id = :run AND started_at IS NOT NULL;
ANALYZE;
"""


def fill(url: str, n: int) -> float:
    """The run of ``n`` elements written by SQL; returns the seconds it took."""
    import sqlalchemy as sa
    done = int(n * DONE)
    failed = len(range(7, done, 997))
    values = {"run": f"'{RUN}'", "n": str(n), "done": str(done), "failed": str(failed)}
    sql = FILL
    for key in sorted(values, key=len, reverse=True):
        sql = sql.replace(f":{key}", values[key])
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    t0 = time.perf_counter()
    with engine.connect() as conn:
        for statement in filter(str.strip, sql.split(";")):
            conn.exec_driver_sql(statement)
    engine.dispose()
    return time.perf_counter() - t0


def fetch(url: str, timeout: float) -> tuple[float, int, int]:
    """Seconds to fetch ``url`` whole, its size and HTTP status."""
    import urllib.error
    import urllib.request
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return time.perf_counter() - t0, len(body), status


def looks(url: str, n: int) -> dict[str, tuple[str, float | None]]:
    """What is fetched: name -> (path, budget in seconds or None)."""
    from qflow.web.pages import POLL_MS
    page = f"/qflow/runs/{RUN}"
    end = fill_end(url)
    since = urllib.parse.quote(end + "+00:00")
    deep = urllib.parse.quote(f"element[{n * 9 // 10}]")
    return {"page HTML": (page, 1.0),
            "view.json": (page + "/view.json", WEB_BIG_PAGE_MAX_MS / 1000),
            "changes.json": (f"{page}/changes.json?since={since}", POLL_MS / 1000),
            "elements.json": (f"{page}/elements.json?node=element&first={n // 2}", None),
            "API run JSON": (f"/qflow/api/v1/runs/{RUN}", WEB_JSON_MAX_S),
            "API page deep": (f"/qflow/api/v1/runs/{RUN}?after={deep}", WEB_JSON_MAX_S)}


def fill_end(url: str) -> str:
    """A second before the latest end the fill wrote (ISO, naive UTC), read back."""
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        latest = conn.exec_driver_sql(
            "SELECT max(finished_at) - interval '1 second' FROM qflow_tasks").scalar()
    engine.dispose()
    return latest.isoformat()


def measure(base: str, url: str, n: int, repeat: int, timeout: float, label: str) -> dict:
    out = {}
    for name, (path, budget) in looks(url, n).items():
        cold = fetch(base + path, timeout)
        runs = [cold] if cold[0] > timeout / 2 else [fetch(base + path, timeout)
                                                      for _ in range(repeat)]
        times = [r[0] for r in runs]
        med = statistics.median(times)
        out[name] = {"cold_s": round(cold[0], 3), "median_s": round(med, 3),
                     "best_s": round(min(times), 3), "bytes": runs[0][1],
                     "status": runs[0][2], "budget_s": budget}
        verdict = "" if budget is None else (" within" if med < budget else " OVER") + \
            f" its {budget:g} s budget"
        C.say(f"  [{label}] {name}: median {med * 1000:.0f} ms (best {min(times) * 1000:.0f},"
              f" cold {cold[0] * 1000:.0f}), {runs[0][1] / 1e3:.0f} kB, HTTP {runs[0][2]}"
              f"{verdict}; load {C.loadavg()}")
    return out


def plans(url: str) -> dict[str, list[str]]:
    """The scans of the statements behind view.json (big path) and a poll."""
    import sqlalchemy as sa

    from qflow.store import mapview, observe
    engine = sa.create_engine(url)
    found: dict[str, list[str]] = {}

    def explain(conn, cursor, statement, parameters, context, many):
        if statement.startswith("SELECT") and not statement.startswith("SELECT max"):
            rows = cursor.connection.execute("EXPLAIN " + statement, parameters).fetchall()
            found[f"{len(found)} {statement[:60]}"] = [
                r[0].strip().lstrip("-> ").split("  (")[0] for r in rows if "Scan" in r[0]]
    sa.event.listen(engine, "before_cursor_execute", explain)
    with engine.connect() as conn:
        mapview.big_view_shape(conn, RUN)
        observe.changed_since(conn, RUN, observe.latest_change(conn, RUN), mapview.WINDOW)
    engine.dispose()
    return found


def migrate(url: str, snapshot: str = "") -> None:
    """``qflow db upgrade`` of this checkout, or of the qflow extracted at ``snapshot``."""
    env = C._clean_env(QFLOW_DATABASE_URL=url)
    if snapshot:
        env["PYTHONPATH"] = snapshot + ":" + env["PYTHONPATH"]
    subprocess.run([C.qflow_bin(), "db", "upgrade"], env=env, check=True,
                   capture_output=True)


def measured(s: C.Servers, url: str, n: int, repeat: int, timeout: float, label: str,
             snapshot: str = "") -> dict:
    proc, base = W.serve(s, url, snapshot)
    try:
        return measure(base, url, n, repeat, timeout, label)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="elements of the map")
    p.add_argument("--base", default=None, help="also measure qflow at this git revision")
    p.add_argument("--base-timeout", type=float, default=300.0,
                   help="seconds a fetch may take on --base (default 300)")
    args = p.parse_args()
    n = 2_000 if args.quick else args.n
    repeat = C.repeats(args) + 2
    with C.servers_up(pg=True, redis=True) as s:
        url = C.new_pg_database(s.pg.url)
        snapshot, sha = C.extract(args.base, s.folder) if args.base else ("", "")
        migrate(url, snapshot)              # the base's schema first: it measures first
        took = fill(url, n)
        C.say(f"wrote a run of {n + 2:,} tasks, {n:,} edges and {int(n * DONE):,} attempts "
              f"in {took:.0f} s; load {C.loadavg()}")
        result = {"n": n, "fill_s": round(took, 1)}
        if snapshot:
            result[sha] = measured(s, url, n, 1, args.base_timeout, sha, snapshot)
            migrate(url)
        result["plans"] = plans(url)
        for name, scans in result["plans"].items():
            C.say(f"  plan {name}: {', '.join(scans)}")
        result["this"] = measured(s, url, n, repeat, 120.0, "this")
    C.emit(args, "web_big", {**result, "machine": C.machine()})


if __name__ == "__main__":
    main()
