"""Where qflow's time goes, for the fan-out, chain and many-diamonds cases (Redis +
PostgreSQL).

    python bench/profile.py               # fan-out of 2,000, chain of 300, 500 diamonds
    python bench/profile.py --quick       # fan-out of 500, chain of 100, 100 diamonds
    python bench/profile.py --cases diamonds    # only the many small runs

For each case it records, on a PostgreSQL server with pg_stat_statements loaded:
- the SQL statements and transactions per task (pg_stat_statements, pg_stat_database),
  including the client's own polling while it waits;
- the Redis commands per task, for qflow and for the same case on raw Celery
  (INFO commandstats, reset before each side);
- a py-spy sampling profile of the qflow worker and its pool processes (wall-clock, idle
  included), broken down by what each pool process was doing inside a task;
- how the trigger splits into validate+expand, commit and publish (fan-out);
- the chain once more on a database with synchronous_commit=off: the share of a hop spent
  waiting for the WAL flush.
Needs py-spy (`pip install py-spy`) for the sampling part; without it the rest still runs.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

# In-task time, by the first rule whose frame appears in the sample's stack.
CATEGORIES = [
    ("connection checkout + pre-ping", ("_ConnectionFairy._checkout", "Pool.connect")),
    ("COMMIT", ("Transaction.commit", "RootTransaction._do_commit")),
    ("BEGIN", ("Connection.begin", "_begin_impl", "Connection._autobegin")),
    ("attempts.claim statements", ("claim (qflow/store/attempts.py",)),
    ("attempts.finish statements (outcome, attempt, workflow)",
     ("finish (qflow/store/attempts.py",)),
    ("read inputs (transitions.read_inputs)", ("read_inputs (qflow/store/transitions.py",)),
    ("the task function itself", ("call_with_timeout (qflow/worker/timeouts.py",)),
    ("output capture", ("qflow/worker/capture.py",)),
    ("publish released tasks", ("CeleryDispatcher.publish",)),
    ("alerts", ("qflow/engine/alerts.py",)),
]
# Sub-split of attempts.finish: the outcome statement, the children, the extra run counts.
FINISH_PARTS = [("_end_attempt: outcome + attempt row + run count",
                 "_end_attempt (qflow/store/attempts.py"),
                ("cascade: count and release children", "cascade (qflow/store/lifecycle.py"),
                ("count_ended: tasks ended on the way", "count_ended (qflow/store/lifecycle.py"),
                ("runinfo.of: SELECT the run's workflow", "of (qflow/store/runinfo.py")]
WAITING = ("Connection.wait (psycopg", "_read_from_socket", "wait_c", "select.select",
           "_epoll.poll", "PGconn", "wait (psycopg")


def _frame(f: str) -> str:
    return re.sub(r":\d+\)$", ")", f)


MAIN_PARTS = [("publishing task events (worker_send_task_events)", ("EventDispatcher",)),
              ("handing results back from the pool", ("ResultHandler", "on_result_readable")),
              ("receiving messages, passing them to the pool", ("on_task_received", "Request",
                                                                "_brpop_read", "on_readable",
                                                                "basic_consume", "_deliver",
                                                                "AsynPool", "send_job")),
              ("acknowledging messages", ("basic_ack", "Message.ack"))]
IDLE_LEAVES = ("_epoll.poll", "Condition.wait", "select", "sleep", "poll (kombu", "Event.wait")


def _first_part(parts, frames: list[str]) -> str | None:
    """The name of the first of ``parts`` (name, frame keys) one of whose keys is in a
    frame of the sample."""
    return next((name for name, keys in parts
                 if any(k in f for f in frames for k in keys)), None)


def analyse_spy(path: Path) -> dict:
    """Pool-process samples: in task (by category, waiting vs running) or not; the
    worker's main thread (the consumer loop): busy with what."""
    pool_total = 0
    main_total = 0
    main_busy = collections.Counter()
    out_of_task = collections.Counter()
    cats = collections.Counter()
    waits = collections.Counter()
    finish_parts = collections.Counter()
    in_task = 0
    leaf_lines = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        if len(procs) < 2:                  # the worker's main process
            if any("WorkController.start" in f for f in frames):
                main_total += n
                leaf = frames[-1]
                if not any(k in leaf for k in IDLE_LEAVES):
                    main_busy[_first_part(MAIN_PARTS, frames)
                              or "other consumer-loop work"] += n
            continue
        pool_total += n
        if not any("execute (qflow/broker/app.py" in f for f in frames):
            if any("trace_task" in f for f in frames):
                out_of_task["Celery around the task (trace, ack, result)"] += n
            else:
                out_of_task["waiting for a message / pool plumbing"] += n
            continue
        in_task += n
        waiting = any(frames[-1].startswith(w) or w in frames[-1] for w in WAITING)
        store = [f for f in frames if "(qflow/store/" in f]
        name = _first_part(CATEGORIES, frames)
        if name is None:
            ops_frames = [f for f in store if "qflow/store/db.py" not in f]
            name = (f"qflow store: {_frame(ops_frames[0]).split(' (')[0]}" if ops_frames
                    else "other qflow/Celery code in the task")
        cats[name] += n
        if waiting:
            waits[name] += n
        if name.startswith("attempts.finish"):
            for part, key in FINISH_PARTS:
                if any(key in f for f in frames):
                    finish_parts[part] += n
                    break
        if store:            # which store function (and which of its callees) it is in
            ops_frames = [f for f in store if "qflow/store/db.py" not in f]
            key = " > ".join(_frame(f).split(" (")[0] for f in ops_frames[:2]) if ops_frames \
                else _frame(store[-1]).split(" (")[0]
            leaf_lines[key] += n
    return {
        "pool_samples": pool_total, "in_task_samples": in_task,
        "out_of_task": dict(out_of_task),
        "categories": [(k, v, waits.get(k, 0)) for k, v in cats.most_common()],
        "finish_parts": dict(finish_parts),
        "deepest_qflow_lines": leaf_lines.most_common(15),
        "main_samples": main_total, "main_busy": dict(main_busy.most_common()),
    }


def redis_stats(url: str) -> dict[str, int]:
    import redis
    r = redis.Redis.from_url(url)
    stats = {k.replace("cmdstat_", ""): v["calls"] for k, v in r.info("commandstats").items()}
    r.close()
    return stats


def redis_reset(url: str) -> None:
    import redis
    r = redis.Redis.from_url(url)
    r.config_resetstat()
    r.close()


def pg_reset(admin_url: str, database_url: str) -> dict:
    """Reset pg_stat_statements; return the DB's transaction counters to subtract."""
    import sqlalchemy as sa
    eng = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_statements_reset()"))
    eng.dispose()
    return pg_stats(admin_url, database_url)


def pg_stats(admin_url: str, database_url: str, before: dict | None = None) -> dict:
    import sqlalchemy as sa
    dbname = sa.engine.make_url(database_url).database
    eng = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    time.sleep(0.6)            # the stats collector reports every 500 ms
    with eng.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :db "
            "ORDER BY s.calls DESC"), {"db": dbname}).all()
        db = conn.execute(sa.text(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = :db"),
            {"db": dbname}).one()
    eng.dispose()
    before = before or {"xact_commit": 0, "xact_rollback": 0}
    return {"statements": [(q, c, t) for q, c, t in rows],
            "xact_commit": db.xact_commit - before["xact_commit"],
            "xact_rollback": db.xact_rollback - before["xact_rollback"]}


def _short(sql: str) -> str:
    sql = " ".join(sql.split())
    sql = re.sub(r"\(\$\d+(, \$\d+)*\)", "(…)", sql)
    sql = re.sub(r"qflow_(\w+)\.", "", sql)
    return sql[:110] + ("…" if len(sql) > 110 else "")


def classify_sql(sql: str) -> str:
    """Who sent a statement: the workers per task, the client, or the maintenance thread."""
    s = " ".join(sql.split())
    if s.startswith("SELECT qflow_runs.id, qflow_runs.workflow, qflow_runs.state, "
                    "qflow_runs.params"):
        return "client"            # Engine.wait polling the run row
    if s.startswith(("INSERT INTO qflow_runs ", "INSERT INTO qflow_tasks ",
                     "INSERT INTO qflow_edges ")):
        return "client"            # Engine.trigger writing the run
    if "qflow_workers" in s or "unsent" in s:
        return "maintenance"       # heartbeat, sweeper, reconciler
    return "worker"


def spy_start(pid: int, out: Path) -> subprocess.Popen | None:
    spy = shutil.which("py-spy")
    if spy is None:
        C.say("  (py-spy not installed: pip install py-spy; skipping the sampling profile)")
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--idle",
                             "--rate", "200", "--nonblocking", "--format", "raw", "-o",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def spy_stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_case(name: str, n: int, s, rt, app, qworker, qurl: str, admin_url: str,
             folder: Path) -> dict:
    from celery import chain, group
    noop = app.tasks["bench.noop"]
    engine = rt.engine
    result: dict = {"case": name, "n": n}
    # -- qflow, profiled
    pg_before = pg_reset(admin_url, qurl)
    redis_reset(s.redis_url(0))
    spy_out = folder / f"spy-{name}.txt"
    spy = spy_start(qworker.proc.pid, spy_out)
    time.sleep(1.0)                                  # let py-spy attach
    t0 = time.perf_counter()
    if name == "fanout":
        wdef = engine.workflow("fanout")
        values = wdef.resolve_params({"n": n})
        graph = wdef.expand(values)
        t1 = time.perf_counter()
        engine.dispatcher.check()
        import uuid

        from qflow.store import lifecycle
        from qflow.store.lifecycle import NewRun
        run_id = uuid.uuid4().hex
        roots = engine.store.transact(lifecycle.insert_run,
                                      NewRun(run_id, graph, values)).to_publish
        t2 = time.perf_counter()
        engine.publish(roots)
        t3 = time.perf_counter()
        result["trigger"] = {"validate_expand_s": t1 - t0, "commit_s": t2 - t1,
                             "publish_s": t3 - t2}
    elif name == "diamonds":             # n tasks: n / 4 runs of a -> b, c -> d
        ids = [engine.trigger("diamond", {"x": 1}) for _ in range(n // 4)]
    else:
        run_id = engine.trigger("chain", {"n": n})
    ended = [C.qflow_wait(rt, one) for one in (ids if name == "diamonds" else [run_id])]
    seconds = time.perf_counter() - t0
    spy_stop(spy)
    assert all(run["state"] == "succeeded" for run in ended), ended[:3]
    result["qflow_seconds"] = seconds
    result["pg"] = pg_stats(admin_url, qurl, pg_before)
    if name == "chain":
        result["hop"] = hop_split(rt, run_id)
    result["redis_qflow"] = redis_stats(s.redis_url(0))
    if spy is not None and spy_out.exists():
        result["spy"] = analyse_spy(spy_out)
    # -- raw Celery, same case, Redis commands only
    redis_reset(s.redis_url(0))
    t0 = time.perf_counter()
    if name == "fanout":
        res = group(noop.s(i) for i in range(n)).apply_async()
        C.raw_get(res)
    elif name == "diamonds":
        add = app.tasks["bench.add"]
        for res in [chain(noop.s(1), group(noop.s(), noop.s()), add.s()).apply_async()
                    for _ in range(n // 4)]:
            C.raw_get(res, follow_parents=False)
    else:
        C.raw_get(chain(noop.s(0), *[noop.s() for _ in range(n - 1)]).apply_async(),
                  follow_parents=False)
    result["raw_seconds"] = time.perf_counter() - t0
    result["redis_raw"] = redis_stats(s.redis_url(0))
    return result


def cpu_split(n: int, s, raw_w, q, app, rt, rounds: int) -> dict:
    """CPU seconds per task of every process involved, for a fan-out of ``n`` on each side
    (unprofiled, alternating): on this 2-core machine the processes share the cores, so
    what one spends the others cannot."""
    from celery import group
    noop = app.tasks["bench.noop"]
    sides = {"raw Celery": (raw_w, lambda: C.raw_get(group(noop.s(i) for i in range(n))
                                                     .apply_async())),
             "qflow": (q, lambda: C.qflow_wait(rt, rt.engine.trigger("fanout", {"n": n})))}
    out: dict = {side: collections.defaultdict(list) for side in sides}
    for _ in range(rounds):
        for side, (worker, go) in sides.items():
            groups = {"client (trigger or publish, then wait)": lambda: [os.getpid()],
                      "worker main process": lambda w=worker: [w.proc.pid],
                      "worker pool processes": worker.children,
                      "PostgreSQL": s.pg.pids, "Redis": s.redis.pids}
            pids = {k: f() for k, f in groups.items()}
            before = {k: C.cpu_seconds(v) for k, v in pids.items()}
            t0 = time.perf_counter()
            go()
            seconds = time.perf_counter() - t0
            for k, f in groups.items():      # PostgreSQL may have started backends
                now = sorted(set(pids[k]) | set(f()))
                out[side][k].append((C.cpu_seconds(now) - before[k]) * 1000 / n)
            out[side]["tasks/s"].append(n / seconds)
    return {side: {k: C.median(v) for k, v in parts.items()} for side, parts in out.items()}


def cpu_report(n: int, cpu: dict) -> list[str]:
    lines = [f"== CPU per task, fan-out of {n} (unprofiled, median of runs): ms of CPU per "
             "task by process"]
    parts = [k for k in next(iter(cpu.values())) if k != "tasks/s"]
    for side, figures in cpu.items():
        total = sum(figures[k] for k in parts)
        lines.append(f"  {side:<11} {figures['tasks/s']:5.0f} tasks/s; {total:5.2f} ms in all: "
                     + ", ".join(f"{k} {figures[k]:.2f}" for k in parts))
    return lines


def commit_split(n_chain: int, s, rt, aurl: str, rounds: int) -> dict:
    """The chain again, unprofiled, alternating with a second worker whose DB has
    synchronous_commit=off (its own Redis db): the share of a hop that is the WAL flush."""
    qa = C.start_qflow_worker(s.redis_url(3), aurl, s.folder, name="q-async")
    try:
        rt_a = C.qflow_runtime(s.redis_url(3), aurl)
        C.qflow_wait(rt_a, rt_a.engine.trigger("chain", {"n": 20}))
        sync_ms, async_ms = [], []
        for _ in range(rounds):
            for target, out in ((rt, sync_ms), (rt_a, async_ms)):
                t = time.perf_counter()
                C.qflow_wait(target, target.engine.trigger("chain", {"n": n_chain}))
                out.append((time.perf_counter() - t) * 1000 / n_chain)
        rt_a.store.dispose()
    finally:
        qa.stop()
    commit = {"n": n_chain, "sync_ms_per_hop": C.median(sync_ms),
              "async_ms_per_hop": C.median(async_ms)}
    commit["line"] = (f"chain of {n_chain}, unprofiled: {commit['sync_ms_per_hop']:.1f} "
                      f"ms/hop with synchronous_commit=on, {commit['async_ms_per_hop']:.1f} "
                      "ms/hop with it off")
    return commit


def hop_split(rt, run_id: str) -> dict:
    """From the task rows' own timestamps: how a hop of the chain divides between the
    time a task holds (claimed at started_at .. outcome recorded from finished_at) and
    the gap from one task's finished_at to the next one's started_at (recording the
    outcome, committing, publishing the child, the broker, the worker handing the
    message to a pool process)."""
    from sqlalchemy import select

    from qflow.store.models import tasks
    with rt.store.read() as conn:
        rows = conn.execute(select(tasks.c.started_at, tasks.c.finished_at)
                            .where(tasks.c.run_id == run_id).order_by(tasks.c.id)).all()
    inside = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in rows]
    gaps = [(b.started_at - a.finished_at).total_seconds() * 1000
            for a, b in zip(rows, rows[1:], strict=False)]
    return {"inside_ms": C.median(inside), "gap_ms": C.median(gaps)}


def report(r: dict) -> list[str]:
    n = r["n"]
    lines = []
    unit = "ms/hop" if r["case"] == "chain" else "tasks/s"
    fig = (lambda sec: f"{sec * 1000 / n:.1f} ms/hop") if r["case"] == "chain" else \
        (lambda sec: f"{n / sec:.0f} tasks/s")
    lines.append(f"== {r['case']} of {n} tasks: qflow {fig(r['qflow_seconds'])} (profiled), "
                 f"raw Celery {fig(r['raw_seconds'])} [{unit}]")
    if "trigger" in r:
        t = r["trigger"]
        lines.append(f"trigger: validate+expand {t['validate_expand_s'] * 1000:.0f} ms, "
                     f"commit rows {t['commit_s'] * 1000:.0f} ms, publish {n} messages "
                     f"{t['publish_s'] * 1000:.0f} ms ({t['publish_s'] / n * 1e6:.0f} us/message)")
    if "hop" in r:
        lines.append("a hop, from the task rows' timestamps (medians): "
                     f"{r['hop']['inside_ms']:.2f} ms "
                     "from claim to the start of recording the outcome (claim, read inputs, "
                     f"run), {r['hop']['gap_ms']:.2f} ms from there to the next task's claim "
                     "(record outcome + release child + commit, then either the same process "
                     "goes on to it or publish, broker, worker dispatch)")
    pg = r["pg"]
    by_kind = collections.Counter()
    for q, calls, _ in pg["statements"]:
        by_kind[classify_sql(q)] += calls
    lines.append(f"PostgreSQL: {by_kind['worker'] / n:.1f} statements per task from the "
                 f"workers (BEGIN/COMMIT/ROLLBACK included), {pg['xact_commit'] / n:.2f} "
                 f"commits per task (all clients); the client sent {by_kind['client']} "
                 f"(trigger and wait polling), the maintenance threads {by_kind['maintenance']}")
    lines.append("  calls/task  mean ms  statement (worker side)")
    shown = [(q, c, t) for q, c, t in pg["statements"]
             if classify_sql(q) == "worker" and c >= n * 0.05]
    for q, calls, total in shown[:16]:
        lines.append(f"  {calls / n:9.2f}  {total / calls:7.3f}  {_short(q)}")
    rq = sum(r["redis_qflow"].values())
    rr = sum(r["redis_raw"].values())
    top_q = ", ".join(f"{k} {v / n:.1f}" for k, v in
                      sorted(r["redis_qflow"].items(), key=lambda kv: -kv[1])[:6])
    top_r = ", ".join(f"{k} {v / n:.1f}" for k, v in
                      sorted(r["redis_raw"].items(), key=lambda kv: -kv[1])[:6])
    lines.append(f"Redis commands per task: qflow {rq / n:.1f} ({top_q}); raw Celery "
                 f"{rr / n:.1f} ({top_r})")
    spy = r.get("spy")
    if spy and spy["in_task_samples"]:
        tot = spy["pool_samples"]
        it = spy["in_task_samples"]
        lines.append(f"pool processes (py-spy, wall clock): {100 * it / tot:.0f}% inside qflow's "
                     "task, " + ", ".join(f"{100 * v / tot:.0f}% {k}"
                                         for k, v in spy["out_of_task"].items()))
        lines.append("  inside the task:  share  (of which waiting on the DB/socket)")
        for k, v, w in spy["categories"]:
            lines.append(f"  {100 * v / it:5.1f}%  ({100 * w / it:4.1f}%)  {k}")
        for k, v in spy["finish_parts"].items():
            lines.append(f"          of attempts.finish: {100 * v / it:5.1f}%  {k}")
        if spy["deepest_qflow_lines"]:
            lines.append("  by store function > callee: " + ", ".join(
                f"{100 * v / it:.0f}% {k}" for k, v in spy["deepest_qflow_lines"][:10]))
        if spy["main_samples"]:
            busy = sum(spy["main_busy"].values())
            lines.append("worker main thread (consumer loop): "
                         f"busy {100 * busy / spy['main_samples']:.0f}% "
                         "of the time: " + ", ".join(
                             f"{100 * v / spy['main_samples']:.0f}% {k}"
                             for k, v in spy["main_busy"].items()))
    return lines


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--fanout", type=int, default=None, help="fan-out size (default 2000)")
    p.add_argument("--chain", type=int, default=None, help="chain length (default 300)")
    p.add_argument("--diamonds", type=int, default=None,
                   help="diamond runs of four tasks each, triggered at once (default 500)")
    p.add_argument("--cases", default="fanout,chain,diamonds",
                   help="comma-separated, of fanout, chain, diamonds (default all); the "
                        "CPU split comes with fanout, the synchronous_commit one with chain")
    args = p.parse_args()
    n_fan = args.fanout or (500 if args.quick else 2000)
    n_chain = args.chain or (100 if args.quick else 300)
    n_diamonds = args.diamonds or (100 if args.quick else 500)
    sizes = {"fanout": n_fan, "chain": n_chain, "diamonds": 4 * n_diamonds}
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(sizes))
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}; choose from {', '.join(sizes)}")
    from bench import raw_app
    results = []
    lines: list[str] = []
    with C.servers_up(stat_statements=True) as s:
        admin = s.pg.url
        qurl = s.database_url("pg")
        aurl = s.database_url("pg-async")
        import sqlalchemy as sa
        eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        eng.dispose()
        # Raw Celery on the same Redis db as qflow here, so one INFO covers either side.
        raw_w = C.start_raw_worker(s.redis_url(0), s.redis_url(2), s.folder)
        q = C.start_qflow_worker(s.redis_url(0), qurl, s.folder)
        try:
            app = raw_app.make_app(s.redis_url(0), s.redis_url(2))
            rt = C.qflow_runtime(s.redis_url(0), qurl)
            C.say("warm-up")
            C.qflow_wait(rt, rt.engine.trigger("fanout", {"n": 100}))
            C.raw_get(__import__("celery").group(app.tasks["bench.noop"].s(i)
                                                 for i in range(100)).apply_async())
            for name in chosen:
                n = sizes[name]
                C.say(f"profiling {name} of {n}")
                r = run_case(name, n, s, rt, app, q, qurl, admin, s.folder)
                results.append(r)
                for line in report(r):
                    C.say(line)
                lines += report(r)
            cpu = commit = None
            if "fanout" in chosen:
                cpu = cpu_split(n_fan, s, raw_w, q, app, rt, C.repeats(args))
                lines += cpu_report(n_fan, cpu)
                for line in cpu_report(n_fan, cpu):
                    C.say(line)
            if "chain" in chosen:
                commit = commit_split(n_chain, s, rt, aurl, C.repeats(args))
                lines.append(commit["line"])
                C.say(commit["line"])
            rt.store.dispose()
        finally:
            q.stop()
            raw_w.stop()
    C.emit(args, "profile", {"cases": results, "commit": commit, "cpu": cpu, "lines": lines})


if __name__ == "__main__":
    main()
