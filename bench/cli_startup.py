"""CLI start-up: how long `qflow --help`, `qflow status RUN` (and --json) and `qflow runs` take.

    python bench/cli_startup.py                # 30 runs of each command
    python bench/cli_startup.py --repeat 100
    python bench/cli_startup.py --quick        # 5 runs of each

Each command runs as a fresh process, as a user runs it (the `qflow` script installed
beside this Python), against a SQLite results DB in a temporary folder that holds one
finished run of bench_flows.diamond (made first with `qflow run`). Reported: median and
90th percentile wall-clock seconds, the median CPU seconds (user + system), and the
machine's load average, since a busy machine shifts every figure. Python's own start-up
is measured the same way for reference.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def timings(argv: list[str], cwd: Path, env: dict[str, str], runs: int
            ) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) seconds of ``runs`` fresh runs of ``argv``; each
    must exit 0. On a busy machine the CPU time is the steadier figure."""
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return wall, cpu


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def one_run(folder: Path, env: dict[str, str]) -> str:
    """Record one finished run in the folder's SQLite DB; its id."""
    done = subprocess.run([C.qflow_bin(), "-A", str(C.FLOWS), "run", "diamond"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"qflow run diamond failed: {done.stderr}")
    return done.stdout.split()[1]


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile qflow's modules from source on every run")
    args = parser.parse_args()
    runs = args.repeat or (5 if args.quick else 30)
    with tempfile.TemporaryDirectory(prefix="qflow-cli-startup-") as tmp:
        folder = Path(tmp)
        env = C._clean_env(QFLOW_DATABASE_URL=f"sqlite:///{folder / 'qflow.db'}")
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        run_id = one_run(folder, env)
        qflow = C.qflow_bin()
        cases = {"python -c pass": [sys.executable, "-c", "pass"],
                 "qflow --help": [qflow, "--help"],
                 "qflow status RUN": [qflow, "status", run_id],
                 "qflow status --json": [qflow, "status", run_id, "--json"],
                 "qflow runs": [qflow, "runs"]}
        for argv in cases.values():            # bytecode written, files in the page cache
            timings(argv, folder, env, 1)
        C.say(f"{runs} runs each{' (no bytecode cache)' if args.no_bytecode else ''}; "
              f"load average {C.loadavg()}")
        C.say(f"{'command':20} {'median s':>9} {'p90 s':>9} {'CPU median s':>13}")
        figures = {}
        for name, argv in cases.items():
            wall, cpu = timings(argv, folder, env, runs)
            figures[name] = {"median": statistics.median(wall), "p90": p90(wall),
                             "cpu_median": statistics.median(cpu), "runs": runs}
            row = figures[name]
            C.say(f"{name:20} {row['median']:9.3f} {row['p90']:9.3f} {row['cpu_median']:13.3f}")
        C.say(f"load average after: {C.loadavg()}")
    C.emit(args, "cli_startup", {"commands": figures, "bytecode_cache": not args.no_bytecode})


if __name__ == "__main__":
    main()
