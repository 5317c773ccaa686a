"""A big map run to completion, watched while it runs: time, tasks/s, Redis' peak memory,
PostgreSQL's size, and `qflow status` and the web console answering during the run.

    python bench/big_run.py --n 1000000                  # the issue's case (issue 21)
    python bench/big_run.py --sizes 10000,100000,1000000 # and the growth between sizes
    python bench/big_run.py --quick                      # smoke test: 2,000 elements

Each size gets a fresh redis-server (so ``used_memory_peak`` is this run's), a fresh
database on one private PostgreSQL (stock durability), two `qflow worker -c 2` processes
(two worker nodes, two pool processes each: four task processes on 2 cores;
--concurrency sets -c) and `qflow web`, all with the default dispatch window. One run of
bench_flows.mapped (a map of N no-op elements; the client's max_map_size raised to N) is
triggered from this process. While it runs, this process samples every few seconds
Redis' ``INFO memory`` used_memory, the messages waiting in Redis' lists (every list
key: the queue's priority lists), the tasks done (the run row's counter) and the
workers' RSS (each worker and its pool processes). Two more threads look at the run as
a user does: one runs `qflow status RUN` (a fresh process, from cached bytecode as an
installed qflow runs; its table written to a file), the other fetches the run page's
HTML, its ``view.json`` (what the page draws the graph from), a live poll
(``changes.json``, what an open page asks every POLL_MS) and the API's run JSON, one
after the other. Each pauses after a round for at least
--look-every seconds and at least nine times the round's own time, so that each takes
no more than about a tenth of the machine's time. A round that started before the run
ended is counted whole.

Printed per size: trigger time (expand, commit, first messages), total time (trigger
called to run ended, seen by polling the run row every 0.2 s), tasks/s overall and
steady (from 10 % to 90 % of the elements done) and by tenths of the run, Redis' peak
(sampled and ``used_memory_peak``) against the issue's 100 MB, the most messages
waiting, PostgreSQL's database and table sizes, the workers' peak RSS, and median, p95
and max of each look against its budget. With several sizes, the growth exponent k
(figure proportional to N^k) of each between consecutive sizes. The load average is
printed with the figures: on a shared machine the times follow it. A run that fails, or
in which no task has ended for --stall seconds, is reported with the figures so far, its
tasks' states, a task's error and the workers' last warning, and the script exits 1.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import web_console as W  # noqa: E402
from bench.run_all import WEB_BIG_PAGE_MAX_MS, WEB_JSON_MAX_S, WEB_PAINT_MAX_MS  # noqa: E402

if C.SNAPSHOT:      # importing web_console and run_all put the checkout first on sys.path
    sys.path.insert(0, C.SNAPSHOT)

REDIS_MAX_MB = 100.0        # issue 21: Redis' peak memory (INFO) under 100 MB
# No figure for `qflow status` was found in CONTRACT.md or the repository; this one is
# assumed here (the CLI's start-up alone is 0.16-0.36 s, bench/cli_startup.py): change it
# in one place.
STATUS_MAX_S = 2.0
LOOK_SHARE = 0.1            # each looker takes at most about this share of the time
POLL_S = 0.2                # how often the run row is read to see the run end
MB = 1e6
MIB = 1024 * 1024


# -- looking at the run as a user does -----------------------------------------------
@dataclasses.dataclass
class Look:
    """One thing a user looks at, how to time it (seconds; raises if it did not answer)
    and its budget."""

    name: str
    budget_s: float
    budget_note: str
    fetch: Callable[[], float]
    seconds: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def status_look(env: dict[str, str], run_id: str, out: Path, timeout: float
                ) -> Callable[[], float]:
    """`qflow status RUN` as a fresh process; its table goes to ``out``. One that has not
    answered within ``timeout`` seconds is stopped and reported as failed."""
    argv = [C.qflow_bin(), "status", run_id]

    def fetch() -> float:
        t0 = time.perf_counter()
        with open(out, "wb") as sink:
            try:
                done = subprocess.run(argv, env=env, stdout=sink, stderr=subprocess.PIPE,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"no answer within {timeout:g} s, stopped") from None
        seconds = time.perf_counter() - t0
        if done.returncode != 0 or run_id not in out.read_text(errors="replace")[:300]:
            raise RuntimeError(f"exit {done.returncode}: "
                               f"{done.stderr.decode(errors='replace').strip()[-300:]}")
        return seconds
    return fetch


def http_look(url: Callable[[], str]) -> Callable[[], float]:
    return lambda: W.get(url())[0]


def looks_at(base: str, run_id: str, env: dict[str, str], folder: Path,
             status_timeout: float) -> list[Look]:
    from qflow.web.pages import POLL_MS

    def poll_url() -> str:          # what an open page asks: changes since its last poll
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return W._changes(base, run_id, now - dt.timedelta(milliseconds=POLL_MS))
    page = f"{base}/qflow/runs/{run_id}"
    return [
        Look("qflow status RUN", STATUS_MAX_S, "assumed, see STATUS_MAX_S",
             status_look(env, run_id, folder / "status.txt", status_timeout)),
        Look("run page HTML", WEB_PAINT_MAX_MS / 1000, "the page's first paint",
             http_look(lambda: page)),
        Look("run page view.json", WEB_BIG_PAGE_MAX_MS / 1000,
             "graph drawn, set at 100,000 tasks", http_look(lambda: page + "/view.json")),
        Look("live poll changes.json", POLL_MS / 1000, "the page's poll interval",
             http_look(poll_url)),
        Look("API run JSON", WEB_JSON_MAX_S, "set at 10,000 tasks",
             http_look(lambda: f"{base}/qflow/api/v1/runs/{run_id}")),
    ]


class Looker(threading.Thread):
    """Rounds of looks until ``done`` is set; a round that starts before then is counted
    whole (a user who looked at the status while the run went then opens the page)."""

    def __init__(self, looks: list[Look], every: float):
        super().__init__(daemon=True)
        self.looks, self.every, self.done, self.rounds = looks, every, threading.Event(), 0

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.monotonic()
            for look in self.looks:
                try:
                    look.seconds.append(look.fetch())
                except Exception as exc:  # noqa: BLE001 - reported with the figures
                    look.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self.rounds += 1
            took = time.monotonic() - t0
            self.done.wait(max(self.every, took * (1 - LOOK_SHARE) / LOOK_SHARE))


# -- sampling the machine --------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    """Resident memory of one process now (0 if it has ended)."""
    return _status_kib(pid, "VmRSS:") * 1024


def hwm_bytes(pid: int) -> int:
    """The most resident memory the process has had (Linux VmHWM)."""
    return _status_kib(pid, "VmHWM:") * 1024


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def queued_messages(client) -> int:
    """Messages waiting in Redis: the length of every list (the queues' priority lists)."""
    keys = list(client.scan_iter(count=1000, _type="list"))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return sum(pipe.execute()) if keys else 0


@dataclasses.dataclass
class Sample:
    t: float                # seconds since the trigger was called
    done: int
    redis_used: int
    queued: int
    redis_keys: int
    worker_rss: int         # every worker process and pool process, summed


def sample(t: float, done: int, client, worker_pids: list[int]) -> Sample:
    return Sample(t, done, client.info("memory")["used_memory"], queued_messages(client),
                  client.dbsize(), sum(rss_bytes(p) for p in worker_pids))


# -- one size --------------------------------------------------------------------------
def run_row(rt, run_id: str) -> dict:
    from qflow.store import read
    with rt.store.read() as conn:
        return read.get_run(conn, run_id, with_tasks=False)


def task_states(rt, run_id: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from qflow.store.models import tasks
    with rt.store.read() as conn:
        return dict(conn.execute(select(tasks.c.state, func.count())
                                 .where(tasks.c.run_id == run_id)
                                 .group_by(tasks.c.state)).all())


def last_worker_problem(folder: Path) -> str:
    """The workers' last WARNING or ERROR line (e.g. a transaction they keep retrying)."""
    lines = [line for log in sorted(folder.glob("big*.log"))
             for line in log.read_text(errors="replace").splitlines()
             if "WARNING/" in line or "ERROR/" in line]
    return f"workers' last problem: {lines[-1][:300]}" if lines else "no worker problem logged"


def first_error(rt, run_id: str) -> str:
    """One failed task's node and error, to say why a run failed."""
    from sqlalchemy import select

    from qflow.store.models import tasks
    with rt.store.read() as conn:
        row = conn.execute(select(tasks.c.node, tasks.c.error).where(
            tasks.c.run_id == run_id, tasks.c.error.is_not(None)).limit(1)).first()
    return f"{row.node}: {row.error[:300]}" if row else "no task has an error"


def dispatch_window(rt, run_id: str) -> int:
    """The run's dispatch window as the DB has it now (0: no bound)."""
    from sqlalchemy import select

    from qflow.store.models import runs
    with rt.store.read() as conn:
        return conn.execute(select(runs.c.dispatch_window).where(runs.c.id == run_id)
                            ).scalar_one()


def pg_sizes(rt) -> dict[str, int]:
    import sqlalchemy as sa
    with rt.store.read() as conn:
        row = conn.execute(sa.text(
            "SELECT pg_database_size(current_database()),"
            " pg_total_relation_size('qflow_tasks'), pg_total_relation_size('qflow_attempts'),"
            " pg_total_relation_size('qflow_edges')")).one()
    return dict(zip(("database", "qflow_tasks", "qflow_attempts", "qflow_edges"), row, strict=True))


def follow(rt, run_id: str, t0: float, client, worker_pids: list[int],
           args) -> tuple[dict, list[tuple[float, int]], list[Sample], float]:
    """Poll the run row until the run ends or no task has ended for --stall seconds,
    sampling every --sample-every seconds: (run row, every (t, done) seen, samples,
    seconds from ``t0`` to the end seen)."""
    from qflow.core.states import TERMINAL
    seen: list[tuple[float, int]] = []
    samples: list[Sample] = []
    next_sample = next_say = 0.0
    last_change = time.perf_counter()
    while True:
        run = run_row(rt, run_id)
        now = time.perf_counter()
        t = now - t0
        if not seen or run["tasks_done"] != seen[-1][1]:
            last_change = now
        seen.append((t, run["tasks_done"]))
        if run["state"] in TERMINAL or now - last_change > args.stall:
            return run, seen, samples, t
        if t >= next_sample:
            samples.append(sample(t, run["tasks_done"], client, worker_pids))
            next_sample = t + args.sample_every
        if t >= next_say:
            s = samples[-1]
            C.say(f"  {t:7.0f} s: {s.done:,}/{run['tasks_total']:,} tasks done, Redis "
                  f"{s.redis_used / MB:.1f} MB, {s.queued:,} messages waiting, workers "
                  f"{s.worker_rss / MIB:.0f} MiB; load {C.loadavg()}")
            next_say = t + args.progress_every
        time.sleep(POLL_S)


def crossing(seen: list[tuple[float, int]], count: float) -> float:
    """When the tasks done first reached ``count`` (linear between two polls)."""
    prev_t, prev_d = 0.0, 0
    for t, d in seen:
        if d >= count:
            return t if d == prev_d else prev_t + (t - prev_t) * (count - prev_d) / (d - prev_d)
        prev_t, prev_d = t, d
    return seen[-1][0]


def rates(seen: list[tuple[float, int]], total: int) -> tuple[float, list[float]]:
    """Tasks/s from 10 % to 90 % of the tasks done, and in each tenth of them."""
    marks = [crossing(seen, total * k / 10) for k in range(11)]
    marks[0] = crossing(seen, 1)           # from the first task done
    tenth = total / 10
    by_tenth = [tenth / (b - a) if b > a else float("nan") for a, b in pairwise(marks)]
    steady = total * 0.8 / (marks[9] - marks[1]) if marks[9] > marks[1] else float("nan")
    return steady, by_tenth


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "p95": float("nan"), "max": float("nan")}
    p95 = (statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1
           else values[0])
    return {"median": statistics.median(values), "p95": p95, "max": max(values)}


@dataclasses.dataclass
class Setup:
    """One size's servers and processes, as the measurement sees them."""

    rt: Any                 # the client side: triggers the run, reads its row
    client: Any             # Redis
    base: str               # qflow web's address
    env: dict[str, str]     # a user's environment for `qflow status`
    worker_pids: list[int]  # the workers and their pool processes
    web_pid: int
    folder: Path


def one_size(s: C.Servers, n: int, args) -> dict:
    """Fresh Redis, database, workers and `qflow web`; one run of N; its figures."""
    import redis
    server = C.start_redis()
    workers: list[C.Worker] = []
    web = None
    case = C.Servers(redis=server, pg=s.pg, folder=s.folder)     # this size's Redis
    try:
        t0 = time.perf_counter()
        url = case.database_url("pg")
        broker = case.redis_url(0)
        with ThreadPoolExecutor(3) as pool:         # they start side by side
            started = [pool.submit(C.start_qflow_worker, broker, url, s.folder, f"big{i}")
                       for i in (1, 2)]
            served = pool.submit(W.serve, case, url)
            workers = [f.result() for f in started]
            web, base = served.result()
        C.say(f"N={n:,}: Redis, database, two workers and qflow web up in "
              f"{time.perf_counter() - t0:.1f} s")
        rt = C.qflow_runtime(broker, url)
        # As a user would: a map wider than max_map_size (10,000 by default) is refused,
        # and its elements' results gathered into more than result_max_bytes (1 MiB) fail
        # the map (the million numbers of a 1,000,000 map are 7.9 MB): both raised to fit.
        rt.config = dataclasses.replace(
            rt.config, max_map_size=max(n, rt.config.max_map_size),
            result_max_bytes=max(16 * n, rt.config.result_max_bytes))
        setup = Setup(rt, redis.Redis.from_url(broker), base,
                      C.installed_env(s.folder, QFLOW_DATABASE_URL=url,
                                      QFLOW_BROKER_URL=broker),
                      [p for w in workers for p in C.servers.with_children(w.proc.pid)],
                      web.pid, s.folder)
        # Once untimed, as a user's command runs from an installed qflow's bytecode.
        subprocess.run([C.qflow_bin(), "status", "0" * 32], env=setup.env,
                       capture_output=True, timeout=120)
        try:
            row = measure(setup, n, args)
        finally:
            setup.rt.store.dispose()
        report(row)
        return row
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        for w in workers:               # both shut down at once
            w.proc.terminate()
        for w in workers:
            w.stop()
        server.stop()


def measure(setup: Setup, n: int, args) -> dict:
    """Trigger the map of ``n``, look at it and sample until it ends; check every task
    succeeded."""
    rt = setup.rt
    load_before = C.loadavg()
    C.say(f"N={n:,}: triggering bench_flows.mapped; load {load_before}")
    t0 = time.perf_counter()
    run_id = rt.engine.trigger("mapped", {"n": n})
    trigger_s = time.perf_counter() - t0
    C.say(f"  run {run_id} triggered in {trigger_s:.1f} s")
    looks = looks_at(setup.base, run_id, setup.env, setup.folder, args.status_timeout)
    # The status command and the console are looked at side by side, each in its share.
    lookers = [Looker(looks[:1], args.look_every), Looker(looks[1:], args.look_every)]
    for looker in lookers:
        looker.start()
    try:
        run, seen, samples, total_s = follow(rt, run_id, t0, setup.client,
                                             setup.worker_pids, args)
    finally:
        for looker in lookers:
            looker.done.set()
    load_end = C.loadavg()
    for looker in lookers:
        looker.join()
    from qflow.core.states import TERMINAL
    states = task_states(rt, run_id)
    ok = run["state"] == "succeeded" and states == {"succeeded": run["tasks_total"]} \
        and run["tasks_total"] >= n
    if ok:
        outcome = f"run succeeded, all {run['tasks_total']:,} tasks succeeded"
    else:
        ended = (f"ended {run['state']}" if run["state"] in TERMINAL else
                 f"did NOT end (no task ended for {args.stall:g} s)")
        outcome = (f"run {run_id} {ended}; its tasks: {states}; {first_error(rt, run_id)}; "
                   f"{last_worker_problem(setup.folder)}")
    steady, by_tenth = rates(seen, run["tasks_total"])
    return {"n": n, "run_id": run_id, "ok": ok, "outcome": outcome,
            "state": run["state"], "tasks_total": run["tasks_total"],
            "tasks_done": run["tasks_done"],
            "dispatch_window": dispatch_window(rt, run_id),
            "trigger_s": trigger_s, "total_s": total_s,
            "tasks_per_s": run["tasks_done"] / total_s, "steady_tasks_per_s": steady,
            "tasks_per_s_by_tenth": by_tenth,
            "redis_peak_sampled_bytes": max([x.redis_used for x in samples], default=0),
            "redis_used_memory_peak_bytes": setup.client.info("memory")["used_memory_peak"],
            "most_queued": max([x.queued for x in samples], default=0),
            "most_redis_keys": max([x.redis_keys for x in samples], default=0),
            "worker_rss_peak_bytes": max([x.worker_rss for x in samples], default=0),
            "worker_largest_hwm_bytes": max(hwm_bytes(p) for p in setup.worker_pids),
            "worker_processes": len(setup.worker_pids),
            "web_hwm_bytes": hwm_bytes(setup.web_pid), "pg": pg_sizes(rt),
            "looks": looked(looks),
            "load_before": load_before, "load_end": load_end,
            "samples": [dataclasses.asdict(x) for x in samples]}


def looked(looks: list[Look]) -> dict[str, dict]:
    return {k.name: {**spread(k.seconds), "count": len(k.seconds), "budget_s": k.budget_s,
                     "budget_note": k.budget_note, "errors": k.errors,
                     "over": sum(x > k.budget_s for x in k.seconds)} for k in looks}


def report(r: dict) -> None:
    say = C.say
    say(f"N={r['n']:,}: {r['outcome']} (load {r['load_before']} before, {r['load_end']} at "
        "the end)")
    say(f"  total {r['total_s']:.1f} s from trigger to run "
        f"{'ended' if r['ok'] else 'given up'} (trigger {r['trigger_s']:.1f} s, "
        f"{r['tasks_done']:,} tasks done): {r['tasks_per_s']:.0f} tasks/s overall, "
        f"{r['steady_tasks_per_s']:.0f} steady (10-90 %); dispatch window "
        f"{r['dispatch_window']:,}")
    say("  tasks/s by tenths of the tasks: "
        + " ".join(f"{x:.0f}" for x in r["tasks_per_s_by_tenth"]))
    peak, sampled = r["redis_used_memory_peak_bytes"], r["redis_peak_sampled_bytes"]
    met = "met" if peak < REDIS_MAX_MB * MB else "NOT met"
    say(f"  Redis: used_memory_peak {peak / MB:.1f} MB (sampled peak {sampled / MB:.1f} MB),"
        f" budget {REDIS_MAX_MB:.0f} MB: {met}; at most {r['most_queued']:,} messages "
        f"waiting, at most {r['most_redis_keys']} keys")
    pg = r["pg"]
    say(f"  PostgreSQL: database {pg['database'] / MIB:.1f} MiB, qflow_tasks "
        f"{pg['qflow_tasks'] / MIB:.1f} MiB, qflow_attempts {pg['qflow_attempts'] / MIB:.1f}"
        f" MiB, qflow_edges {pg['qflow_edges'] / MIB:.1f} MiB (with their indexes)")
    say(f"  workers: RSS peak {r['worker_rss_peak_bytes'] / MIB:.0f} MiB over "
        f"{r['worker_processes']} processes (sampled), largest process "
        f"{r['worker_largest_hwm_bytes'] / MIB:.0f} MiB (VmHWM); qflow web "
        f"{r['web_hwm_bytes'] / MIB:.0f} MiB (VmHWM)")
    say("  looks during the run (seconds):")
    for name, k in r["looks"].items():
        verdict = (f"{k['over']} of {k['count']} over" if k["count"] else "no look")
        say(f"    {name:24} median {k['median']:7.3f}  p95 {k['p95']:7.3f}  max "
            f"{k['max']:7.3f}  budget {k['budget_s']:g} ({k['budget_note']}): {verdict}"
            + (f"; {len(k['errors'])} failed: {k['errors'][0]}" if k["errors"] else ""))


GROWTH = {"total time": lambda r: r["total_s"], "trigger": lambda r: r["trigger_s"],
          "Redis peak": lambda r: r["redis_used_memory_peak_bytes"],
          "worker RSS peak": lambda r: r["worker_rss_peak_bytes"],
          "PostgreSQL database": lambda r: r["pg"]["database"]}


def growth(rows: list[dict]) -> list[dict[str, Any]]:
    """k in figure proportional to N^k between consecutive sizes (1 = linear, 0 = flat)."""
    out = []
    for a, b in pairwise(rows):
        scale = math.log(b["n"] / a["n"])
        ks = {name: math.log(get(b) / get(a)) / scale for name, get in GROWTH.items()
              if get(a) > 0 and get(b) > 0}
        out.append({"from": a["n"], "to": b["n"], **ks})
        C.say(f"growth {a['n']:,} -> {b['n']:,} (k in figure ~ N^k): "
              + ", ".join(f"{name} {k:.2f}" for name, k in ks.items()))
    return out


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", "--sizes", dest="sizes", default=None,
                   help="comma-separated map sizes (default 100000; 2000 with --quick)")
    p.add_argument("--look-every", type=float, default=None,
                   help="seconds at least between two rounds of looks (default 10; 2 quick)")
    p.add_argument("--sample-every", type=float, default=2.0,
                   help="seconds between two samples of Redis, queues and RSS (default 2)")
    p.add_argument("--progress-every", type=float, default=None,
                   help="seconds between two progress lines (default 30; 5 quick)")
    p.add_argument("--stall", type=float, default=900.0,
                   help="give up when no task has ended for this long (default 900 s)")
    p.add_argument("--status-timeout", type=float, default=1800.0,
                   help="stop a `qflow status` that has not answered in this long and count "
                        "it as failed (default 1800 s)")
    p.add_argument("--concurrency", type=int, default=C.CONCURRENCY,
                   help=f"-c of each of the two workers (default {C.CONCURRENCY})")
    args = p.parse_args()
    if (args.repeat or 1) != 1:
        raise SystemExit("--repeat: big_run.py measures one run of each size")
    C.CONCURRENCY = max(1, args.concurrency)      # start_qflow_worker's -c
    try:
        sizes = [int(x.replace("_", "")) for x in
                 (args.sizes or ("2000" if args.quick else "100000")).split(",")]
    except ValueError:
        raise SystemExit(f"--n {args.sizes!r}: expected comma-separated numbers") from None
    if not sizes or min(sizes) < 1:
        raise SystemExit("--n: sizes must be 1 or more")
    args.look_every = args.look_every or (2.0 if args.quick else 10.0)
    args.progress_every = args.progress_every or (5.0 if args.quick else 30.0)
    import qflow
    C.say(f"qflow from {Path(qflow.__file__).parent}; two `qflow worker -c {C.CONCURRENCY}` "
          f"processes, default dispatch window; load {C.loadavg()}")
    with C.servers_up(pg=True, redis=False) as s:
        rows = [one_size(s, n, args) for n in sizes]
    ended = [r for r in rows if r["ok"]]
    C.emit(args, "big_run", {"rows": rows, "growth": growth(ended), "machine": C.machine(),
                             "qflow": C.qflow_settings()["qflow_path"],
                             "workers": f"2 x qflow worker -c {C.CONCURRENCY}"})
    if len(ended) < len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
