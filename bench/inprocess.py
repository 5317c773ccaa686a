"""qflow's own cost per task, without Celery: the engine drives a run by itself.

    python bench/inprocess.py                  # fan-out of 2,000 and chain of 300
    python bench/inprocess.py --quick          # fan-out of 500 and chain of 100, one run
    python bench/inprocess.py --against 1b9f1fe   # and, first, qflow as of that commit

One process triggers a workflow (bench/bench_flows.py) on a private PostgreSQL with stock
durability and executes every published task itself, in order, through
``Engine.execute`` (claim, read inputs, run the no-op, record the outcome, release the
children, count the run), with a dispatcher that only queues the messages in memory. No
broker, no worker processes: what is left is qflow's bookkeeping. For each case it prints
the wall time and the CPU time (this process, and the PostgreSQL server's processes) per
task, and the statements a task sends (SQLAlchemy's cursor executions, BEGIN/COMMIT not
included).
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


class QueueDispatcher:
    """Keeps published messages in a list, for the loop below to execute."""

    def __init__(self):
        self.queue: collections.deque = collections.deque()

    def publish(self, items) -> None:
        self.queue.extend(items)

    def check(self) -> None:
        pass

    def revoke(self, celery_ids) -> None:
        pass

    def waiting(self, queue) -> None:
        return None


def measure(engine, pg, workflow: str, n: int, statements: collections.Counter) -> dict:
    """Trigger one run and execute all its tasks here; figures per task."""
    run_id = engine.trigger(workflow, {"n": n})
    queue = engine.dispatcher.queue
    statements.clear()
    wall, cpu, pg_cpu = time.perf_counter(), time.process_time(), C.cpu_seconds(pg.pids())
    done, executor = 0, _executor(engine)
    while queue:
        item = queue.popleft()
        executor.execute(item.run_id, item.node, item.attempt, worker="bench")
        done += 1
    figures = {"wall_ms": (time.perf_counter() - wall) * 1000 / done,
               "cpu_ms": (time.process_time() - cpu) * 1000 / done,
               "pg_cpu_ms": (C.cpu_seconds(pg.pids()) - pg_cpu) * 1000 / done,
               "statements": sum(statements.values()) / done}
    with engine.store.read() as conn:
        from qflow.store import read
        state = read.get_run(conn, run_id, with_tasks=False)["state"]
    assert state == "succeeded" and done == n, (state, done)
    return figures


def _engine_class():
    """The Engine, where the measured snapshot keeps it (qflow/engine.py before the
    restructure, qflow/engine/client.py since)."""
    try:
        from qflow.engine.client import Engine
    except ModuleNotFoundError:
        from qflow.engine import Engine
    return Engine


def _executor(engine):
    """What executes a task: an Executor since the restructure, the Engine before it."""
    try:
        from qflow.engine.executor import Executor
    except ModuleNotFoundError:
        return engine
    return Executor(engine)


def against(rev: str, args) -> list[dict]:
    """The same cases measured on qflow as of ``rev``, in a process of its own."""
    folder = Path(tempfile.mkdtemp(prefix="qflow-inprocess-"))
    try:
        src, sha = C.extract(rev, folder)
        out = folder / "rows.json"
        argv = [sys.executable, __file__, "--json", str(out), "--repeat", str(C.repeats(args))]
        for flag in ("fanout", "chain"):
            if getattr(args, flag):
                argv += [f"--{flag}", str(getattr(args, flag))]
        if args.quick:
            argv.append("--quick")
        env = dict(os.environ, QFLOW_BENCH_SNAPSHOT=src, QFLOW_BENCH_REV=sha)
        subprocess.run(argv, check=True, env=env)
        return json.loads(out.read_text())["rows"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--fanout", type=int, default=None, help="fan-out size (default 2000)")
    p.add_argument("--chain", type=int, default=None, help="chain length (default 300)")
    p.add_argument("--against", metavar="REV", default=None,
                   help="also measure qflow as of this git revision (run first)")
    p.add_argument("--durable-claims", action="store_true",
                   help="claims wait for the disk (the durable_claims setting)")
    args = p.parse_args()
    rows = against(args.against, args) if args.against else []
    cases = [("fanout", args.fanout or (500 if args.quick else 2000)),
             ("chain", args.chain or (100 if args.quick else 300))]
    from sqlalchemy import event
    from sqlalchemy.engine import Engine as SAEngine

    from qflow.config import Config
    from qflow.loader import load_app
    from qflow.store import Store

    statements: collections.Counter = collections.Counter()
    event.listen(SAEngine, "before_cursor_execute",
                 lambda conn, cursor, stmt, *_: statements.update([stmt.split()[0]]))
    rev = os.environ.get("QFLOW_BENCH_REV") or "this checkout"
    with C.servers_up(redis=False) as s:
        url = s.database_url("pg")
        load_app(str(C.FLOWS))
        store = Store(url, retry_seconds=60)          # as in a worker: no pre-ping
        extra = {"durable_claims": True} if args.durable_claims else {}  # unknown before
        config = Config(database_url=url, app=str(C.FLOWS), **extra)
        engine = _engine_class()(config, store, QueueDispatcher())
        try:
            for workflow, n in cases:
                measure(engine, s.pg, workflow, min(n, 100), statements)      # warm-up
                runs = [measure(engine, s.pg, workflow, n, statements)
                        for _ in range(C.repeats(args))]
                row = {"rev": rev, "case": workflow, "n": n, "runs": len(runs),
                       **{k: C.median([r[k] for r in runs]) for k in runs[0]}}
                rows.append(row)
                row["durable_claims"] = args.durable_claims
                C.say(f"in-process {workflow} of {n} at {rev}"
                      f"{' (durable claims)' if args.durable_claims else ''}: "
                      f"{row['wall_ms']:.2f} ms/task wall, "
                      f"{row['cpu_ms']:.2f} ms CPU here + {row['pg_cpu_ms']:.2f} ms PostgreSQL, "
                      f"{row['statements']:.1f} statements/task [median of {len(runs)}; "
                      f"load {C.loadavg()}]")
        finally:
            store.dispose()
    C.emit(args, "inprocess", {"rows": rows})


if __name__ == "__main__":
    main()
