"""What one trigger of a small run costs the client: SQL statements, transactions, pool
checkouts, Redis commands and CPU per ``Engine.trigger`` of the diamond (4 nodes).

    python bench/trigger_cost.py                 # 500 triggers on Redis + PostgreSQL
    python bench/trigger_cost.py --profile 25    # and the 25 costliest functions (cProfile)

No worker runs: the messages stay in Redis. Private servers as every benchmark's.
"""
from __future__ import annotations

import sys
from pathlib import Path

# This folder holds bench/profile.py, which would hide the standard library's profile
# module (cProfile imports it): the repository's root goes first instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import collections  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

from bench import common as C  # noqa: E402


class Counts:
    """SQL statements (by their first words), transactions and checkouts seen by one
    SQLAlchemy engine."""

    def __init__(self):
        self.statements: collections.Counter = collections.Counter()
        self.commits = self.checkouts = 0

    def attach(self, engine) -> None:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(conn, cursor, statement, params, context, executemany):
            self.statements[" ".join(statement.split()[:3])[:40]] += 1

        @event.listens_for(engine, "commit")
        def _commit(conn):
            self.commits += 1

        @event.listens_for(engine.pool, "checkout")
        def _checkout(*_):
            self.checkouts += 1


def redis_commands(url: str) -> dict[str, int]:
    import redis
    client = redis.Redis.from_url(url)
    out = {}
    for name, stats in client.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = stats["calls"]
    client.close()
    return out


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500, help="triggers measured (default 500)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also print the N functions with most cumulative time (cProfile)")
    p.add_argument("--sort", default="cumulative",
                   help="cProfile's order (default cumulative; tottime: own time)")
    args = p.parse_args()
    with C.servers_up() as s:
        url = s.database_url("pg")
        rt = C.qflow_runtime(s.redis_url(0), url)
        engine = rt.engine
        for _ in range(20):                         # warm: connections, caches, imports
            engine.trigger("diamond", {"x": 1})
        counts = Counts()
        counts.attach(rt.store.engine)
        before = redis_commands(s.redis_url(0))
        profiler = cProfile.Profile() if args.profile else None
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for _ in range(args.runs):
            engine.trigger("diamond", {"x": 1})
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = redis_commands(s.redis_url(0))
        n = args.runs
        C.say(f"{n} triggers of the diamond (load {C.loadavg()}): {wall / n * 1000:.2f} ms "
              f"wall, {cpu / n * 1000:.2f} ms CPU of this process per trigger"
              + (" (under cProfile)" if profiler else ""))
        C.say(f"per trigger: {sum(counts.statements.values()) / n:.2f} SQL statements, "
              f"{counts.commits / n:.2f} commits, {counts.checkouts / n:.2f} pool checkouts")
        for text, k in counts.statements.most_common():
            C.say(f"  {k / n:5.2f}  {text}")
        redis = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        redis = {k: v for k, v in redis.items() if v and k != "info"}
        C.say("Redis commands per trigger: " + ", ".join(
            f"{k} {v / n:.2f}" for k, v in sorted(redis.items())))
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.profile)
            C.say(out.getvalue())
        rt.store.dispose()


if __name__ == "__main__":
    main()
