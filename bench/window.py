"""Bounded dispatch: Redis' peak memory for one wide run, with and without the window.

    python bench/window.py                       # 20,000 roots; windows 0 (none), 1000, auto
    python bench/window.py --n 5000 --windows 0,50
    python bench/window.py --quick               # 2,000 roots, one run per window

Each case gets a fresh redis-server (so ``used_memory_peak`` counts this run only) and a
fresh PostgreSQL database, one `qflow worker -c 2` with the same ``dispatch_window`` as
the client, then one run of the fan-out workflow of bench/bench_flows.py (N independent
no-op tasks). Printed per window: Redis' used_memory before the trigger and its peak
(INFO memory) while the run went, the most messages seen waiting in the queue (LLEN of
its priority lists, sampled every 20 ms), the time `trigger` took and trigger to done.
For ``auto`` (sized from the live workers' processes) also the size the run had.
The windows are measured one after the other, alternating over the repeats.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

MIB = 1024 * 1024


def _runtime(broker_url: str, database_url: str, window: int | str):
    from qflow.config import Config
    from qflow.loader import load_app
    from qflow.runtime import Runtime
    load_app(str(C.FLOWS))
    return Runtime(Config(broker_url=broker_url, database_url=database_url,
                          app=str(C.FLOWS), wait_poll_interval=0.05,
                          dispatch_window=window))


class _Sampler(threading.Thread):
    """The most messages waiting in the default queue (all priority lists) over time."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client, self.most, self.done = client, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            keys = self.client.keys("default*")
            pipe = self.client.pipeline()
            for key in keys:
                pipe.llen(key)
            self.most = max(self.most, sum(pipe.execute()) if keys else 0)
            time.sleep(0.02)


def one_case(pg, folder: Path, n: int, window: int | str) -> dict:
    import redis
    server = C.start_redis()
    worker = None
    try:
        url = C.new_pg_database(pg.url)
        C.migrate(url)
        worker = C.start_qflow_worker(server.url, url, folder, name=f"w{window}",
                                      QFLOW_DISPATCH_WINDOW=str(window))
        rt = _runtime(server.url, url, window)
        client = redis.Redis.from_url(server.url)
        before = client.info("memory")["used_memory"]
        sampler = _Sampler(client)
        sampler.start()
        t0 = time.perf_counter()
        run_id = rt.engine.trigger("fanout", {"n": n})
        triggered = time.perf_counter() - t0
        run = C.qflow_wait(rt, run_id)
        total = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
        assert run["state"] == "succeeded" and run["tasks_done"] == n, run
        peak = client.info("memory")["used_memory_peak"]
        size = _size_of(rt, run_id)
        rt.store.dispose()
        return {"window": window, "size": size, "n": n, "used_before_mib": before / MIB,
                "peak_mib": peak / MIB, "peak_over_before_mib": (peak - before) / MIB,
                "most_waiting": sampler.most, "trigger_s": triggered, "total_s": total,
                "tasks_per_s": n / total}
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def _size_of(rt, run_id: str) -> int | None:
    """The run's window as it ended (for ``auto``, what the workers made it)."""
    from sqlalchemy import select

    from qflow.store.models import runs
    with rt.store.read() as conn:
        return conn.execute(select(runs.c.dispatch_window)
                            .where(runs.c.id == run_id)).scalar_one()


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="roots (default 20000; 2000 quick)")
    p.add_argument("--windows", default="0,1000,auto",
                   help="comma-separated dispatch_window values; 0 = no bound")
    args = p.parse_args()
    n = args.n or (2000 if args.quick else 20000)
    windows = [w if w == "auto" else int(w) for w in args.windows.split(",")]
    results: list[dict] = []
    with C.servers_up(pg=True, redis=False) as s:
        for _ in range(C.repeats(args) if not args.quick else 1):
            for window in windows:
                row = one_case(s.pg, s.folder, n, window)
                results.append(row)
                label = f"auto ({row['size']})" if window == "auto" else window or "none"
                C.say(f"window {label:>6}: Redis used {row['used_before_mib']:.1f}"
                      f" MiB before, peak {row['peak_mib']:.1f} MiB (+"
                      f"{row['peak_over_before_mib']:.1f}); at most {row['most_waiting']}"
                      f" messages waiting; trigger {row['trigger_s']:.2f} s, done in "
                      f"{row['total_s']:.1f} s ({row['tasks_per_s']:.0f} tasks/s); "
                      f"load {C.loadavg()}")
    C.emit(args, "window", {"results": results, "machine": C.machine()})


if __name__ == "__main__":
    main()
