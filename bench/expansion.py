"""Expansion: time and peak memory to validate and expand a DAG and commit its rows.

    python bench/expansion.py                  # 1k, 10k, 100k nodes; SQLite and PostgreSQL
    python bench/expansion.py --quick          # 1k and 10k, one run

The DAG is bench_flows.grid: layers of 100 nodes, each node after the first layer taking
the values of two nodes of the layer above (about 2 edges per node). What is timed is
what ``Engine.trigger`` does before it publishes: ``WorkflowDef.resolve_params`` +
``expand`` (run the body, build and validate the graph, topological check), then
``Store.transact(lifecycle.insert_run, ...)`` (every task and edge row in one transaction).
Each measurement runs in a fresh process, which reports its peak RSS (VmHWM); no broker
is involved. There is no raw Celery counterpart: a Celery canvas has no expansion step.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

DB_LABEL = {"sqlite": "SQLite", "pg": "PostgreSQL"}


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(size: int, database_url: str) -> None:
    """One measurement, in this fresh process; prints a JSON line."""
    from sqlalchemy import func, select

    from qflow import authoring
    from qflow.loader import load_app
    from qflow.store import Store, lifecycle
    from qflow.store.lifecycle import NewRun
    from qflow.store.models import edges, tasks
    load_app(str(C.FLOWS))
    wdef = authoring.WORKFLOWS["grid"]
    store = Store(database_url)
    store.ping()                                  # connect before measuring
    base = _status("VmRSS")
    t0 = time.perf_counter()
    values = wdef.resolve_params({"n": size})
    graph = wdef.expand(values)
    expand_s = time.perf_counter() - t0
    hwm_expand = _status("VmHWM")
    run_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    roots = store.transact(lifecycle.insert_run, NewRun(run_id, graph, values)).to_publish
    commit_s = time.perf_counter() - t0
    hwm_total = _status("VmHWM")
    with store.read() as conn:
        n_tasks = conn.execute(select(func.count()).select_from(tasks)
                               .where(tasks.c.run_id == run_id)).scalar()
        n_edges = conn.execute(select(func.count()).select_from(edges)
                               .where(edges.c.run_id == run_id)).scalar()
    assert n_tasks == size and n_edges == len(graph.edges), (n_tasks, n_edges)
    print(json.dumps(dict(size=size, edges=len(graph.edges), roots=len(roots),
                          expand_s=expand_s, commit_s=commit_s, base_rss=base,
                          hwm_expand=hwm_expand, hwm_total=hwm_total)))


def measure(size: int, database_url: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(size), database_url],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"expansion of {size} nodes failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3])
        return
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="comma-separated (default 1000,10000,100000)")
    p.add_argument("--db", default="sqlite,pg", help="comma-separated: sqlite, pg")
    args = p.parse_args()
    sizes = [int(x) for x in (args.sizes or ("1000,10000" if args.quick
                                             else "1000,10000,100000")).split(",")]
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    reps = C.repeats(args)
    rows = []
    mib = 1024 * 1024
    with C.servers_up(redis=False, pg="pg" in dbs) as s:
        for db in dbs:
            for size in sizes:
                url = s.database_url(db)       # a fresh database per size
                # A small case takes tens of milliseconds: more runs, so that its median
                # (the base of the growth exponent) does not ride on one noisy moment.
                runs = [measure(size, url)
                        for _ in range(reps if size >= 100_000 or args.quick else 2 * reps + 1)]
                for i, r in enumerate(runs):
                    C.say(f"  {size} nodes {db} run {i + 1}: expand {r['expand_s']:.3f} s, "
                          f"commit {r['commit_s']:.3f} s, peak RSS {r['hwm_total'] / mib:.0f} MiB")
                row = dict(db=db, setup=DB_LABEL[db], size=size, edges=runs[0]["edges"],
                           runs=len(runs),
                           expand_s=C.median([r["expand_s"] for r in runs]),
                           commit_s=C.median([r["commit_s"] for r in runs]),
                           base_rss_mib=C.median([r["base_rss"] for r in runs]) / mib,
                           peak_expand_mib=max(r["hwm_expand"] for r in runs) / mib,
                           peak_rss_mib=max(r["hwm_total"] for r in runs) / mib,
                           all=runs)
                row["total_s"] = row["expand_s"] + row["commit_s"]
                row["us_per_node"] = row["total_s"] / size * 1e6
                rows.append(row)
                C.say(f"expansion {size:>7} nodes {DB_LABEL[db]:<10} validate+expand "
                      f"{row['expand_s']:7.3f} s | commit {row['commit_s']:7.3f} s | "
                      f"{row['us_per_node']:6.1f} us/node | peak RSS {row['peak_rss_mib']:6.0f} MiB "
                      f"(expand {row['peak_expand_mib']:.0f}, before {row['base_rss_mib']:.0f}) "
                      f"[median of {len(runs)}]")
    # How cost grows: the exponent k in time ~ size^k between consecutive sizes (1 = linear).
    for db in dbs:
        mine = sorted((r for r in rows if r["db"] == db), key=lambda r: r["size"])
        for a, b in zip(mine, mine[1:]):
            k = math.log(b["total_s"] / a["total_s"]) / math.log(b["size"] / a["size"])
            b["growth_exponent"] = k
            C.say(f"growth {DB_LABEL[db]} {a['size']} -> {b['size']} nodes: time ~ size^{k:.2f}")
    C.emit(args, "expansion", {"rows": rows})


if __name__ == "__main__":
    main()
