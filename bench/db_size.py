"""Results DB size per 1,000 tasks, and the hot queries' plans and timings at N task rows.

    python bench/db_size.py                    # N = 1,000,000 task rows
    python bench/db_size.py --rows 10000000    # N = 10,000,000 (about 10 GB of disk)
    python bench/db_size.py --quick            # N = 100,000, a minute or two

On a private PostgreSQL with stock durability. First, a fan-out and a chain of 1,000
no-op tasks each run in a fresh database (this process executes every task, as
bench/inprocess.py does: no broker), and the qflow tables' pg_total_relation_size is
read before and after, and again after VACUUM FULL (live rows only). Then a database is
filled with N task rows (bench/bulk.py: copies of a real 10-task chain with attempts and
edges, spread over 90 days, written with the big tables' indexes and keys dropped and
fsync off, then indexes and keys built and fsync back on), ANALYZEd, and the statements
of the hot paths run on it under EXPLAIN (ANALYZE, BUFFERS): each statement is
explained just before it runs, in a transaction (or savepoint) rolled back at once, so
the plan and timing are of the statement qflow really sends, with its real parameters,
on the real data. Printed per query: the planning and execution time (median over the
samples), and the indexes the plan uses; a sequential scan on a big table would show as
``Seq Scan``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bulk  # noqa: E402
from bench import common as C  # noqa: E402
from bench.inprocess import QueueDispatcher  # noqa: E402

SAMPLES = 5         # executions of each hot path explained


class Explainer:
    """While ``label`` is set, EXPLAIN ANALYZE every statement SQLAlchemy sends, just
    before it is sent, on the same connection, and undo it (ROLLBACK or ROLLBACK TO
    SAVEPOINT): the statement then runs for real as if nothing happened."""

    def __init__(self):
        self.label: str | None = None
        self.found: dict[str, list[dict]] = defaultdict(list)

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.label is None or executemany or not statement.lstrip().upper().startswith(
                ("SELECT", "UPDATE", "INSERT", "DELETE", "WITH")):
            return
        raw = cursor.connection
        opened = raw.autocommit
        raw.execute("BEGIN" if opened else "SAVEPOINT bench_explain")
        try:
            with raw.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement,
                            parameters)
                plan = cur.fetchone()[0][0]
        finally:
            raw.execute("ROLLBACK" if opened else "ROLLBACK TO SAVEPOINT bench_explain")
            if not opened:
                raw.execute("RELEASE SAVEPOINT bench_explain")
        self.found[self.label].append({"sql": statement, "plan": plan})

    @contextlib.contextmanager
    def on(self, label: str):
        self.label = label
        try:
            yield
        finally:
            self.label = None


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


# What each hot statement is, recognised by its text (first match wins).
NAMES = [
    (r"^WITH claimed AS", "claim: task row, run row, run info (one statement)"),
    (r"^WITH outcome AS", "outcome: task row, attempt row, run counters (one statement)"),
    (r"^UPDATE qflow_tasks SET up_", "release: count the parent's end in its children"),
    (r"^UPDATE qflow_tasks SET state=.*'pending'", "release: queue the ready child"),
    (r"^SELECT qflow_tasks.node, qflow_tasks.state, qflow_tasks.result",
     "inputs: the parents' results"),
    (r"^SELECT qflow_runs.workflow, qflow_runs.params", "run info (once per run and process)"),
    (r"^UPDATE qflow_runs SET state", "run end: the run row"),
    (r"UNION ALL", "changed_since: ended since, or running"),
    (r"^SELECT qflow_runs.id, qflow_runs.workflow, qflow_runs.state, qflow_runs.created_at",
     "runs page, newest first"),
    (r"^SELECT qflow_runs.id FROM qflow_runs WHERE qflow_runs.state IN", "prune: pick the runs"),
    (r"^DELETE FROM (\w+)", "prune: delete from \\1"),
]


def what(sql: str) -> str:
    """A short name for a statement: known hot ones by name, others by kind and table."""
    s = " ".join(sql.split())
    for pattern, name in NAMES:
        found = re.search(pattern, s)
        if found:
            return found.expand(name)
    m = re.match(r"(UPDATE|INSERT INTO|DELETE FROM) (\w+)", s) or re.search(r"FROM (\w+)", s)
    return f"{m.group(0) if m else s[:40]} ..."


def summarise(found: dict[str, list[dict]]) -> list[dict]:
    """One row per (hot path, statement): median times, indexes, scans."""
    rows = []
    for label, items in found.items():
        by_sql: dict[str, list[dict]] = defaultdict(list)
        for item in items:
            by_sql[item["sql"]].append(item["plan"])
        for sql, plans in by_sql.items():
            nodes = [n for p in plans for n in plan_nodes(p["Plan"])]
            indexes = sorted({n["Index Name"] for n in nodes if "Index Name" in n})
            seq = sorted({n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"})
            rows.append({"path": label, "statement": what(sql), "samples": len(plans),
                         "planning_ms": C.median([p["Planning Time"] for p in plans]),
                         "execution_ms": C.median([p["Execution Time"] for p in plans]),
                         "indexes": indexes, "seq_scans": seq, "sql": " ".join(sql.split())})
    return rows


def drain(engine, limit: int | None = None) -> int:
    """Execute queued messages here, as a worker would (at most ``limit``)."""
    from qflow.engine.executor import Executor
    queue, executor, done = engine.dispatcher.queue, Executor(engine), 0
    while queue and (limit is None or done < limit):
        item = queue.popleft()
        executor.execute(item.run_id, item.node, item.attempt, worker="bench")
        done += 1
    return done


def new_engine(url: str):
    from qflow.config import Config
    from qflow.engine.client import Engine
    from qflow.store import Store
    store = Store(url, retry_seconds=60)          # as in a worker: no pre-ping
    return Engine(Config(database_url=url, app=str(C.FLOWS)), store, QueueDispatcher())


def size_per_1000(s, workflow: str, n: int) -> dict:
    """A run of ``n`` tasks in a fresh database: bytes per 1,000 tasks, as written and
    after VACUUM FULL, overall and per table. A small run goes first, so that the tables'
    and indexes' first pages are not counted as the measured run's."""
    url = s.database_url("pg")
    engine = new_engine(url)
    try:
        engine.trigger(workflow, {"n": 10})
        drain(engine)
        before = _full_vacuumed(engine.store)
        engine.trigger(workflow, {"n": n})
        assert drain(engine) == n
        with engine.store.read() as conn:
            written = bulk.qflow_tables_size(conn)
        live = _full_vacuumed(engine.store)
    finally:
        engine.store.dispose()

    def per_k(after: dict) -> dict:
        return {t: (after[t] - before.get(t, 0)) * 1000 / n for t in after
                if after[t] != before.get(t, 0)}
    return {"workflow": workflow, "n": n, "written": per_k(written), "live": per_k(live)}


def _full_vacuumed(store) -> dict[str, int]:
    """The qflow tables' sizes after VACUUM FULL (live rows only)."""
    from sqlalchemy import text
    with store.write(autocommit=True) as conn:
        conn.execute(text("VACUUM FULL"))
    with store.read() as conn:
        return bulk.qflow_tables_size(conn)


def hot_queries(s, rows: int, explainer: Explainer) -> dict:
    """Fill a database with ``rows`` task rows, then explain the hot paths on it."""
    from qflow.engine.upkeep import PRUNE_BATCH  # as `qflow db prune`
    from qflow.store import observe, retention
    url = s.database_url("pg")
    engine = new_engine(url)
    store = engine.store
    try:
        template = engine.trigger("chain", {"n": 10})
        drain(engine)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        copies = max(rows // 10 - 1, 1)
        C.say(f"filling {copies * 10 + 10:,} task rows ({copies + 1:,} runs of 10) ...")
        t0 = C.time.perf_counter()
        with bulk.bare_tables(store, C.say):
            bulk.fill(store, template, copies, now - dt.timedelta(minutes=1),
                      now - dt.timedelta(days=90), C.say, label="chain copies")
        fill_s = C.time.perf_counter() - t0
        with store.read() as conn:
            counts = bulk.table_rows(conn)
            size = bulk.database_size(conn)
        C.say(f"  filled in {fill_s:.0f} s: {counts}; database {bulk.mib(size)}")
        since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        chain = engine.trigger("chain", {"n": SAMPLES * 2 + 2})
        with explainer.on("chain task: claim, outcome, release its child"):
            drain(engine, SAMPLES)
        engine.dispatcher.queue.clear()         # the chain's next task stays queued
        engine.trigger("fanout", {"n": SAMPLES})
        with explainer.on("fan-out task: claim, outcome (no children)"):
            drain(engine, SAMPLES)
        for _ in range(SAMPLES):
            with store.read() as conn, explainer.on("run page: changed_since"):
                observe.changed_since(conn, chain, since)
            with store.read() as conn, explainer.on("runs list page (all, newest first)"):
                observe.runs_page(conn, limit=51)
            with store.read() as conn, explainer.on("runs list page (one workflow)"):
                observe.runs_page(conn, workflow="fanout", limit=51)
        for _ in range(SAMPLES):        # last: it deletes the oldest generated runs
            with explainer.on(f"prune: one batch of {PRUNE_BATCH:,} task rows' worth of runs "
                              "(ended > 30 days ago)"):
                store.transact(retention.delete_batch, now - dt.timedelta(days=30),
                               PRUNE_BATCH)
    finally:
        store.dispose()
    return {"task_rows": counts["qflow_tasks"], "rows": counts, "fill_seconds": fill_s,
            "database_bytes": size}


def print_sizes(case: dict) -> None:
    total_w, total_l = sum(case["written"].values()), sum(case["live"].values())
    C.say(f"{case['workflow']} of {case['n']:,}: {total_w / 1024:,.0f} KiB per 1,000 tasks as "
          f"written, {total_l / 1024:,.0f} KiB after VACUUM FULL")
    for table in sorted(case["written"], key=lambda t: -case["written"][t]):
        C.say(f"    {table:<22} {case['written'][table] / 1024:8,.1f} KiB   "
              f"{case['live'].get(table, 0) / 1024:8,.1f} KiB")


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None,
                   help="task rows to generate for the query timings (default 1,000,000; "
                        "100,000 with --quick)")
    p.add_argument("--tasks", type=int, default=1000,
                   help="tasks in the fan-out and chain whose size is measured (default 1000)")
    args = p.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine as SAEngine

    from qflow.loader import load_app
    load_app(str(C.FLOWS))
    explainer = Explainer()
    event.listen(SAEngine, "before_cursor_execute", explainer)
    C.say(f"load before: {C.loadavg()}")
    with C.servers_up(redis=False) as s:
        sizes = [size_per_1000(s, w, args.tasks) for w in ("fanout", "chain")]
        for case in sizes:
            print_sizes(case)
        filled = hot_queries(s, rows, explainer)
    queries = summarise(explainer.found)
    C.say(f"\nhot queries at {filled['task_rows']:,} task rows "
          f"({filled['rows']['qflow_runs']:,} runs, {filled['rows']['qflow_attempts']:,} "
          f"attempts; median of {SAMPLES}; load {C.loadavg()}):")
    for q in queries:
        C.say(f"  {q['path']}: {q['statement']} [{q['samples']}x]\n"
              f"      planning {q['planning_ms']:.3f} ms, execution {q['execution_ms']:.3f} ms; "
              f"indexes: {', '.join(q['indexes']) or '-'}"
              + (f"; SEQ SCAN on {', '.join(q['seq_scans'])}" if q["seq_scans"] else ""))
    C.emit(args, "db_size", {"sizes": sizes, "filled": filled, "queries": queries,
                             "load_after": C.loadavg(), "machine": C.machine()})


if __name__ == "__main__":
    main()
