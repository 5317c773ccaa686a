"""Shared pieces of the benchmarks: private servers, worker processes, timing, output.

Every benchmark starts its own redis-server (no persistence, as in the tests) and its own
PostgreSQL server on free ports, so nothing shared is touched and nothing needs setting
up. PostgreSQL runs with its stock durability settings (fsync and synchronous_commit on):
a task state qflow records is on disk when its transaction commits, which is what the
figures are meant to show. ``--pg-async`` turns synchronous_commit off for the qflow
database only, to see how much of the cost is waiting for the WAL flush.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
FLOWS = BENCH / "bench_flows.py"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# run_all.py measures one fixed commit: it extracts qflow/ at that commit into a folder
# named here, which goes first on sys.path in this process and in every worker it starts.
SNAPSHOT = os.environ.get("QFLOW_BENCH_SNAPSHOT", "")
if SNAPSHOT:
    sys.path.insert(0, SNAPSHOT)


def _load_servers():
    """tests/servers.py, imported by path (bench/ is not a test and copies nothing)."""
    spec = importlib.util.spec_from_file_location("qflow_test_servers",
                                                  ROOT / "tests" / "servers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module             # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


servers = _load_servers()
free_port, wait_port, start_redis = servers.free_port, servers.wait_port, servers.start_redis


# -- servers -------------------------------------------------------------------------
def start_postgres(stat_statements: bool = False) -> "servers.Server":
    """A private PostgreSQL server with stock durability (fsync, synchronous_commit on).

    Unlike the tests' server (fsync off), a commit here waits for the WAL to reach the
    disk. ``stat_statements`` preloads pg_stat_statements for the profile.
    """
    extra = (" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
             if stat_statements else "")
    return servers.start_postgres(durable=True, settings=extra.strip())


def side_by_side(dbs: list[str], commands: dict[str, str],
                 settings: dict[str, str] | None = None,
                 raw_settings: dict[str, str] | None = None
                 ) -> Iterator[tuple[str, Any, Any]]:
    """Private servers and a raw Celery worker (with ``raw_settings``, more ``BENCH_*``
    variables), then for each results DB a qflow worker (with ``settings``, more
    ``QFLOW_*`` variables): yields (db, raw Celery app, qflow runtime); ``commands``
    records the worker commands. Everything started here is stopped when the loop ends,
    however it ends."""
    from bench import raw_app
    with servers_up(pg=any(d.startswith("pg") for d in dbs)) as s:
        raw_w = start_raw_worker(s.redis_url(1), s.redis_url(2), s.folder,
                                 **(raw_settings or {}))
        commands["raw"] = raw_w.command
        try:
            app = raw_app.make_app(s.redis_url(1), s.redis_url(2))
            for db in dbs:
                url = s.database_url(db)
                q = start_qflow_worker(s.redis_url(0), url, s.folder, name=f"q-{db}",
                                       **(settings or {}))
                commands["qflow"] = q.command
                try:
                    rt = qflow_runtime(s.redis_url(0), url)
                    try:
                        yield db, app, rt
                    finally:
                        rt.store.dispose()
                finally:
                    q.stop()
        finally:
            raw_w.stop()


def new_pg_database(server_url: str, synchronous_commit: bool = True) -> str:
    """An empty database on ``server_url``; returns its URL."""
    import sqlalchemy as sa
    name = "bench_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        if not synchronous_commit:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(
        hide_password=False)


def migrate(database_url: str) -> None:
    """Create qflow's schema (what `qflow db upgrade` does)."""
    from qflow.store import Store
    from qflow.store.migrate import upgrade
    store = Store(database_url)
    upgrade(store)
    store.dispose()


@dataclass
class Servers:
    """The private Redis and PostgreSQL of one benchmark script."""

    redis: Any = None
    pg: Any = None
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qflow-bench-")))

    def redis_url(self, db: int) -> str:
        return self.redis.url.rsplit("/", 1)[0] + f"/{db}"

    def database_url(self, kind: str) -> str:
        """A fresh, migrated qflow database: ``pg``, ``pg-async`` or ``sqlite``."""
        if kind == "sqlite":
            url = f"sqlite:///{self.folder}/qflow-{uuid.uuid4().hex[:8]}.db"
        else:
            url = new_pg_database(self.pg.url, synchronous_commit=kind != "pg-async")
        migrate(url)
        return url


@contextlib.contextmanager
def servers_up(pg: bool = True, redis: bool = True,
               stat_statements: bool = False) -> Iterator[Servers]:
    # A SIGTERM (e.g. from run_all's timeout) must still stop the servers and workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    s = Servers()
    try:
        if redis:
            s.redis = start_redis()
        if pg:
            s.pg = start_postgres(stat_statements)
        yield s
    finally:
        import gc
        gc.collect()        # raw Celery results unsubscribe while Redis is still up
        for server in (s.pg, s.redis):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        shutil.rmtree(s.folder, ignore_errors=True)


# -- worker processes ----------------------------------------------------------------
def qflow_bin() -> str:
    found = Path(sys.executable).with_name("qflow")
    return str(found) if found.exists() else (shutil.which("qflow") or "qflow")


def celery_bin() -> str:
    found = Path(sys.executable).with_name("celery")
    return str(found) if found.exists() else (shutil.which("celery") or "celery")


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QFLOW_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SNAPSHOT, str(ROOT),
                                                      env.get("PYTHONPATH")]))
    env.update(values)
    return env


def installed_env(folder: Path, **values: str) -> dict[str, str]:
    """:func:`_clean_env` for a command a user types: modules run from cached bytecode
    (kept under ``folder``), as in an installed qflow (pip compiles it at install time),
    even where PYTHONDONTWRITEBYTECODE is set, when each fresh process would compile some
    140 modules again (over 0.1 s of CPU)."""
    env = _clean_env(**values)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


class Worker:
    """One worker process (``qflow worker`` or ``celery worker``), prefork ``-c`` N.

    It runs in its own process group so it can be stopped with its pool processes.
    """

    def __init__(self, kind: str, argv: list[str], env: dict[str, str], log: Path,
                 ping: Callable[[], bool]):
        self.kind = kind
        self.log_path = log
        self._ping = ping
        self._log = open(log, "w")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self._kill)             # however the script ends

    def _kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when it answers a Celery control ping (i.e. it consumes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._ping():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.kind} worker did not start:\n{self.log_path.read_text()}")

    def children(self) -> list[int]:
        """The pool processes' pids."""
        return servers.with_children(self.proc.pid)[1:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()               # warm shutdown: ends its pool too
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def _pinger(app, name: str) -> Callable[[], bool]:
    def ping() -> bool:
        try:
            return bool(app.control.ping(destination=[name], timeout=0.5))
        except Exception:  # noqa: BLE001 - broker not reachable yet
            return False
    return ping


CONCURRENCY = 2
LOGLEVEL = "WARNING"      # both sides: no per-task log lines


def start_qflow_worker(broker_url: str, database_url: str, folder: Path,
                       name: str = "qbench", program: list[str] | None = None,
                       **settings: str) -> Worker:
    """`qflow worker -c 2` (prefork) serving bench/bench_flows.py; ``program`` runs it
    another way (bench/variants.py: through bench/patched_qflow.py), ``settings`` are more
    ``QFLOW_*`` variables for it."""
    from qflow.broker.app import make_celery
    from qflow.config import Config
    hostname = f"{name}-{uuid.uuid4().hex[:6]}@bench"
    env = _clean_env(QFLOW_APP=str(FLOWS), QFLOW_BROKER_URL=broker_url,
                     QFLOW_DATABASE_URL=database_url, **settings)
    args = ["worker", "-c", str(CONCURRENCY), "-n", hostname, "-l", LOGLEVEL]
    probe = make_celery(Config(broker_url=broker_url), lambda: None)   # as qflow's client
    w = Worker("qflow", [*(program or [qflow_bin()]), *args], env,
               folder / f"{hostname.split('@')[0]}.log", _pinger(probe, hostname))
    w.command = " ".join(["qflow", *args])
    w.wait_ready()
    return w


def start_raw_worker(broker_url: str, result_url: str, folder: Path,
                     name: str = "raw", **settings: str) -> Worker:
    """`celery -A bench.raw_app worker -c 2 -P prefork` with the same settings as qflow's
    (``settings``: more ``BENCH_*`` variables for bench/raw_app.py)."""
    from bench import raw_app
    hostname = f"{name}-{uuid.uuid4().hex[:6]}@bench"
    env = _clean_env(BENCH_BROKER_URL=broker_url, BENCH_RESULT_URL=result_url, **settings)
    argv = [celery_bin(), "-A", "bench.raw_app", "worker", "-c", str(CONCURRENCY), "-P",
            "prefork", "-n", hostname, "-l", LOGLEVEL]
    probe = raw_app.make_app(broker_url, result_url)
    w = Worker("raw", argv, env, folder / f"{name}.log", _pinger(probe, hostname))
    w.command = " ".join(["celery", *argv[1:]])
    w.wait_ready()
    return w


def qflow_runtime(broker_url: str, database_url: str):
    """The client side: a Runtime on the same broker and DB, bench workflows loaded."""
    from qflow.config import Config
    from qflow.loader import load_app
    from qflow.runtime import Runtime
    load_app(str(FLOWS))
    return Runtime(Config(broker_url=broker_url, database_url=database_url, app=str(FLOWS),
                          wait_poll_interval=0.01))


# -- measuring -----------------------------------------------------------------------
def extract(rev: str, folder: Path) -> tuple[str, str]:
    """qflow/ as of git revision ``rev``, extracted under ``folder``: (path to put first
    on sys.path, short commit id). A benchmark measures that commit with
    ``QFLOW_BENCH_SNAPSHOT`` set to the path (its workers too)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    target = folder / f"qflow-src-{sha}"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha, "qflow"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target), sha


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds these processes have used so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:                 # ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kind(line: str, parent: str) -> str:
    """What a process this one started (or one of its children) is, from its command."""
    if "redis-server" in line:
        return "Redis"
    side = "raw Celery" if "raw_app" in line else "qflow"
    return f"{side} pool processes" if "worker" in parent else f"{side} worker main process"


def postmaster(port: int) -> int | None:
    """The pid of the PostgreSQL server listening on ``port`` (started by pg_ctl, so not
    a child of this process)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = _cmdline(int(entry.name))
            if "postgres" in line and f"-p {port} " in line + " ":
                return int(entry.name)
    return None


def cpu_by_kind(pg_port: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by this process ("client": triggering or applying, then
    waiting), by every process it started and theirs, by kind (each side's worker main
    process and pool processes, Redis), and by the PostgreSQL server on ``pg_port`` with
    its backends."""
    out = {"client": cpu_seconds([os.getpid()])}
    todo = [(pid, "") for pid in servers.with_children(os.getpid())[1:]]
    while todo:
        pid, parent = todo.pop()
        line = _cmdline(pid)
        if "postgres" in line or "pg_ctl" in line:
            continue
        kind = _kind(line, parent)
        out[kind] = out.get(kind, 0.0) + cpu_seconds([pid])
        todo += [(child, line) for child in servers.with_children(pid)[1:]]
    server = postmaster(pg_port) if pg_port else None
    if server is not None:
        out["PostgreSQL"] = cpu_seconds(servers.with_children(server))
    return out


def cpu_spent(fn: Callable[[], Any], pg_port: int | None = None
              ) -> tuple[Any, dict[str, float]]:
    """``fn()`` and the CPU seconds each kind of process spent meanwhile
    (:func:`cpu_by_kind`)."""
    before = cpu_by_kind(pg_port)
    out = fn()
    after = cpu_by_kind(pg_port)
    return out, {k: v - before.get(k, 0.0) for k, v in after.items()}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_times(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: smaller sizes, one measured run")
    p.add_argument("--repeat", type=int, default=None,
                   help="measured runs per case, median reported (default 3; 1 with --quick)")
    p.add_argument("--json", dest="json_out", default=None, metavar="PATH",
                   help="also write the figures as JSON (run_all.py reads them)")
    return p


def repeats(args) -> int:
    if args.repeat:
        return args.repeat
    return 1 if args.quick else 3


def emit(args, name: str, payload: dict) -> None:
    """Write the figures as JSON when asked (for run_all.py)."""
    argv, skip = [], False
    for a in sys.argv:                       # the command as a user would type it
        if skip:
            skip = False
            continue
        if a == "--json":
            skip = True
            continue
        argv.append(os.path.relpath(a, ROOT) if a.endswith(".py") and os.path.isabs(a) else a)
    payload = {"benchmark": name, "quick": bool(args.quick), "repeat": repeats(args),
               "argv": " ".join(["python", *argv]), **payload}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(payload, indent=2))


def say(*parts: Any) -> None:
    print(*parts, flush=True)


# -- the machine ---------------------------------------------------------------------
def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import celery
    import kombu
    import sqlalchemy
    try:
        import psycopg
        psycopg_v = psycopg.__version__
    except ImportError:
        psycopg_v = "-"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    virt = _version(["systemd-detect-virt"])
    pg = servers._pg_bin("postgres")
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "memory": mem,
        "virtualisation": virt if virt not in ("?", "none") else "none detected",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "celery": celery.__version__,
        "kombu": kombu.__version__, "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg_v,
        "redis": _version(["redis-server", "--version"]).replace("Redis server v=", "").split()[0],
        "postgresql": (_version([pg, "--version"]).replace("postgres (PostgreSQL) ", "")
                       if pg else "?"),
        "sqlite": __import__("sqlite3").sqlite_version,
    }


# -- raw vs qflow, interleaved -------------------------------------------------------
MAX_CASE_SECONDS = 150.0


def interleaved(label: str, raw: Callable[[], float], qflow: Callable[[], float],
                reps: int, max_seconds: float = MAX_CASE_SECONDS) -> tuple[list, list]:
    """Measured runs of both sides, alternating raw then qflow so that load from other
    processes on the machine hits both alike. Each callable returns its wall time (or a
    tuple whose first item is). Stops early (after at least one pair) once the case has
    taken ``max_seconds``, so a slow side cannot blow the time budget; the number of runs
    is reported with the figures."""
    raws: list = []
    qflows: list = []
    started = time.monotonic()
    for i in range(reps):
        raws.append(raw())
        qflows.append(qflow())
        r = raws[-1][0] if isinstance(raws[-1], tuple) else raws[-1]
        q = qflows[-1][0] if isinstance(qflows[-1], tuple) else qflows[-1]
        say(f"  {label} run {i + 1}: raw {r:.3f} s, qflow {q:.3f} s  (load {loadavg()})")
        if i + 1 < reps and time.monotonic() - started > max_seconds:
            say(f"  {label}: stopping after {i + 1} run(s), over {max_seconds:.0f} s")
            break
    return raws, qflows


def add_cap_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-case-seconds", type=float, default=MAX_CASE_SECONDS,
                   help="stop repeating a case once it has taken this long (at least one "
                        f"run each side; default {MAX_CASE_SECONDS:g})")


DB_LABEL = {"pg": "Redis + PostgreSQL", "pg-async": "Redis + PostgreSQL (synchronous_commit=off)",
            "sqlite": "Redis + SQLite"}


def add_compare_options(p: argparse.ArgumentParser, db: str) -> None:
    """The options of a raw-Celery-vs-qflow comparison: --db (default ``db``) and the cap."""
    p.add_argument("--db", default=db,
                   help=f"comma-separated: pg, sqlite, pg-async (default {db})")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a qflow setting for the qflow worker (e.g. durable_claims=true); "
                        "repeat for more")
    p.add_argument("--task-events", action="store_true",
                   help="both sides' workers send task events, as while Flower watches "
                        "(qflow's task_events=true, Celery's worker_send_task_events and "
                        "task_send_sent_event)")
    add_cap_option(p)


def worker_settings(pairs: list[str]) -> dict[str, str]:
    """``--setting key=value`` options as the ``QFLOW_*`` variables of a qflow worker."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--setting {pair!r}: expected KEY=VALUE")
        out["QFLOW_" + key.strip().upper()] = value
    return out


def compare(args, commands: dict[str, str],
            warm_up: Callable[[Any, Any], None],
            cases: Callable[[Any, Any], list[tuple[Any, str, Callable, Callable]]]
            ) -> Iterator[tuple[str, Any, list, list]]:
    """For each results DB of ``--db``: servers and workers (:func:`side_by_side`),
    ``warm_up(app, rt)``, then every ``(key, label, raw, qflow)`` of ``cases(app, rt)``
    measured alternately (:func:`interleaved`). Yields (db, key, raw runs, qflow runs)."""
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    settings = worker_settings(args.setting)
    raw_settings = {}
    if getattr(args, "task_events", False):
        settings["QFLOW_TASK_EVENTS"] = "true"
        raw_settings["BENCH_TASK_EVENTS"] = "1"
        say("task events on in both sides' workers")
    if settings:
        say("qflow worker settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    with contextlib.closing(side_by_side(dbs, commands, settings, raw_settings)) as setups:
        for db, app, rt in setups:
            say(f"{DB_LABEL[db]}: warm-up")
            warm_up(app, rt)
            for key, label, raw, qflow in cases(app, rt):
                yield (db, key, *interleaved(f"{label} {db}", raw, qflow, repeats(args),
                                             args.max_case_seconds))


WAIT_TIMEOUT = 900.0      # a run that has not ended by then is reported, not waited for


def qflow_wait(rt, run_id: str, timeout: float = WAIT_TIMEOUT) -> dict:
    """``Engine.wait`` with a bound; on timeout, say how far the run got."""
    try:
        return rt.engine.wait(run_id, timeout=timeout)
    except TimeoutError:
        from sqlalchemy import func, select

        from qflow.store.models import tasks
        with rt.store.read() as conn:
            states = dict(conn.execute(select(tasks.c.state, func.count())
                                       .where(tasks.c.run_id == run_id)
                                       .group_by(tasks.c.state)).all())
        raise RuntimeError(f"qflow run {run_id} did not end within {timeout:g} s; "
                           f"its tasks: {states}") from None


def raw_get(result, timeout: float = WAIT_TIMEOUT, **options):
    """``AsyncResult.get`` with a bound; on timeout, say what state it was in."""
    try:
        return result.get(timeout=timeout, **options)
    except Exception as exc:  # celery.exceptions.TimeoutError and task errors
        raise RuntimeError(f"raw Celery result {result.id} not ready after {timeout:g} s "
                           f"(state {result.state}): {type(exc).__name__}: {exc}") from None


def qflow_settings() -> dict:
    """The Celery settings qflow's own app has (read from it, not typed in), and where
    the qflow package measured was imported from."""
    import qflow
    out: dict = {"qflow_path": str(Path(qflow.__file__).parent)}
    try:
        from qflow.broker.app import make_celery
        from qflow.config import Config
        app = make_celery(Config(broker_url="redis://127.0.0.1:1/0"), lambda: None)
        for k in ("task_acks_late", "worker_prefetch_multiplier", "task_serializer",
                  "worker_send_task_events", "task_send_sent_event",
                  "broker_transport_options", "task_ignore_result"):
            out[k] = app.conf.get(k)
    except Exception:  # noqa: BLE001 - the figures are still worth having
        pass
    return out
