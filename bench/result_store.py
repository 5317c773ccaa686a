"""Fan-out with a local result store and encryption on vs return values in the results DB.

    python bench/result_store.py                # N = 1,000, PostgreSQL, 3 runs each
    python bench/result_store.py --n 2000 --repeat 5
    python bench/result_store.py --quick        # N = 300, one run each

One private redis-server and PostgreSQL; one `qflow worker -c 2` per side, each on a
fresh database, started side by side. The in-DB side keeps each no-op's return value in
qflow_tasks (as without a result store); the other writes it, encrypted, as one object
under a local `result_store` and records only its reference. The time is trigger to done
(the run row terminal). Prints tasks/s for each and the ratio (target: >= 0.8); nothing
is asserted.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def fanout_seconds(rt, n: int) -> float:
    def go():
        return C.qflow_wait(rt, rt.engine.trigger("fanout", {"n": n}))
    seconds, run = C.timed(go)
    assert run["state"] == "succeeded" and run["tasks_done"] == n, run
    return seconds


def main() -> None:
    from qflow.results.crypto import new_key

    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="tasks per run (default 1000)")
    args = p.parse_args()
    n = args.n or (300 if args.quick else 1000)
    store = Path(tempfile.mkdtemp(prefix="qflow-bench-results-"))
    sides = {"in-DB": {},
             "store+key": {"QFLOW_RESULT_STORE": f"file://{store}",
                           "QFLOW_ENCRYPTION_KEY": new_key()}}
    with C.servers_up(pg=True, redis=True) as s:
        runtimes, workers = {}, []
        for db, (name, settings) in enumerate(sides.items()):
            broker, database = s.redis_url(db), s.database_url("pg")
            workers.append(C.start_qflow_worker(broker, database, s.folder, name.replace(
                "+", "-").lower(), **settings))
            runtimes[name] = C.qflow_runtime(broker, database)
        try:
            for rt in runtimes.values():
                fanout_seconds(rt, min(n, 200))             # warm up: imports, pools
            times: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(C.repeats(args)):                # interleaved, so drift is shared
                for name, rt in runtimes.items():
                    times[name].append(fanout_seconds(rt, n))
        finally:
            for w in workers:
                w.stop()
    rates = {name: n / C.median(values) for name, values in times.items()}
    ratio = rates["store+key"] / rates["in-DB"]
    for name, values in times.items():
        C.say(f"{name:>10}: {rates[name]:7.0f} tasks/s  (runs: {C.fmt_times(values)})")
    C.say(f"result store + encryption / in-DB: {ratio:.2f}x  (target >= 0.8; N = {n}, "
          f"{len(list(store.rglob('*')))} files and folders written)")
    C.emit(args, "result_store", {"n": n, "tasks_per_s": rates, "ratio": ratio})


if __name__ == "__main__":
    main()
