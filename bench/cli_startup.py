"""CLI start-up: how long `qflow --help`, `qflow status RUN` (and --json) and `qflow runs` take.

    python bench/cli_startup.py                     # 30 runs of each, SQLite and PostgreSQL
    python bench/cli_startup.py --repeat 100 --db sqlite
    python bench/cli_startup.py --against HEAD~3    # that commit's qflow, run by run
    python bench/cli_startup.py --quick             # 5 runs of each

Each command runs as a fresh process, as a user runs it (the `qflow` script installed
beside this Python), against a results DB that holds one finished run of
bench_flows.diamond (made first with `qflow run`), and one made to look running (whose
status is asked with a broker set, as on a cluster): a SQLite file in a temporary folder,
and a database on a private PostgreSQL server. Reported: median and 90th percentile
wall-clock seconds, the median CPU seconds (user + system), and the machine's load
average, since a busy machine shifts every figure. Python's own start-up is measured the
same way for reference.

``--against REV`` measures qflow as of commit REV too (extracted, put first on
PYTHONPATH), alternating with this tree run by run, so that both sides see the same
load; the last column is this tree's CPU median over REV's.

Modules run from their cached bytecode, as in an installed qflow (pip compiles it at
install time): the bytecode goes to a temporary folder (PYTHONPYCACHEPREFIX), even where
PYTHONDONTWRITEBYTECODE is set, and each command runs once untimed first. With
``--no-bytecode`` every run compiles qflow's modules from source again instead, as an
editable checkout with PYTHONDONTWRITEBYTECODE set does.
"""
from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

BROKER = "redis://127.0.0.1:1/0"      # for the running run's status: never connected to


def timing(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one fresh run of ``argv``, which must
    exit 0. On a busy machine the CPU time is the steadier figure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def one_run(folder: Path, env: dict[str, str]) -> str:
    """Record one finished run in the DB of ``env``; its id."""
    for args in (["db", "upgrade"], ["-A", str(C.FLOWS), "run", "diamond"]):
        done = subprocess.run([C.qflow_bin(), *args], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"qflow {' '.join(args)} failed: {done.stderr}")
    return done.stdout.split()[1]


def running_run(folder: Path, env: dict[str, str]) -> str:
    """Record a second run of bench_flows.diamond and make it look running (its last
    task queued again), as a run that has not ended looks to `qflow status` on a cluster
    (the cases give it a broker, so its warnings read the workers' liveness); its id."""
    import sqlalchemy as sa

    run_id = one_run(folder, env)
    engine = sa.create_engine(env["QFLOW_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE qflow_runs SET state = 'running', finished_at = NULL, "
                             "tasks_left = 1 WHERE id = :r"), {"r": run_id})
        conn.execute(sa.text(
            "UPDATE qflow_tasks SET state = 'queued', started_at = NULL, finished_at = NULL "
            "WHERE id = (SELECT max(id) FROM qflow_tasks WHERE run_id = :r)"), {"r": run_id})
    engine.dispose()
    return run_id


def cases(db: str, run_id: str, running: str) -> dict[str, list[str]]:
    qflow = C.qflow_bin()
    out = {f"status RUN ({db})": [qflow, "status", run_id],
           f"status --json ({db})": [qflow, "status", run_id, "--json"],
           # A broker set (never reached): a run not ended reads the workers' liveness.
           f"status running ({db})": ["env", f"QFLOW_BROKER_URL={BROKER}", qflow, "status",
                                      running],
           f"runs ({db})": [qflow, "runs"]}
    if db == "sqlite":
        out = {"python -c pass": [sys.executable, "-c", "pass"],
               "qflow --help": [qflow, "--help"], **out}
    return out


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile qflow's modules from source on every run")
    parser.add_argument("--db", default="sqlite,pg", help="sqlite, pg or both (default)")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also measure qflow as of this commit, alternating run by run")
    args = parser.parse_args()
    runs = args.repeat or (5 if args.quick else 30)
    dbs = args.db.split(",")
    with tempfile.TemporaryDirectory(prefix="qflow-cli-startup-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        sides = {"this tree": ""}
        if args.against:
            path, sha = C.extract(args.against, folder)
            sides[sha] = path
        envs = {}
        for side, snapshot in sides.items():
            if args.no_bytecode:
                env = C._clean_env(PYTHONDONTWRITEBYTECODE="1")
            else:                       # each side's bytecode in a folder of its own
                env = C.installed_env(folder / f"side-{len(envs)}")
            env["PYTHONPATH"] = ":".join(filter(None, [snapshot, env["PYTHONPATH"]]))
            envs[side] = env
        todo: dict[str, tuple[str, list[str]]] = {}
        urls: dict[str, str] = {}
        for db in dbs:
            if db == "sqlite":
                urls[db] = f"sqlite:///{folder / 'qflow.db'}"
            else:
                server = C.start_postgres()
                stack.callback(server.stop)
                urls[db] = C.new_pg_database(server.url)
            first = {**envs["this tree"], "QFLOW_DATABASE_URL": urls[db]}
            ended, running = one_run(folder, first), running_run(folder, first)
            todo.update({name: (db, argv) for name, argv in cases(db, ended, running).items()})
        for db, argv in todo.values():          # bytecode written, files in the page cache
            for env in envs.values():
                timing(argv, folder, {**env, "QFLOW_DATABASE_URL": urls[db]})
        C.say(f"{runs} runs each{' (no bytecode cache)' if args.no_bytecode else ''}"
              f"{', alternating ' + ' / '.join(sides) if len(sides) > 1 else ''}; "
              f"load average {C.loadavg()}")
        C.say(f"{'command':22} {'side':10} {'median s':>9} {'p90 s':>9} {'CPU median s':>13}"
              f"{'  CPU ratio' if len(sides) > 1 else ''}")
        figures: dict[str, dict] = {}
        for name, (db, argv) in todo.items():
            measured = {side: ([], []) for side in sides}
            for _ in range(runs):
                for side, env in envs.items():
                    wall, cpu = timing(argv, folder, {**env, "QFLOW_DATABASE_URL": urls[db]})
                    measured[side][0].append(wall)
                    measured[side][1].append(cpu)
            for side, (wall, cpu) in measured.items():
                row = {"median": statistics.median(wall), "p90": p90(wall),
                       "cpu_median": statistics.median(cpu), "runs": runs}
                figures.setdefault(name, {})[side] = row
                ours = figures[name]["this tree"]["cpu_median"]
                ratio = (f"  {ours / row['cpu_median']:9.2f}"
                         if side != "this tree" and row["cpu_median"] else "")
                C.say(f"{name:22} {side:10} {row['median']:9.3f} {row['p90']:9.3f} "
                      f"{row['cpu_median']:13.3f}{ratio}")
        C.say(f"load average after: {C.loadavg()}")
    C.emit(args, "cli_startup", {"commands": figures, "bytecode_cache": not args.no_bytecode,
                                 "against": args.against})


if __name__ == "__main__":
    main()
