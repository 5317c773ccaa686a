"""Many small runs: R diamond runs (a -> b, c -> d) triggered at once; runs/s.

    python bench/many_runs.py            # R = 1,000 on Redis + PostgreSQL
    python bench/many_runs.py --quick    # R = 100, one run

qflow: one client triggers the R runs one after another as fast as it can (the workers
start on the first ones meanwhile), then waits until every run row is terminal. Raw
Celery: R ``chain(a, group(b, c), d)`` canvases (a chord with a Redis result backend),
applied one after another, then every final result fetched. Time from the first trigger
to the last run done. Both sides are measured the same way: one client, one run after
another, then waiting; workers -c 2 on the same Redis. Also printed: the CPU each kind of
process spent per run (the client, each worker's main and pool processes, PostgreSQL,
Redis), medians over the measured runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def raw_diamonds(app, runs: int) -> tuple[float, float]:
    from celery import chain, group
    noop, add = app.tasks["bench.noop"], app.tasks["bench.add"]
    t0 = C.time.perf_counter()
    results = [chain(noop.s(1), group(noop.s(), noop.s()), add.s()).apply_async()
               for _ in range(runs)]
    triggered = C.time.perf_counter() - t0
    values = [C.raw_get(r, follow_parents=False) for r in results]
    seconds = C.time.perf_counter() - t0
    assert values == [6] * runs, "raw diamonds went wrong"
    return seconds, triggered


def qflow_diamonds(rt, runs: int) -> tuple[float, float]:
    engine = rt.engine
    t0 = C.time.perf_counter()
    ids = [engine.trigger("diamond", {"x": 1}) for _ in range(runs)]
    triggered = C.time.perf_counter() - t0
    ended = [C.qflow_wait(rt, run_id) for run_id in ids]
    seconds = C.time.perf_counter() - t0
    bad = [r for r in ended if r["state"] != "succeeded" or r["tasks_done"] != 4]
    assert not bad, bad[:3]
    return seconds, triggered


def with_cpu(fn, pg_port: int | None):
    """``fn``'s (seconds, triggered), and the CPU each kind of process spent meanwhile."""
    def measured():
        (seconds, triggered), cpu = C.cpu_spent(fn, pg_port)
        return seconds, triggered, cpu
    return measured


def cpu_line(side: str, cpus: list[dict[str, float]], runs: int) -> str:
    """Median ms of CPU per run, by kind of process, over the measured runs of a side."""
    kinds = sorted({k for cpu in cpus for k in cpu},
                   key=lambda k: -C.median([cpu.get(k, 0.0) for cpu in cpus]))
    parts = [(k, C.median([cpu.get(k, 0.0) for cpu in cpus]) * 1000 / runs) for k in kinds]
    total = C.median([sum(cpu.values()) for cpu in cpus]) * 1000 / runs
    return (f"  CPU per run, {side}: {total:.1f} ms in all: "
            + ", ".join(f"{k} {ms:.1f}" for k, ms in parts if ms >= 0.05))


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="diamond runs (default 1000)")
    C.add_compare_options(p, db="pg")
    args = p.parse_args()
    runs = args.runs or (100 if args.quick else 1000)
    rows: list[dict] = []
    commands: dict[str, str] = {}

    def warm_up(app, rt) -> None:
        raw_diamonds(app, 20)
        qflow_diamonds(rt, 20)

    def cases(app, rt):
        from sqlalchemy.engine import make_url
        port = make_url(rt.config.database_url).port
        return [(runs, f"{runs} diamonds", with_cpu(lambda: raw_diamonds(app, runs), port),
                 with_cpu(lambda: qflow_diamonds(rt, runs), port))]

    for db, _, raws, qs in C.compare(args, commands, warm_up, cases):
        raw_s = C.median([x[0] for x in raws])
        q_s = C.median([x[0] for x in qs])
        row = dict(db=db, setup=C.DB_LABEL[db], runs_per_case=runs, runs=len(qs),
                   raw_seconds=[x[0] for x in raws],
                   qflow_seconds=[x[0] for x in qs],
                   raw_trigger_s=C.median([x[1] for x in raws]),
                   qflow_trigger_s=C.median([x[1] for x in qs]),
                   raw_runs_per_s=runs / raw_s, qflow_runs_per_s=runs / q_s,
                   ratio=raw_s / q_s, raw_cpu=[x[2] for x in raws],
                   qflow_cpu=[x[2] for x in qs])
        rows.append(row)
        C.say(f"{runs} diamond runs {C.DB_LABEL[db]:<20} raw {row['raw_runs_per_s']:7.1f}"
              f" runs/s | qflow {row['qflow_runs_per_s']:7.1f} runs/s (triggering "
              f"took {row['qflow_trigger_s']:.2f} s, raw's {row['raw_trigger_s']:.2f} s) | "
              f"ratio {row['ratio']:.2f}x [median of {len(qs)}] (load {C.loadavg()})")
        C.say(cpu_line("raw Celery", row["raw_cpu"], runs))
        C.say(cpu_line("qflow", row["qflow_cpu"], runs))
    C.emit(args, "many_runs", {"rows": rows, "workers": commands})


if __name__ == "__main__":
    main()
