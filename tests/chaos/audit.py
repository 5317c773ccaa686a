"""The soak's audit: what the ledger says ran, against what the results DB recorded.

A task may run more than once only when an attempt row says why: its worker was lost
(``WorkerLost``: the soak killed that worker while the attempt ran) or a flaky link's
first attempt failed and was retried (``Flaky``).
"""
from __future__ import annotations

import bisect
import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from qflow.store.models import attempts, runs, tasks

from .chaos_flows import expected_total, size
from .faults import KILL_WORKER, Injected

RERUN_CAUSES = ("WorkerLost", "Flaky")
Ledger = dict[tuple[str, str], list[int]]


@dataclass
class Findings:
    """The audit's answer: every problem found, and the counts the soak prints."""

    runs: dict[str, str] = field(default_factory=dict)      # run id -> state
    durations: list[float] = field(default_factory=list)    # each ended run's seconds
    tasks: int = 0
    executions: int = 0                      # ledger lines: task bodies that began
    problems: list[str] = field(default_factory=list)
    reruns: Counter = field(default_factory=Counter)          # cause -> extra executions
    lost_unstarted: int = 0                  # lost attempts whose body never began
    recovery: list[tuple[Injected, float | None, float | None]] = field(default_factory=list)


def read_ledger(folder: Path) -> Ledger:
    """(run, node) -> the attempt numbers that began, in the order each process wrote."""
    out: Ledger = defaultdict(list)
    for path in sorted(folder.glob("ledger-*.log")):
        for line in path.read_text().splitlines():
            run_id, node, attempt, _pid = line.split()
            out[(run_id, node)].append(int(attempt))
    return out


def load(url: str) -> tuple[list, list, list]:
    """Every run, task and attempt row of the results DB."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return (conn.execute(sa.select(runs.c.id, runs.c.state, runs.c.params,
                                           runs.c.created_at, runs.c.finished_at)).all(),
                    conn.execute(sa.select(tasks.c.id, tasks.c.run_id, tasks.c.node,
                                           tasks.c.state, tasks.c.attempts, tasks.c.result,
                                           tasks.c.error)).all(),
                    conn.execute(sa.select(attempts.c.task_id, attempts.c.number,
                                           attempts.c.state, attempts.c.error_type,
                                           attempts.c.worker, attempts.c.started_at,
                                           attempts.c.finished_at)).all())
    finally:
        engine.dispose()


def audit(url: str, ledger: Ledger, faults: list[Injected],
          progress: list[dt.datetime]) -> Findings:
    """Check every run and task in the DB at ``url`` against the ledger; ``progress``:
    when the soak saw the count of ended tasks grow (for the recovery times)."""
    run_rows, task_rows, attempt_rows = load(url)
    found = Findings(runs={r.id: r.state for r in run_rows}, tasks=len(task_rows),
                     executions=sum(map(len, ledger.values())),
                     durations=[_seconds(r.finished_at - r.created_at) for r in run_rows
                                if r.finished_at is not None])
    by_task: dict[int, dict[int, object]] = defaultdict(dict)
    for row in attempt_rows:
        by_task[row.task_id][row.number] = row
    per_run = Counter(t.run_id for t in task_rows)
    results = {(t.run_id, t.node): t.result for t in task_rows}
    for run in run_rows:
        found.problems += _check_run(run, per_run[run.id], results)
    kills = defaultdict(list)
    for fault in faults:
        if fault.kind == KILL_WORKER:
            kills[fault.target].append(fault.began)
    for task in task_rows:
        check_task(task, ledger.get((task.run_id, task.node), []), by_task[task.id], found,
                    kills)
    known = {(t.run_id, t.node) for t in task_rows}
    found.problems += [f"{r}/{n}: in the ledger but not in the DB"
                       for r, n in sorted(set(ledger) - known)]
    found.recovery = _recovery(faults, progress, attempt_rows)
    return found


def _check_run(run, n_tasks: int, results: dict) -> list[str]:
    params = json.loads(run.params)
    width, length, group = params["width"], params["length"], params["group"]
    expected = size(width, length, group, params.get("hold", ""))
    problems = []
    if run.state != "succeeded":
        problems.append(f"run {run.id} ended {run.state}")
    if n_tasks != expected:
        problems.append(f"run {run.id} has {n_tasks} tasks, not {expected}")
    last = f"gather__{-(-width // group)}"
    value = results.get((run.id, last))
    if value is None or json.loads(value) != expected_total(width, length):
        problems.append(f"run {run.id}: {last} returned {value}, not "
                        f"{expected_total(width, length)}")
    return problems


def check_task(task, began: list[int], rows: dict[int, object], found: Findings,
                kills: dict[str, list[dt.datetime]]) -> None:
    """One task: it ended succeeded, its last attempt ran, no attempt ran twice, and every
    earlier attempt that ran has a row saying why it did not count, truly: one that says
    its worker was lost was on a worker the soak killed while it ran."""
    name = f"{task.run_id}/{task.node}"
    if task.state != "succeeded":
        found.problems.append(f"{name} ended {task.state} after {task.attempts} attempts: "
                              f"{task.error}")
    if task.attempts not in began:
        found.problems.append(f"{name}: attempt {task.attempts} (its last) never began "
                              f"(ledger: {sorted(began)})")
    for number, times in sorted(Counter(began).items()):
        if times > 1:
            found.problems.append(f"{name}: attempt {number} began {times} times; its "
                                  f"rows: {[_describe(r) for _, r in sorted(rows.items())]}")
    for number in sorted(set(began) - {task.attempts}):
        row = rows.get(number)
        cause = row.error_type if row is not None else None
        if cause not in RERUN_CAUSES:
            found.problems.append(f"{name}: attempt {number} ran and was run again, but "
                                  f"its row says {_describe(row)}")
        elif cause == "WorkerLost" and not _killed(row, kills):
            found.problems.append(f"{name}: attempt {number} ran on {row.worker}, which "
                                  f"was not killed while it ran ({row.started_at} to "
                                  f"{row.finished_at}), yet was recorded WorkerLost and "
                                  f"run again")
            cause = "WorkerLost, worker alive"
        found.reruns[cause or "no row"] += 1
    found.lost_unstarted += sum(1 for n, row in rows.items()
                                if row.error_type == "WorkerLost" and n not in began)


def _killed(row, kills: dict[str, list[dt.datetime]]) -> bool:
    """Whether the soak killed the attempt's worker while the attempt ran."""
    name = (row.worker or "").split("@")[0]
    return any(row.started_at <= at <= row.finished_at for at in kills.get(name, ()))


def _describe(row) -> str:
    if row is None:
        return "nothing (no attempt row)"
    return (f"state={row.state} error_type={row.error_type} worker={row.worker} "
            f"{row.started_at} to {row.finished_at}")


def _recovery(faults: list[Injected], progress: list[dt.datetime], attempt_rows: list
              ) -> list[tuple[Injected, float | None, float | None]]:
    """For each fault: seconds until a task was seen ending once the server was back,
    and for a killed worker the seconds until the last of its lost attempts was recorded
    (None: not seen)."""
    out = []
    for fault in faults:
        at = bisect.bisect_right(progress, fault.back)
        first = _seconds(progress[at] - fault.began) if at < len(progress) else None
        lost = None
        if fault.kind == KILL_WORKER:
            times = [r.finished_at for r in attempt_rows
                     if r.error_type == "WorkerLost" and r.finished_at is not None
                     and (r.worker or "").startswith(fault.target + "@")
                     and r.started_at is not None and r.started_at <= fault.began
                     < r.finished_at]
            lost = _seconds(max(times) - fault.began) if times else None
        out.append((fault, first, lost))
    return out


def _seconds(delta: dt.timedelta) -> float:
    return round(delta.total_seconds(), 2)
