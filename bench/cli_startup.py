"""CLI start-up: how long `qflow --help`, `qflow status RUN` and `qflow runs` take.

    python bench/cli_startup.py                # 30 runs of each command
    python bench/cli_startup.py --repeat 100
    python bench/cli_startup.py --quick        # 5 runs of each

Each command runs as a fresh process, as a user runs it (the `qflow` script installed
beside this Python), against a SQLite results DB in a temporary folder that holds one
finished run of bench_flows.diamond (made first with `qflow run`). Reported: median and
90th percentile wall-clock seconds, and the machine's load average, since a busy machine
shifts every figure. Python's own start-up is measured the same way for reference.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402


def timings(argv: list[str], cwd: Path, env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` fresh runs of ``argv``; each must exit 0."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return out


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
    args = parser.parse_args()
    runs = args.repeat or (5 if args.quick else 30)
    with tempfile.TemporaryDirectory(prefix="qflow-cli-startup-") as tmp:
        folder = Path(tmp)
        env = C._clean_env(QFLOW_DATABASE_URL=f"sqlite:///{folder / 'qflow.db'}")
        run_id = one_run(folder, env)
        qflow = C.qflow_bin()
        cases = {"python -c pass": [sys.executable, "-c", "pass"],
                 "qflow --help": [qflow, "--help"],
                 "qflow status RUN": [qflow, "status", run_id],
                 "qflow runs": [qflow, "runs"]}
        C.say(f"{runs} runs each; load average {C.loadavg()}")
        C.say(f"{'command':20} {'median s':>9} {'p90 s':>9}")
        figures = {}
        for name, argv in cases.items():
            times = timings(argv, folder, env, runs)
            figures[name] = {"median": statistics.median(times), "p90": p90(times),
                             "runs": runs}
            C.say(f"{name:20} {figures[name]['median']:9.3f} {figures[name]['p90']:9.3f}")
        C.say(f"load average after: {C.loadavg()}")
    C.emit(args, "cli_startup", {"commands": figures})


if __name__ == "__main__":
    main()
