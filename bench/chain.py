"""Chain: a workflow of N dependent no-op tasks vs a raw Celery chain of N; ms per hop.

    python bench/chain.py                # N = 500 on Redis + PostgreSQL
    python bench/chain.py --quick        # N = 100, one run
    python bench/chain.py --task-events  # both sides send task events (Flower watching)
    python bench/chain.py --setting task_events=true   # qflow's side only

Each task takes the previous one's value (qflow reads it from the results DB; Celery's
chain passes it in the next message). Trigger to done, divided by N.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def raw_chain(app, n: int) -> float:
    from celery import chain
    noop = app.tasks["bench.noop"]

    def go():
        res = chain(noop.s(0), *[noop.s() for _ in range(n - 1)]).apply_async()
        # follow_parents=False: do not poll the 499 parents' states while waiting (the
        # client would compete with the workers for the CPU; raw Celery gets its best).
        return C.raw_get(res, follow_parents=False)
    seconds, value = C.timed(go)
    assert value == n, f"raw chain ended with {value}, not {n}"
    return seconds


def qflow_chain(rt, n: int) -> float:
    engine = rt.engine
    seconds, run = C.timed(lambda: C.qflow_wait(rt, engine.trigger("chain", {"n": n})))
    assert run["state"] == "succeeded" and run["tasks_done"] == n, run
    return seconds


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="chain length (default 500)")
    C.add_compare_options(p, db="pg")
    args = p.parse_args()
    n = args.n or (100 if args.quick else 500)
    rows: list[dict] = []
    commands: dict[str, str] = {}

    def warm_up(app, rt) -> None:
        raw_chain(app, 50)
        qflow_chain(rt, 50)

    def cases(app, rt):
        return [(n, f"chain N={n}", lambda: raw_chain(app, n), lambda: qflow_chain(rt, n))]

    for db, _, raws, qs in C.compare(args, commands, warm_up, cases):
        raw_ms = C.median(raws) * 1000 / n
        q_ms = C.median(qs) * 1000 / n
        row = dict(db=db, setup=C.DB_LABEL[db], n=n, runs=len(qs),
                   raw_seconds=raws, qflow_seconds=qs, raw_ms_per_hop=raw_ms,
                   qflow_ms_per_hop=q_ms, ratio=q_ms / raw_ms)
        rows.append(row)
        C.say(f"chain N={n} {C.DB_LABEL[db]:<20} raw {raw_ms:6.2f} ms/hop | qflow "
              f"{q_ms:6.2f} ms/hop | ratio {row['ratio']:.2f}x [median of {len(qs)}]")
    C.emit(args, "chain", {"rows": rows, "workers": commands, "task_events": args.task_events,
                           "qflow_settings": args.setting})


if __name__ == "__main__":
    main()
