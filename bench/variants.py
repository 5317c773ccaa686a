"""What-if: qflow with some hard-coded settings changed, next to stock qflow and raw Celery.

    python bench/variants.py              # fan-out of 1,000 and chain of 200, median of 3
    python bench/variants.py --quick      # one run

Each variant is a `qflow worker -c 2` started through bench/patched_qflow.py (nothing
under qflow/ is edited) with its own Redis db and PostgreSQL database, all running side
by side; the runs alternate raw Celery, stock qflow and each variant, so load on the
machine hits them alike. A second raw Celery worker runs with the Redis transport's ack
emulation off, as qflow's workers do. Redis + PostgreSQL (stock durability unless a
variant says).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench.chain import raw_chain  # noqa: E402
from bench.fanout import raw_fanout  # noqa: E402

VARIANTS = [       # (bench/patched_qflow.py flags, results DB, label, worker settings)
    ("", "pg", "stock qflow", {}),
    ("events", "pg", "with Celery task events on (what Flower costs while it watches)", {}),
    ("ackemulation", "pg", "with kombu's Redis ack emulation on (kombu's default)", {}),
    ("", "pg", "every task through the broker (follow_seconds = 0)",
     {"QFLOW_FOLLOW_SECONDS": "0"}),
    ("", "pg-async", "results DB with synchronous_commit=off (not durable: the disk wait's share)",
     {}),
]

RAW_NOACK = ("raw Celery itself with ack_emulation=False, as qflow sets Redis (not a "
             "setting raw Celery can keep: a killed worker's messages are lost)")


def start_variant(flags: str, broker_url: str, database_url: str, folder: Path,
                  settings: dict[str, str]) -> C.Worker:
    return C.start_qflow_worker(broker_url, database_url, folder, name="variant",
                                program=[sys.executable, str(C.BENCH / "patched_qflow.py")],
                                QFLOW_BENCH_PATCH=flags, **settings)


def client(flags: str, broker_url: str, database_url: str):
    rt = C.qflow_runtime(broker_url, database_url)
    if flags and {"events", "noevents"} & set(flags.split(",")):
        rt.celery.conf.task_send_sent_event = "events" in flags.split(",")
    return rt


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--fanout", type=int, default=1000, help="fan-out size (default 1000)")
    p.add_argument("--chain", type=int, default=200, help="chain length (default 200)")
    args = p.parse_args()
    reps = C.repeats(args)
    n_fan, n_chain = args.fanout, args.chain
    from bench import raw_app
    workers: list[C.Worker] = []
    with C.servers_up() as s:
        try:
            workers.append(C.start_raw_worker(s.redis_url(1), s.redis_url(2), s.folder))
            # Raw Celery as qflow configures Redis: without ack emulation, which raw Celery
            # cannot spare (nothing else re-sends the messages a killed worker held).
            workers.append(C.start_raw_worker(s.redis_url(12), s.redis_url(13), s.folder,
                                              name="raw-noack", BENCH_ACK_EMULATION="0"))
            raws = {"raw": raw_app.make_app(s.redis_url(1), s.redis_url(2)),
                    "raw-noack": raw_app.make_app(s.redis_url(12), s.redis_url(13))}
            sides = []
            for i, (flags, kind, label, settings) in enumerate(VARIANTS):
                broker, db = s.redis_url(4 + i), s.database_url(kind)
                workers.append(start_variant(flags, broker, db, s.folder, settings))
                sides.append((f"{i}:{flags}/{kind}", label, client(flags, broker, db)))
            C.say("warm-up")
            for a in raws.values():
                raw_fanout(a, 100)
                raw_chain(a, 50)
            for _, _, rt in sides:
                C.qflow_wait(rt, rt.engine.trigger("fanout", {"n": 100}))
            fan = {key: [] for key in [*raws, *(flags for flags, _, _ in sides)]}
            chain = {key: [] for key in fan}
            for i in range(reps):
                for key, a in raws.items():
                    fan[key].append(n_fan / raw_fanout(a, n_fan))
                    chain[key].append(raw_chain(a, n_chain) * 1000 / n_chain)
                for flags, _, rt in sides:
                    t0 = time.perf_counter()
                    C.qflow_wait(rt, rt.engine.trigger("fanout", {"n": n_fan}))
                    fan[flags].append(n_fan / (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    C.qflow_wait(rt, rt.engine.trigger("chain", {"n": n_chain}))
                    chain[flags].append((time.perf_counter() - t0) * 1000 / n_chain)
                C.say(f"  run {i + 1} done (load {C.loadavg()})")
            raw_tps, raw_ms = C.median(fan["raw"]), C.median(chain["raw"])
            rows = []
            C.say(f"raw Celery: fan-out {raw_tps:.0f} tasks/s, chain {raw_ms:.2f} ms/hop")
            for flags, label, rt in [("raw-noack", RAW_NOACK, None), *sides]:
                tps, ms = C.median(fan[flags]), C.median(chain[flags])
                rows.append(dict(flags=flags, label=label, tasks_per_s=tps, ms_per_hop=ms,
                                 fanout_ratio=tps / raw_tps, chain_ratio=ms / raw_ms,
                                 runs=len(fan[flags])))
                C.say(f"{label:<55} fan-out {tps:6.0f} tasks/s ({tps / raw_tps:.2f}x raw) | "
                      f"chain {ms:5.2f} ms/hop ({ms / raw_ms:.2f}x raw)")
                if rt is not None:
                    rt.store.dispose()
        finally:
            for w in workers:
                w.stop()
    C.emit(args, "variants", {"n_fanout": n_fan, "n_chain": n_chain, "raw_tasks_per_s": raw_tps,
                              "raw_ms_per_hop": raw_ms, "rows": rows})


if __name__ == "__main__":
    main()
