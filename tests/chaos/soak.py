"""Drive a chaos soak: private Redis and PostgreSQL, real `qflow worker` processes, the
chaos workflow, a seeded fault schedule bounded in time, then the audit and `qflow doctor`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import servers
import sqlalchemy as sa
from conftest import start_cluster

from qflow.store.models import runs, tasks

from .audit import Findings, audit, read_ledger
from .chaos_flows import POOL, size
from .faults import KILL_WORKER, KINDS, Fault, Hands, Injected, plan, utcnow

log = logging.getLogger("qflow.chaos")
FLOWS = Path(__file__).with_name("chaos_flows.py")
# Fast liveness, so that a lost worker, a lost message and a DB outage are each
# recovered within seconds.
ENV = dict(QFLOW_HEARTBEAT_INTERVAL="1", QFLOW_WORKER_LOST_TIMEOUT="5",
           QFLOW_REQUEUE_AFTER="10", QFLOW_DB_RETRY_SECONDS="120",
           QFLOW_POOLS=f"{POOL}=3")
# After the last fault, how long the held run's other work may take before `qflow doctor`
# looks at it (requeue_after + worker_lost_timeout + slack: what a fault left behind is
# recovered by then).
SETTLE_MIDWAY = 25.0


@dataclass(frozen=True)
class Settings:
    """One soak: ``faults`` faults within ``window`` seconds on ``workers`` workers;
    ``runs`` chaos runs open at once (``keep_busy``: a new one whenever one ends, until
    the faults are over; ``hold``: each run waits for the faults to be over before it
    can end); ``shape``: the workflow's parameters."""

    seed: int = 1
    faults: int = 6
    window: float = 40.0
    workers: int = 3
    runs: int = 1
    keep_busy: bool = False
    hold: bool = False
    kinds: tuple[str, ...] = KINDS
    shape: dict = field(default_factory=dict)
    settle: float = 120.0         # how long the runs may take to end after the faults


@dataclass
class Report:
    settings: Settings
    planned: list[Fault]
    injected: list[Injected]
    open_at_fault: int                 # faults injected while a run was unfinished
    findings: Findings
    midway: tuple[int, str] | None     # `qflow doctor` while the held run was open
    doctor: tuple[int, str]            # exit status and output, after the runs ended
    exits: list[tuple[str, int]]       # workers that exited on their own (restarted)
    triggering: float                  # seconds `qflow trigger` took
    seconds: float                     # the whole soak, from the first trigger

    def failures(self) -> list[str]:
        """What breaks the soak's promises (empty when it held)."""
        out = list(self.findings.problems)
        if not self.findings.runs:
            out.append("no run was recorded")
        if self.open_at_fault < len(self.planned):
            out.append(f"only {self.open_at_fault} of {len(self.planned)} faults hit an "
                       f"unfinished run: make the workload longer or the window shorter")
        for when, (code, output) in (("with the run open", self.midway or (0, "")),
                                     ("at the end", self.doctor)):
            if code != 0:
                out.append(f"qflow doctor {when} exited {code}:\n{output}")
        return out

    def text(self) -> str:
        s, f = self.settings, self.findings
        kinds = Counter(i.kind for i in self.injected)
        states = Counter(f.runs.values())
        lines = [
            f"chaos soak: seed {s.seed}, {s.workers} workers (-c 2), {len(f.runs)} run(s) "
            f"of {size(**_shape(s.shape))} tasks",
            "faults injected: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
                                   or "none")
            + f" ({len(self.injected)} of {len(self.planned)} planned, "
              f"{self.open_at_fault} while a run was unfinished)",
            f"tasks: {f.tasks}; runs: " + ", ".join(f"{n} {k}" for k, n in states.items())
            + f"; task bodies begun (ledger): {f.executions}",
            "re-runs by cause: " + (", ".join(f"{k} {n}" for k, n in sorted(f.reruns.items()))
                                    or "none")
            + f"; lost attempts that never began: {f.lost_unstarted}",
            "recovery (seconds from the fault to the next task seen ending, once the "
            "server was back):"]
        for fault, first, lost in f.recovery:
            offset = (fault.began - self.injected[0].began).total_seconds()
            extra = f", its lost attempts recorded after {lost}" if lost is not None else ""
            lines.append(f"  +{offset:6.1f}s {fault.kind} {fault.target}: {first}{extra}")
        lines.append("workers that exited on their own (restarted, as a supervisor "
                     "would): " + (", ".join(f"{n} (exit {c})" for n, c in self.exits)
                                   or "none"))
        lines.append("qflow doctor: " + (f"exit {self.midway[0]} with the run open, "
                                         if self.midway else "")
                     + f"exit {self.doctor[0]} at the end")
        lines.append(f"total: {self.seconds:.1f} s (triggering {self.triggering:.1f} s; "
                     f"runs took {', '.join(f'{d:.1f} s' for d in f.durations) or '-'})")
        problems = self.failures()
        lines.append(f"problems: {len(problems)}" + "".join(f"\n  {p}" for p in problems[:50]))
        return "\n".join(lines)


def _shape(shape: dict) -> dict:
    defaults = dict(width=100, length=19, group=10, hold="")
    return {k: shape.get(k, v) for k, v in defaults.items()}


def soak(settings: Settings, folder: Path) -> Report:
    """Run one soak in ``folder`` (logs, ledger) and return what it found."""
    with contextlib.ExitStack() as stack:
        redis = servers.start_redis()
        hands = Hands(None, redis, None)
        stack.callback(lambda: hands.redis.stop())       # the restarted one, at the end
        # Commits wait for the WAL (as in production), so a PostgreSQL crash loses only
        # what qflow wrote as losable (claims); fsync stays off: the OS outlives it.
        hands.postgres = servers.start_postgres(settings="-c synchronous_commit=on")
        stack.callback(hands.postgres.stop)
        hands.cluster = start_cluster(redis.url, hands.postgres.url, folder,
                                      settings.workers, app=str(FLOWS), **ENV)
        stack.callback(hands.cluster.stop)
        report = _drive(settings, hands, folder)
        if report.failures():                  # the servers go: keep the DB for a look
            dump(hands.cluster.database_url, folder / "results-db.sql")
        return report


def dump(url: str, path: Path) -> None:
    """pg_dump the results DB at ``url`` (a SQLAlchemy URL) into ``path``."""
    plain = sa.engine.make_url(url).set(drivername="postgresql")
    with open(path, "w") as out:
        subprocess.run([servers._pg_bin("pg_dump"),
                        plain.render_as_string(hide_password=False)], stdout=out,
                       stderr=subprocess.DEVNULL, timeout=120)


def _drive(settings: Settings, hands: Hands, folder: Path) -> Report:
    ledger = folder / "ledger"
    ledger.mkdir()
    cluster = hands.cluster
    faults = plan(settings.seed, settings.faults, settings.window, sorted(cluster.workers),
                  kinds=settings.kinds)
    watch = Watch(cluster.database_url)
    watch.start()
    over = folder / "faults-over"
    if settings.hold:
        settings = dataclasses.replace(settings, shape={**settings.shape, "hold": str(over)})
    began = time.monotonic()
    for _ in range(settings.runs):
        trigger(cluster.env, ledger, settings.shape)
    started = time.monotonic()                  # the schedule counts from the runs' start

    def tick() -> None:
        hands.supervise()
        if settings.keep_busy:
            top_up(watch, cluster.env, ledger, settings)

    steps = sorted([(f.at, 0, f) for f in faults] +
                   [(f.at + f.down, 1, f) for f in faults if f.kind == KILL_WORKER],
                   key=lambda s: s[:2])
    injected, open_at_fault = [], 0
    for at, revive, fault in steps:
        while time.monotonic() - started < at:
            time.sleep(0.2)
            tick()
        if revive:
            hands.revive(fault.target)
            continue
        open_runs = watch.open_runs()
        if not open_runs and not settings.keep_busy:
            log.warning("no unfinished run left at +%.1fs: faults stop", at)
            break
        open_at_fault += bool(open_runs)
        injected.append(hands.inject(fault))
        log.info("+%.1fs %s %s", time.monotonic() - started, fault.kind, fault.target)
    for name in list(hands.down):               # killed by a plan that was cut short
        hands.revive(name)
    midway = None
    if settings.hold:       # the run is still open: audit it once the faults' work is done
        watch.wait_idle(SETTLE_MIDWAY, hands.supervise)
        midway = doctor(cluster.env)
    over.touch()
    watch.wait_ended(settings.settle, hands.supervise)
    watch.stop()
    findings = audit(cluster.database_url, read_ledger(ledger), injected, watch.progress)
    return Report(settings, faults, injected, open_at_fault, findings, midway,
                  doctor(cluster.env), hands.exits, started - began,
                  time.monotonic() - began)


def trigger(env: dict, ledger: Path, shape: dict) -> str:
    """`qflow trigger chaos`, as a user would; returns the run id."""
    params = [f"ledger={ledger}", *(f"{k}={v}" for k, v in shape.items())]
    done = subprocess.run(["qflow", "trigger", "chaos", *sum((["-p", p] for p in params), []),
                           "--json"], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"qflow trigger exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)["run_id"]


def top_up(watch: "Watch", env: dict, ledger: Path, settings: Settings) -> None:
    """Trigger runs until ``settings.runs`` are unfinished (the long form's steady load)."""
    open_runs = watch.open_runs()
    for _ in range(0 if open_runs is None else settings.runs - open_runs):
        trigger(env, ledger, settings.shape)


def doctor(env: dict) -> tuple[int, str]:
    """`qflow doctor`'s exit status and output."""
    done = subprocess.run(["qflow", "doctor"], env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


class Watch(threading.Thread):
    """Reads the runs' progress from the results DB, across its restarts; while it runs,
    notes each time it sees the count of ended tasks grow (``progress``, UTC)."""

    ENDED = sa.select(sa.func.coalesce(sa.func.sum(runs.c.tasks_total - runs.c.tasks_left), 0))

    def __init__(self, url: str):
        super().__init__(name="chaos-watch", daemon=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.progress: list[dt.datetime] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        last = None
        while not self._stop_event.wait(0.1):
            ended = self._count(self.ENDED)
            if ended is not None and last is not None and ended > last:
                self.progress.append(utcnow())
            last = ended if ended is not None else last

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.engine.dispose()

    OPEN = (sa.select(sa.func.count()).select_from(runs)
            .where(runs.c.state.in_(("queued", "running"))))

    def open_runs(self) -> int | None:
        """How many runs are unfinished; None while the DB cannot say."""
        return self._count(self.OPEN)

    def _count(self, query: sa.Select) -> int | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(query).scalar_one()
        except sa.exc.DBAPIError:
            return None

    def wait_idle(self, timeout: float, tick) -> bool:
        """Wait until no task is queued or running but the sensors holding runs open."""
        busy = (sa.select(sa.func.count()).select_from(tasks)
                .where(tasks.c.state.in_(("queued", "retrying", "running")),
                       ~tasks.c.node.startswith("sensor")))
        return self._wait(busy, timeout, tick)

    def wait_ended(self, timeout: float, tick) -> bool:
        """Wait until no run is unfinished, calling ``tick`` meanwhile."""
        return self._wait(self.OPEN, timeout, tick)

    def _wait(self, count: sa.Select, timeout: float, tick) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._count(count) == 0:
                return True
            time.sleep(0.5)
            tick()
        return False
