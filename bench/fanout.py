"""Fan-out: one workflow of N independent no-op tasks vs a raw Celery group of N.

    python bench/fanout.py                      # N = 1,000 and 10,000; PostgreSQL and SQLite
    python bench/fanout.py --db pg --n 1000     # one case
    python bench/fanout.py --quick              # smoke test: N = 200 and 1,000, one run

Both sides run on one private redis-server (qflow on db 0, raw Celery on db 1 with its
results on db 2), each with one worker `-c 2` prefork started beside the other. The time
is trigger to done: for qflow from ``Engine.trigger`` until the run row is terminal (every
task state committed), for raw Celery from ``group.apply_async()`` until ``.get()``
returned every result. Prints tasks/s and qflow's ratio to raw Celery.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def raw_fanout(app, n: int) -> float:
    from celery import group
    noop = app.tasks["bench.noop"]

    def go():
        res = group(noop.s(i) for i in range(n)).apply_async()
        values = C.raw_get(res)
        res.forget()
        return values
    seconds, values = C.timed(go)
    assert len(values) == n and sum(values) == n * (n + 1) // 2, "raw group lost results"
    return seconds


def qflow_fanout(rt, n: int) -> tuple[float, float]:
    engine = rt.engine
    state = {}

    def go():
        run_id = engine.trigger("fanout", {"n": n})
        state["triggered"] = C.time.perf_counter()
        return C.qflow_wait(rt, run_id)
    t0 = C.time.perf_counter()
    seconds, run = C.timed(go)
    assert run["state"] == "succeeded" and run["tasks_done"] == n, run
    return seconds, state["triggered"] - t0


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", default=None, help="comma-separated sizes (default 1000,10000)")
    C.add_compare_options(p, db="pg,sqlite")
    args = p.parse_args()
    sizes = [int(x) for x in (args.n or ("200,1000" if args.quick else "1000,10000")).split(",")]
    rows: list[dict] = []
    commands: dict[str, str] = {}

    def warm_up(app, rt) -> None:
        raw_fanout(app, 100)
        qflow_fanout(rt, 100)

    def cases(app, rt):
        return [(n, f"fan-out N={n}", lambda n=n: raw_fanout(app, n),
                 lambda n=n: qflow_fanout(rt, n)) for n in sizes]

    for db, n, raws, qs in C.compare(args, commands, warm_up, cases):
        raw_s = C.median(raws)
        q_s = C.median([x[0] for x in qs])
        trig = C.median([x[1] for x in qs])
        row = dict(db=db, setup=C.DB_LABEL[db], n=n, runs=len(qs),
                   raw_seconds=raws, qflow_seconds=[x[0] for x in qs],
                   qflow_trigger_seconds=[x[1] for x in qs],
                   raw_tasks_per_s=n / raw_s, qflow_tasks_per_s=n / q_s,
                   qflow_trigger_s=trig, ratio=(n / q_s) / (n / raw_s))
        rows.append(row)
        C.say(f"fan-out N={n:>6} {C.DB_LABEL[db]:<20} raw {row['raw_tasks_per_s']:8.1f}"
              f" tasks/s | qflow {row['qflow_tasks_per_s']:8.1f} tasks/s "
              f"(trigger {trig:.2f} s) | ratio {row['ratio']:.2f}x "
              f"[median of {len(qs)}]")
    C.emit(args, "fanout", {"rows": rows, "workers": commands,
                            "qflow_settings": C.qflow_settings()})


if __name__ == "__main__":
    main()
