"""`qflow status RUN` of a run of 1,000,000 tasks: how long it takes and its peak memory.

    python bench/status_big.py                       # 1,000,000 tasks, SQLite and PostgreSQL
    python bench/status_big.py --n 200000 --db pg
    python bench/status_big.py --quick               # 100,000 tasks, one look each

The rows are written by SQL (a series of numbers), not by running anything: two runs of
one map, ``numbers`` -> ``square[0..n-4]`` -> ``total`` (``square``'s own row, whose
counters count its ended elements as a run keeps them, collects them). One is running (60% of its
tasks succeeded, the rest queued, a few running, retrying and failed), looked at with a
broker set, as a cluster's user does (its warnings read the workers' liveness); the other
ended (all succeeded but a few failed; ``total`` upstream_failed), whose time summary is
read too. Each look is a fresh `qflow status RUN` process (the table, then ``--json``,
written to a file); reported are the wall-clock seconds (median), the peak RSS and the
machine's load average. STATUS_MAX_S is the budget bench/big_run.py assumes.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench.big_run import STATUS_MAX_S  # noqa: E402

# Per dialect: the series 0..n-1 as rows of ``i``, and a time ``ms`` milliseconds after
# 2026-11-30 10:00 as the store writes times (SQLite: text with microseconds).
SERIES = {"postgresql": "generate_series(0, :last) AS s(i)",
          "sqlite": "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s "
                    "WHERE i < :last) SELECT i FROM s) AS s"}
AT = {"postgresql": "(TIMESTAMP '2026-11-30 10:00:00' + ({ms}) * INTERVAL '1 millisecond')",
      "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', '2026-11-30 10:00:00', "
                "'+' || (({ms}) / 1000.0) || ' seconds') || '000')"}
NODE = ("CASE WHEN i = 0 THEN 'numbers' WHEN i = 1 THEN 'square' "
        "WHEN i = :last THEN 'total' "
        "ELSE 'square[' || (i - 2) || ']' END")
# The running run: a few failed, running and retrying tasks; 60% succeeded, then queued.
RUNNING = ("CASE WHEN i = 1 OR i = :last THEN 'pending' WHEN i % 250000 = 17 THEN 'failed' "
           "WHEN i % 100000 = 5 THEN 'running' "
           "WHEN i % 500000 = 9 THEN 'retrying' WHEN i < :last * 6 / 10 THEN 'succeeded' "
           "ELSE 'queued' END")
ENDED = ("CASE WHEN i = :last THEN 'upstream_failed' WHEN i = 1 THEN 'failed' "
         "WHEN i % 250000 = 17 THEN 'failed' "
         "ELSE 'succeeded' END")


def fill(url: str, run_id: str, n: int, ended: bool) -> float:
    """Write a run of ``n`` tasks (and its map's edges) at ``url``; seconds taken."""
    import sqlalchemy as sa

    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    state = ENDED if ended else RUNNING
    at = AT[dialect]
    started = f"CASE WHEN ({state}) IN ('queued') THEN NULL ELSE {at.format(ms='i')} END"
    finished = (f"CASE WHEN ({state}) IN ('succeeded', 'failed', 'upstream_failed') "
                f"THEN {at.format(ms='i + i % 997')} END")
    tasks = (
        "INSERT INTO qflow_tasks (run_id, node, task, state, trigger_rule, call, n_parents, "
        "up_succeeded, up_failed, up_skipped, attempts, unsent, holding, late, held_back, "
        "priority, queued_at, started_at, finished_at, worker, celery_id, error) "
        f"SELECT :run_id, {NODE}, 'bench.square', {state}, 'all_success', '{{}}', 1, 0, 0, "
        f"0, 1, false, false, false, false, 0, {at.format(ms='i')}, {started}, {finished}, "
        "'w' || (i % 8) || '@host', 'c' || i, "
        f"CASE WHEN ({state}) = 'failed' THEN 'ValueError: ' || i END FROM {SERIES[dialect]}")
    edges = ("INSERT INTO qflow_edges (run_id, parent, child) "
             f"SELECT :run_id, 'square[' || (i - 2) || ']', 'square' FROM {SERIES[dialect]} "
             "WHERE i > 1 AND i < :last")
    # The map's row as its run keeps it: expanded, its elements among its parents, each
    # ended one counted (with ``numbers``, succeeded).
    counters = ("UPDATE qflow_tasks SET expanded = :last - 2, n_parents = :last - 1, "
                "up_succeeded = 1 + (SELECT count(*) FROM qflow_tasks e WHERE e.run_id = :run_id "
                "AND e.node LIKE 'square[%' AND e.state = 'succeeded'), "
                "up_failed = (SELECT count(*) FROM qflow_tasks e WHERE e.run_id = :run_id "
                "AND e.node LIKE 'square[%' AND e.state = 'failed') "
                "WHERE run_id = :run_id AND node = 'square'")
    run = sa.text(
        "INSERT INTO qflow_runs (id, workflow, state, params, created_at, started_at, "
        "finished_at, tasks_total, tasks_left, tasks_failed, tasks_canceled, held, unsigned, "
        "late, in_flight, backlog) VALUES (:run_id, 'big_map', :state, '{\"n\": 1}', "
        ":t0, :t0, :t1, :n, :left, 0, 0, false, false, false, 0, 0)")
    t0 = time.perf_counter()
    engine = sa.create_engine(url)
    import datetime as dt
    start = dt.datetime(2026, 11, 30, 10)
    with engine.begin() as conn:
        conn.execute(run, {"run_id": run_id, "state": "failed" if ended else "running",
                           "t0": start, "t1": start + dt.timedelta(hours=1) if ended else None,
                           "n": n, "left": 0 if ended else n * 4 // 10})
        conn.execute(sa.text(tasks), {"run_id": run_id, "last": n - 1})
        conn.execute(sa.text(edges), {"run_id": run_id, "last": n - 1})
        conn.execute(sa.text(counters), {"run_id": run_id, "last": n - 1})
        conn.execute(sa.text(
            "INSERT INTO qflow_edges (run_id, parent, child) VALUES (:r, 'numbers', 'square'),"
            " (:r, 'square', 'total')"), {"r": run_id})
    with engine.connect() as conn:          # fresh statistics, as autovacuum would give
        if dialect == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text("VACUUM ANALYZE qflow_tasks"))
        else:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


def look(argv: list[str], env: dict[str, str], out: Path, timeout: float
         ) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds (user + system: the steadier figure on a busy
    machine) and peak RSS (bytes) of one fresh `qflow status`, which must exit 0; its
    output goes to ``out``. One still running after ``timeout`` seconds is killed and
    counted as taking for ever."""
    t0 = time.perf_counter()
    with out.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.DEVNULL)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        killer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if wall >= timeout:
        return float("inf"), cpu, usage.ru_maxrss * 1024
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, cpu, usage.ru_maxrss * 1024      # KiB on Linux


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="tasks a run (1,000,000)")
    parser.add_argument("--db", default="sqlite,pg", help="sqlite, pg or both (default)")
    parser.add_argument("--url", default=None,
                        help="an empty PostgreSQL database to use instead of a private server")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="kill a look still running after this many seconds (120)")
    args = parser.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    repeat = C.repeats(args)
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="qflow-status-big-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        for db in args.db.split(","):
            if db == "sqlite":
                url = f"sqlite:///{folder / 'qflow.db'}"
            elif args.url:
                url = args.url
            else:
                server = C.start_postgres()
                stack.callback(server.stop)
                url = C.new_pg_database(server.url)
            C.migrate(url)
            env = C._clean_env(QFLOW_DATABASE_URL=url,
                               QFLOW_BROKER_URL="redis://127.0.0.1:1/0")  # never reached
            for kind in ("running", "ended"):
                run_id = uuid.uuid4().hex
                took = fill(url, run_id, n, kind == "ended")
                C.say(f"{db}: {n:,} task rows of a {kind} run written in {took:.1f}s")
                for label, extra in (("status", []), ("status --json", ["--json"])):
                    argv = [C.qflow_bin(), "status", run_id, *extra]
                    out = folder / f"{db}-{kind}.out"
                    look(argv, env, out, args.timeout)                      # bytecode, page cache
                    walls, cpus, peaks = [], [], []
                    for _ in range(repeat):
                        wall, cpu, peak = look(argv, env, out, args.timeout)
                        walls.append(wall)
                        cpus.append(cpu)
                        peaks.append(peak)
                    name = f"{label} ({db}, {kind})"
                    figures[name] = {"median_s": statistics.median(walls), "runs": repeat,
                                     "cpu_median_s": statistics.median(cpus),
                                     "peak_rss_mib": max(peaks) / 2**20,
                                     "output_bytes": out.stat().st_size}
                    C.say(f"{name:34} {statistics.median(walls):7.2f}s median of {repeat}  "
                          f"({'within' if statistics.median(walls) <= STATUS_MAX_S else 'OVER'}"
                          f" {STATUS_MAX_S}s)  CPU {statistics.median(cpus):.2f}s  "
                          f"peak RSS {max(peaks) / 2**20:.0f} MiB  "
                          f"output {out.stat().st_size / 2**20:.1f} MiB  "
                          f"load {C.loadavg()}")
    C.emit(args, "status_big", {"n": n, "budget_s": STATUS_MAX_S, "figures": figures})


if __name__ == "__main__":
    main()
