"""The long chaos soak: ``python -m tests.chaos --minutes 10 --seed N`` (from the repo
root). Exit 0 when every promise held, 1 otherwise; the report goes to stdout."""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from .faults import KINDS
from .soak import Settings, soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long faults are injected (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2, help="runs kept unfinished at once")
    parser.add_argument("--every", type=float, default=8.0,
                        help="mean seconds between two faults (default 8)")
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--length", type=int, default=19)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds each task takes")
    parser.add_argument("--only", choices=KINDS, action="append",
                        help="inject only this kind of fault (repeatable)")
    parser.add_argument("--folder", type=Path, help="where logs and the ledger go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    window = args.minutes * 60
    settings = Settings(seed=args.seed, faults=max(1, round(window / args.every)),
                        window=window, workers=args.workers, runs=args.runs, keep_busy=True,
                        shape=dict(width=args.width, length=args.length, pause=args.pause),
                        settle=300.0, kinds=tuple(args.only or KINDS))
    folder = args.folder or Path(tempfile.mkdtemp(prefix="qflow-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"logs and ledger in {folder}", flush=True)
    report = soak(settings, folder)
    print(report.text())
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
