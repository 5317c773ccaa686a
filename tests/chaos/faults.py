"""The faults of the chaos soak: a seeded random plan, and the hands that inject them
(SIGKILL a worker's process group and start it again; restart Redis, which keeps nothing
on disk; crash and restart PostgreSQL)."""
from __future__ import annotations

import datetime as dt
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

import servers

KILL_WORKER, RESTART_REDIS, RESTART_POSTGRES = "kill_worker", "restart_redis", "restart_postgres"
KINDS = (KILL_WORKER, RESTART_REDIS, RESTART_POSTGRES)
WEIGHTS = (3, 1, 1)             # a worker dies more often than a server restarts
RESTART_AFTER = 1.0             # seconds before a worker that exited is started again


@dataclass(frozen=True)
class Fault:
    """One planned fault: ``at`` seconds after the soak starts; ``down`` seconds out."""

    at: float
    kind: str
    down: float
    target: str = ""            # the worker to kill


@dataclass(frozen=True)
class Injected:
    """A fault as it happened: its target, when it began and when the server was back
    (UTC, the DB's convention; a killed worker is "back" at once: the others go on)."""

    kind: str
    target: str
    began: dt.datetime
    back: dt.datetime


def plan(seed: int, count: int, window: float, workers: list[str],
         start: float = 2.0, kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """``count`` faults spread over ``window`` seconds (after ``start``): one in each of
    ``count`` equal slots, away from its edges so that two faults are apart. Every kind
    (of ``kinds``) comes once when ``count`` allows; the rest are drawn by weight. A
    fault lasts at most a third of a slot, so a killed worker is back before the next."""
    rng = random.Random(seed)
    weights = [WEIGHTS[KINDS.index(k)] for k in kinds]
    kinds = list(kinds[:count]) + rng.choices(kinds, weights, k=max(0, count - len(kinds)))
    rng.shuffle(kinds)
    slot = window / max(count, 1)
    return [Fault(round(start + i * slot + rng.uniform(0.2, 0.8) * slot, 2), kind,
                  round(rng.uniform(0.5, max(0.6, min(3.0, 0.35 * slot))), 2),
                  rng.choice(workers) if kind == KILL_WORKER else "")
            for i, kind in enumerate(kinds)]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Hands:
    """Injects faults into a cluster (``conftest.Cluster``) and its two servers."""

    def __init__(self, cluster, redis: servers.Server, postgres: servers.Server):
        self.cluster, self.redis, self.postgres = cluster, redis, postgres
        self.incarnations: dict[str, int] = {}
        self.down: set[str] = set()                 # workers killed, not yet revived
        self.exits: list[tuple[str, int]] = []      # workers that exited on their own
        self.exited: dict[str, float] = {}          # ... and when the soak noticed

    def inject(self, fault: Fault) -> Injected:
        """Start ``fault``; a killed worker stays down until :meth:`revive`."""
        began = utcnow()
        if fault.kind == KILL_WORKER:
            self.cluster.signal_worker(fault.target, signal.SIGKILL)
            self.cluster.workers[fault.target].wait(10)
            self.down.add(fault.target)
        elif fault.kind == RESTART_REDIS:
            self.restart_redis(fault.down)
        else:
            self.restart_postgres(fault.down)
        return Injected(fault.kind, fault.target, began,
                        began if fault.kind == KILL_WORKER else utcnow())

    def revive(self, name: str) -> None:
        """Start a killed worker again under its name (its old log kept aside)."""
        self.down.discard(name)
        n = self.incarnations[name] = self.incarnations.get(name, 0) + 1
        log = self.cluster.folder / f"{name}.log"
        log.rename(log.with_name(f"{name}.{n}.log"))
        self.cluster.start_worker(name, "-c", "2")

    def supervise(self) -> None:
        """Start again, a second after it exited, a worker that exited on its own (as
        systemd's Restart= would): a worker refuses to start while the results DB is
        unreachable."""
        now = time.monotonic()
        for name, proc in list(self.cluster.workers.items()):
            if name in self.down or proc.poll() is None:
                self.exited.pop(name, None)
            elif now - self.exited.setdefault(name, now) >= RESTART_AFTER:
                self.exits.append((name, proc.returncode))
                self.revive(name)

    def restart_redis(self, down: float) -> None:
        port = self.redis.port
        self.redis.stop()               # every message it held is gone
        time.sleep(down)
        self.redis = servers.start_redis(port=port)

    def restart_postgres(self, down: float) -> None:
        """Crash PostgreSQL (immediate stop: no checkpoint, clients cut off) and start it
        again on its data directory with the options it had (postmaster.opts)."""
        data = os.readlink(f"/proc/{self.postgres.pids()[0]}/cwd")
        pg_ctl = servers._pg_bin("pg_ctl")
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        quiet = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The server's command line; pg_ctl start wants what follows "-D data".
        with open(os.path.join(data, "postmaster.opts")) as fh:
            args = shlex.split(fh.read())[1:]
        at = args.index("-D")
        options = " ".join(shlex.quote(a) for a in args[:at] + args[at + 2:])
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], **quiet)
        time.sleep(down)
        subprocess.run([*as_user, pg_ctl, "-D", data, "-o", options, "-l",
                        os.path.join(os.path.dirname(data), "pg.log"), "-w", "start"],
                       **quiet)


def which_missing() -> str | None:
    """What the soak needs and this machine lacks, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed: apt-get install redis-server"
    if servers._pg_bin("pg_ctl") is None:
        return "PostgreSQL server binaries are not installed: apt-get install postgresql"
    return None
