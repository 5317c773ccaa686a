"""Retention under load: a fan-out's throughput without and with `qflow db prune` running.

    python bench/retention.py              # 100,000 old runs (1M task rows), fan-outs of 2,000
    python bench/retention.py --quick      # 5,000 old runs, fan-outs of 500, a couple of minutes

On private Redis and PostgreSQL servers (stock durability) with one `qflow worker -c 2`,
as bench/fanout.py's qflow side. The results DB is filled (bench/bulk.py) with copies of
a real 10-task chain: ``--runs`` ended runs created 2 to 60 days ago, plus ``--unfinished``
runs created as long ago that are still running (tasks pending). Then fan-outs are
timed: first alone, then while `qflow db prune --older-than 1d` runs in another process
(fan-outs are repeated until the prune ends), then alone again. Printed: the fan-out
throughput of each phase and the ratio with prune to without (the target: a drop of
less than 20%), how long the prune took, the database size (pg_database_size) before the
prune, after it, after VACUUM and after VACUUM FULL, and whether the unfinished runs'
rows (runs, tasks, attempts, edges) are byte for byte what they were.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bulk  # noqa: E402
from bench import common as C  # noqa: E402
from bench.fanout import qflow_fanout  # noqa: E402

# A digest of every row of the unfinished runs: equal before and after means untouched.
UNFINISHED_DIGEST = """
SELECT (SELECT count(*) FROM qflow_runs WHERE state = 'running' AND created_at < :cutoff),
       md5(coalesce((SELECT string_agg(r::text, '|' ORDER BY r.id) FROM qflow_runs r
                     WHERE r.state = 'running' AND r.created_at < :cutoff), '')
        || coalesce((SELECT string_agg(t::text, '|' ORDER BY t.id) FROM qflow_tasks t
                     JOIN qflow_runs r ON r.id = t.run_id
                     WHERE r.state = 'running' AND r.created_at < :cutoff), '')
        || coalesce((SELECT string_agg(a::text, '|' ORDER BY a.id) FROM qflow_attempts a
                     JOIN qflow_tasks t ON t.id = a.task_id JOIN qflow_runs r ON r.id = t.run_id
                     WHERE r.state = 'running' AND r.created_at < :cutoff), '')
        || coalesce((SELECT string_agg(e::text, '|' ORDER BY e.run_id, e.parent, e.child)
                     FROM qflow_edges e JOIN qflow_runs r ON r.id = e.run_id
                     WHERE r.state = 'running' AND r.created_at < :cutoff), ''))
"""

# `qflow db prune --older-than 1d` at another pace (--batch, --pause): what the command
# runs, with other arguments (0 or -1: the command's own).
PRUNE_AT_PACE = """
import datetime as dt, sys
from qflow.config import load_config
from qflow.engine import upkeep
from qflow.runtime import Runtime
from qflow.store.transitions import utcnow
batch, pause = int(sys.argv[1]) or upkeep.PRUNE_BATCH, float(sys.argv[2])
rt = Runtime(load_config())
n = upkeep.prune(rt.config, rt.ready_store(), utcnow() - dt.timedelta(days=1), batch,
                 pause=upkeep.PRUNE_PAUSE if pause < 0 else pause)
print(f"deleted {n} run(s) (batch {batch}, pause {pause})")
"""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def unfinished(store, cutoff: dt.datetime) -> tuple[int, str]:
    from sqlalchemy import text
    with store.read() as conn:
        return tuple(conn.execute(text(UNFINISHED_DIGEST), {"cutoff": cutoff}).one())


def sizes(store) -> int:
    with store.read() as conn:
        return bulk.database_size(conn)


def vacuum(store, full: bool) -> int:
    from sqlalchemy import text
    with store.write(autocommit=True) as conn:
        conn.execute(text("VACUUM FULL" if full else "VACUUM"))
    return sizes(store)


def fanouts(rt, n: int, count: int) -> list[float]:
    """``count`` fan-outs of ``n`` one after the other: tasks/s of each."""
    return [n / qflow_fanout(rt, n)[0] for _ in range(count)]


def with_prune(rt, n: int, argv: list[str], env: dict, interleave: bool = False) -> dict:
    """Fan-outs of ``n`` while the prune process runs (at least one); how long the prune
    took, how much of the fan-outs' time it overlapped, and what it printed.

    ``interleave``: after each such fan-out, one more with the prune process stopped
    (SIGSTOP, then SIGCONT): pairs measured a minute apart, so that what other processes
    do to the machine meanwhile weighs on both sides alike."""
    ended: dict[str, float] = {}
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=C.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out: list[str] = []

    def wait() -> None:
        out.append(proc.communicate()[0].strip())
        ended["at"] = time.monotonic()
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    spans, rates, stopped = [], [], []
    while not spans or "at" not in ended:
        start = time.monotonic()
        rates.append(n / qflow_fanout(rt, n)[0])
        spans.append((start, time.monotonic()))
        if interleave and "at" not in ended:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGSTOP)
            stopped.append(n / qflow_fanout(rt, n)[0])
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
    waiter.join()
    if proc.returncode != 0:
        raise RuntimeError(f"qflow db prune failed (exit {proc.returncode}):\n{out[0]}")
    busy = sum(e - s for s, e in spans)
    overlap = sum(max(0.0, min(e, ended["at"]) - s) for s, e in spans)
    return {"rates": rates, "stopped": stopped, "prune_output": out[0],
            "prune_seconds": ended["at"] - started, "overlap": overlap / busy}


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None,
                   help="old ended runs to generate (default 100,000; 5,000 with --quick)")
    p.add_argument("--unfinished", type=int, default=100,
                   help="old runs still running, which the prune must not touch")
    p.add_argument("--n", type=int, default=None,
                   help="tasks per fan-out (default 2,000; 500 with --quick)")
    p.add_argument("--interleave", action="store_true",
                   help="between fan-outs while pruning, one with the prune stopped")
    p.add_argument("--batch", type=int, default=None,
                   help="prune with this batch size (task rows) instead of the CLI's")
    p.add_argument("--pause", type=float, default=None,
                   help="prune pausing this many times as long as each batch took "
                        "instead of the CLI's pace")
    args = p.parse_args()
    n_runs = args.runs or (5_000 if args.quick else 100_000)
    n = args.n or (500 if args.quick else 2_000)
    reps = C.repeats(args)
    now = utcnow()
    old_cut = now - dt.timedelta(days=1)
    with C.servers_up() as s:
        url = s.database_url("pg")
        worker = C.start_qflow_worker(s.redis_url(0), url, s.folder)
        rt = C.qflow_runtime(s.redis_url(0), url)
        try:
            template = rt.engine.trigger("chain", {"n": 10})
            C.qflow_wait(rt, template)
            qflow_fanout(rt, 100)                                   # warm-up
            C.say(f"filling {n_runs:,} ended runs and {args.unfinished} unfinished ones, "
                  f"10 tasks each, created 2 to 60 days ago (load {C.loadavg()})")
            t0 = time.perf_counter()
            with bulk.bare_tables(rt.store, C.say):
                bulk.fill(rt.store, template, n_runs, now - dt.timedelta(days=2),
                          now - dt.timedelta(days=60), C.say, label="ended")
                bulk.fill(rt.store, template, args.unfinished, now - dt.timedelta(days=2),
                          now - dt.timedelta(days=60), C.say, run_state="running",
                          task_state="pending", label="unfinished")
            with rt.store.read() as conn:
                rows = bulk.table_rows(conn)
            C.say(f"  filled in {time.perf_counter() - t0:.0f} s: {rows}")
            before = unfinished(rt.store, old_cut)
            size_before = sizes(rt.store)
            base = fanouts(rt, n, reps)
            C.say(f"fan-out of {n} alone: {', '.join(f'{r:.0f}' for r in base)} tasks/s "
                  f"(load {C.loadavg()})")
            argv = [C.qflow_bin(), "db", "prune", "--older-than", "1d"]
            if args.batch is not None or args.pause is not None:
                argv = [sys.executable, "-c", PRUNE_AT_PACE, str(args.batch or 0),
                        str(-1 if args.pause is None else args.pause)]
                C.say(f"pruning at batch {args.batch or 'default'}, pause "
                      f"{'default' if args.pause is None else args.pause}")
            env = C._clean_env(QFLOW_DATABASE_URL=url, QFLOW_BROKER_URL=s.redis_url(0))
            pruning = with_prune(rt, n, argv, env, args.interleave)
            if pruning["stopped"]:
                C.say(f"fan-out of {n} with the prune stopped, between those: "
                      f"{', '.join(f'{r:.0f}' for r in pruning['stopped'])} tasks/s")
            C.say(f"fan-out of {n} while pruning: "
                  f"{', '.join(f'{r:.0f}' for r in pruning['rates'])} tasks/s; the prune "
                  f"ran during {pruning['overlap']:.0%} of the fan-outs' time "
                  f"(load {C.loadavg()})")
            C.say(f"  prune: {pruning['prune_output']} in {pruning['prune_seconds']:.1f} s")
            after = fanouts(rt, n, reps)
            C.say(f"fan-out of {n} alone again: {', '.join(f'{r:.0f}' for r in after)} tasks/s")
            size_pruned = sizes(rt.store)
            size_vacuum = vacuum(rt.store, full=False)
            size_full = vacuum(rt.store, full=True)
            kept = unfinished(rt.store, old_cut)
            with rt.store.read() as conn:
                rows_after = bulk.table_rows(conn)
        finally:
            rt.store.dispose()
            worker.stop()
    alone, during = C.median(base), C.median(pruning["rates"])
    ratio = during / alone
    C.say(f"\nthroughput while pruning / alone: {during:.0f} / {alone:.0f} tasks/s = "
          f"{ratio:.2f} (a drop of {1 - ratio:.0%}; target: under 20%)")
    if pruning["stopped"]:
        # The last fan-out while pruning may have no stopped one after it: left out.
        paired = C.median([a / b for a, b in zip(pruning["rates"], pruning["stopped"],
                                                 strict=False)])
        C.say(f"paired with the fan-out right after it, prune stopped: median ratio "
              f"{paired:.2f} (a drop of {1 - paired:.0%})")
    C.say(f"database: {bulk.mib(size_before)} before the prune, {bulk.mib(size_pruned)} after "
          f"it, {bulk.mib(size_vacuum)} after VACUUM, {bulk.mib(size_full)} after VACUUM FULL")
    C.say(f"rows left: {rows_after}")
    same = before == kept
    C.say(f"unfinished old runs: {before[0]} before, {kept[0]} after; their rows "
          f"{'unchanged' if same else 'CHANGED'}")
    C.emit(args, "retention", {
        "runs": n_runs, "unfinished": args.unfinished, "n": n, "rows": rows,
        "rows_after": rows_after, "alone_tasks_per_s": base, "pruning": pruning,
        "after_tasks_per_s": after, "ratio": ratio, "sizes": {
            "before": size_before, "pruned": size_pruned, "vacuum": size_vacuum,
            "vacuum_full": size_full}, "unfinished_unchanged": same,
        "load_after": C.loadavg(), "machine": C.machine()})
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
