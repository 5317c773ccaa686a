"""Expansion: time and peak memory to validate and expand a DAG and commit its rows.

    python bench/expansion.py                  # 1k, 10k, 100k nodes; SQLite and PostgreSQL
    python bench/expansion.py --quick          # 1k and 10k, one run
    python bench/expansion.py --db pg --sizes 10000,100000,1000000 --shape grid,map

Two shapes of workflow (``--shape``). ``grid`` is a hand-built DAG (bench_flows.grid):
layers of 100 nodes, each node after the first layer taking the values of two nodes of
the layer above (about 2 edges per node). ``map`` is bench_flows.mapped: one mapped node
over a list of N numbers, which expands into N element tasks (and N edges into the map)
as the run starts. What is timed is what ``Engine.trigger`` does before it publishes:
``WorkflowDef.resolve_params`` + ``expand`` (run the body, build and validate the graph,
topological check), then ``Store.transact(lifecycle.insert_run, ...)`` (every task and
edge row in one transaction, the roots queued, a root map expanded).
Each measurement runs in a fresh process, which reports its peak RSS (VmHWM); no broker
is involved. There is no raw Celery counterpart: a Celery canvas has no expansion step.
Beside the wall-clock times, the CPU seconds spent: this process's in each step, and on
PostgreSQL the server's (all its processes: the backend, the WAL writer, the
checkpointer) during the commit. On a machine others load, the wall-clock figure swings
with the load; the CPU seconds much less.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

DB_LABEL = {"sqlite": "SQLite", "pg": "PostgreSQL"}


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(postmaster: int | None) -> dict[int, float]:
    """CPU seconds of each process of the PostgreSQL server (local) so far."""
    if postmaster is None:
        return {}
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return {pid: _cpu(pid) for pid in map(int, children)}


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


WORKFLOW = {"grid": "grid", "map": "mapped"}


def child(shape: str, size: int, database_url: str) -> None:
    """One measurement, in this fresh process; prints a JSON line."""
    from sqlalchemy import func, select, text

    from qflow import authoring
    from qflow.loader import load_app
    from qflow.store import Store, lifecycle
    from qflow.store.lifecycle import NewRun
    from qflow.store.models import edges, tasks
    load_app(str(C.FLOWS))
    wdef = authoring.WORKFLOWS[WORKFLOW[shape]]
    store = Store(database_url)
    store.ping()                                  # connect before measuring
    postmaster = None
    if store.dialect == "postgresql":
        with store.read() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    base = _status("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    values = wdef.resolve_params({"n": size})
    graph = wdef.expand(values)
    expand_s, expand_cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm_expand = _status("VmHWM")
    run_id = uuid.uuid4().hex
    server = _server_cpu(postmaster)
    t0, c0 = time.perf_counter(), time.process_time()
    roots = store.transact(lifecycle.insert_run, NewRun(run_id, graph, values)).to_publish
    commit_s, commit_cpu = time.perf_counter() - t0, time.process_time() - c0
    server_cpu = sum(s - server.get(pid, 0.0) for pid, s in _server_cpu(postmaster).items())
    hwm_total = _status("VmHWM")
    with store.read() as conn:
        n_tasks = conn.execute(select(func.count()).select_from(tasks)
                               .where(tasks.c.run_id == run_id)).scalar()
        n_edges = conn.execute(select(func.count()).select_from(edges)
                               .where(edges.c.run_id == run_id)).scalar()
    # A map's elements are rows of their own beside the mapped node, each an edge into it.
    want = (size, len(graph.edges)) if shape == "grid" else (size + 1, size)
    assert (n_tasks, n_edges) == want, (n_tasks, n_edges, want)
    print(json.dumps(dict(size=size, edges=n_edges, roots=len(roots),
                          expand_s=expand_s, commit_s=commit_s, expand_cpu=expand_cpu,
                          commit_cpu=commit_cpu, server_cpu=server_cpu, base_rss=base,
                          hwm_expand=hwm_expand, hwm_total=hwm_total)))


def measure(shape: str, size: int, database_url: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", shape, str(size), database_url],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"expansion of {size} nodes failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": C.loadavg()}


def _runs(args, reps: int, size: int) -> int:
    """A small case takes tens of milliseconds: more runs, so that its median (the base of
    the growth exponent) does not ride on one noisy moment; a million nodes, one unless
    --repeat says otherwise."""
    if args.repeat:
        return args.repeat
    if size >= 1_000_000:
        return 1
    return reps if size >= 100_000 or args.quick else 2 * reps + 1


def _exponent(a: dict, b: dict, key: str) -> float:
    return math.log(b[key] / a[key]) / math.log(b["size"] / a["size"])


def measure_row(s, db: str, shape: str, size: int, n_runs: int) -> dict:
    """``n_runs`` measurements of one case, each on a fresh database, and their median."""
    mib = 1024 * 1024
    runs = [measure(shape, size, s.database_url(db)) for _ in range(n_runs)]
    for i, r in enumerate(runs):
        C.say(f"  {shape} {size} nodes {db} run {i + 1}: expand {r['expand_s']:.3f} s "
              f"(CPU {r['expand_cpu']:.2f}), commit {r['commit_s']:.3f} s (CPU: here "
              f"{r['commit_cpu']:.2f}, server {r['server_cpu']:.2f}), peak RSS "
              f"{r['hwm_total'] / mib:.0f} MiB, load {r['load']}")
    row = dict(db=db, setup=DB_LABEL[db], shape=shape, size=size, edges=runs[0]["edges"],
               runs=len(runs),
               expand_s=C.median([r["expand_s"] for r in runs]),
               commit_s=C.median([r["commit_s"] for r in runs]),
               expand_cpu=C.median([r["expand_cpu"] for r in runs]),
               commit_cpu=C.median([r["commit_cpu"] for r in runs]),
               server_cpu=C.median([r["server_cpu"] for r in runs]),
               base_rss_mib=C.median([r["base_rss"] for r in runs]) / mib,
               peak_expand_mib=max(r["hwm_expand"] for r in runs) / mib,
               peak_rss_mib=max(r["hwm_total"] for r in runs) / mib,
               all=runs)
    row["total_s"] = row["expand_s"] + row["commit_s"]
    row["added_mib"] = max(row["peak_rss_mib"] - row["base_rss_mib"], 1.0)
    row["us_per_node"] = row["total_s"] / size * 1e6
    C.say(f"expansion {shape:<4} {size:>9,} nodes {DB_LABEL[db]:<10} validate+expand "
          f"{row['expand_s']:7.3f} s | commit {row['commit_s']:7.3f} s | CPU: expand "
          f"{row['expand_cpu']:.2f} s, commit {row['commit_cpu']:.2f} s + server "
          f"{row['server_cpu']:.2f} s | "
          f"{row['us_per_node']:6.1f} us/node | peak RSS {row['peak_rss_mib']:6.0f} MiB "
          f"(expand {row['peak_expand_mib']:.0f}, before {row['base_rss_mib']:.0f}) "
          f"[median of {len(runs)}]")
    return row


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="comma-separated (default 1000,10000,100000)")
    p.add_argument("--db", default="sqlite,pg", help="comma-separated: sqlite, pg")
    p.add_argument("--shape", default="grid", help="comma-separated: grid, map (default grid)")
    args = p.parse_args()
    sizes = [int(x) for x in (args.sizes or ("1000,10000" if args.quick
                                             else "1000,10000,100000")).split(",")]
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    shapes = [x.strip() for x in args.shape.split(",") if x.strip()]
    unknown = set(shapes) - set(WORKFLOW)
    if unknown:
        p.error(f"unknown shape(s) {sorted(unknown)}: use grid, map")
    reps = C.repeats(args)
    rows = []
    with C.servers_up(redis=False, pg="pg" in dbs) as s:
        for db in dbs:
            for shape in shapes:
                for size in sizes:
                    rows.append(measure_row(s, db, shape, size, _runs(args, reps, size)))
    # How cost grows: the exponent k in cost ~ size^k between consecutive sizes (1 =
    # linear), of the time and of the memory the expansion added to the process.
    for db in dbs:
        for shape in shapes:
            mine = sorted((r for r in rows if (r["db"], r["shape"]) == (db, shape)),
                          key=lambda r: r["size"])
            for a, b in zip(mine, mine[1:], strict=False):
                b["growth_exponent"] = _exponent(a, b, "total_s")
                b["memory_exponent"] = _exponent(a, b, "added_mib")
                C.say(f"growth {shape} {DB_LABEL[db]} {a['size']} -> {b['size']} nodes: "
                      f"time ~ size^{b['growth_exponent']:.2f}, "
                      f"memory ~ size^{b['memory_exponent']:.2f}")
    C.emit(args, "expansion", {"rows": rows})


if __name__ == "__main__":
    main()
