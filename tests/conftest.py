"""Session fixtures: private Redis and PostgreSQL servers, stores and a worker cluster.

Locally a missing server binary skips the tests that need it, with what to install; in CI
(CI=true) it fails them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

import servers  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent


def _missing(exc: Exception):
    if IN_CI:
        pytest.fail(f"CI needs this server: {exc}", pytrace=False)
    pytest.skip(str(exc))


def _server(env_var: str, start):
    """Yield the URL in ``env_var`` if set, else a private server's for the session."""
    if os.environ.get(env_var):
        yield os.environ[env_var]
        return
    try:
        server = start()
    except servers.ServerMissing as exc:
        _missing(exc)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_url():
    yield from _server("QFLOW_TEST_REDIS_URL", servers.start_redis)


@pytest.fixture(scope="session")
def pg_server_url():
    yield from _server("QFLOW_TEST_DATABASE_URL", servers.start_postgres)


def new_pg_database(server_url: str) -> str:
    """Create an empty database on the test server; return its URL."""
    name = "qflow_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(
        hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each store test runs against real SQLite and real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/qflow.db"
    return new_pg_database(request.getfixturevalue("pg_server_url"))


@pytest.fixture(autouse=True)
def _results_reader_per_test():
    """The Results a test's Runtime installs (with its encryption key, say) is that
    test's: the next test in this process starts with none installed. (Left in place, it
    made a later test's map expand its input with another test's key.)"""
    yield
    from qflow.results import codec
    codec._INSTALLED.clear()


@pytest.fixture
def registry():
    """An empty workflow registry for the test; the previous one is restored after it."""
    from qflow import authoring
    workflows, tasks = dict(authoring.WORKFLOWS), dict(authoring.TASKS)
    authoring.WORKFLOWS.clear()
    yield authoring
    authoring.WORKFLOWS.clear()
    authoring.WORKFLOWS.update(workflows)
    authoring.TASKS.clear()
    authoring.TASKS.update(tasks)


def qflow_env(**values: str) -> dict[str, str]:
    """The process environment without any QFLOW_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLOW_")}
    env.update(values)
    return env


class Cluster:
    """Real worker processes on a private Redis and a PostgreSQL database."""

    def __init__(self, broker_url: str, database_url: str, app: str, folder: Path,
                 **env: str):
        self.broker_url, self.database_url, self.app = broker_url, database_url, app
        self.folder = folder
        self.env = qflow_env(QFLOW_BROKER_URL=broker_url, QFLOW_DATABASE_URL=database_url,
                             QFLOW_APP=app, **env)
        self.workers: dict[str, subprocess.Popen] = {}
        self.prefix: list[str] = []            # e.g. ["ip", "netns", "exec", "h1"]

    def start_worker(self, name: str, *args: str) -> None:
        import subprocess
        log = open(self.folder / f"{name}.log", "w")
        self.workers[name] = subprocess.Popen(
            [*self.prefix, "qflow", "worker", "-n", f"{name}@%h", "-l", "INFO", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
            start_new_session=True)            # its own process group, to kill or stop

    def signal_worker(self, name: str, signum: int) -> None:
        """Send ``signum`` to a worker's main process and its pool processes."""
        import os
        os.killpg(self.workers[name].pid, signum)

    def wait_ready(self, timeout: float = 30.0, names=None) -> None:
        import time
        deadline = time.monotonic() + timeout
        for name in names or list(self.workers):
            proc = self.workers[name]
            log = self.folder / f"{name}.log"
            while " ready." not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} did not start:\n{log.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.workers.values():
            proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(20)
            except Exception:
                proc.kill()

    def runtime(self):
        from qflow.config import Config
        from qflow.runtime import Runtime
        return Runtime(Config(broker_url=self.broker_url, database_url=self.database_url,
                              app=self.app, wait_poll_interval=0.05))


def start_cluster(broker_url: str, pg_server_url: str, folder: Path, workers: int,
                  app: str | None = None, **env: str) -> Cluster:
    """A fresh database, migrated, and ``workers`` `qflow worker -c 2` processes."""
    import subprocess
    c = Cluster(broker_url, new_pg_database(pg_server_url),
                app or str(ROOT / "tests" / "flows.py"), folder, **env)
    subprocess.run(["qflow", "db", "upgrade"], env=c.env, check=True, capture_output=True)
    for n in range(1, workers + 1):
        c.start_worker(f"w{n}", "-c", "2")
    try:
        c.wait_ready()
    except Exception:
        c.stop()
        raise
    return c


@pytest.fixture(scope="session")
def cluster(redis_url, pg_server_url, tmp_path_factory):
    """Two `qflow worker` processes (prefork, -c 2) serving tests/flows.py."""
    c = start_cluster(redis_url, pg_server_url, tmp_path_factory.mktemp("cluster"), 2)
    yield c
    c.stop()


@pytest.fixture(scope="session")
def amqp_url():
    """A private virtual host on the RabbitMQ server (QFLOW_TEST_AMQP_URL to use another)."""
    import shutil
    import subprocess
    if os.environ.get("QFLOW_TEST_AMQP_URL"):
        yield os.environ["QFLOW_TEST_AMQP_URL"]
        return
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        _missing(servers.ServerMissing("RabbitMQ is not installed: apt-get install "
                                       "rabbitmq-server (or set QFLOW_TEST_AMQP_URL)"))
    try:
        servers.wait_port(5672, timeout=2)
    except TimeoutError:
        _missing(servers.ServerMissing("RabbitMQ is not running on 127.0.0.1:5672: start it "
                                       "with `rabbitmq-server -detached`"))
    vhost = "qflow-" + uuid.uuid4().hex[:8]
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)


@pytest.fixture(scope="session")
def amqp_cluster(amqp_url, pg_server_url, tmp_path_factory):
    """Two `qflow worker` processes on RabbitMQ instead of Redis."""
    c = start_cluster(amqp_url, pg_server_url, tmp_path_factory.mktemp("amqp"), 2)
    yield c
    c.stop()


def attempt_rows(rt, run_id: str, node: str) -> list:
    """Every attempt row of one task, oldest first."""
    from sqlalchemy import select

    from qflow.store.models import attempts, tasks
    with rt.store.read() as conn:
        return conn.execute(
            select(attempts).join(tasks, tasks.c.id == attempts.c.task_id)
            .where(tasks.c.run_id == run_id, tasks.c.node == node)
            .order_by(attempts.c.number)).all()


def run_id_in(output: str) -> str:
    """The run id in `qflow run`'s "run <id> of <workflow> started" line."""
    import re
    found = re.search(r"^run ([0-9a-f]{32}) ", output, re.M)
    assert found, output
    return found.group(1)


def wait_for(check, timeout: float = 30.0, what: str = "condition",
             interval: float = 0.2):
    """Poll ``check`` every ``interval`` seconds until it returns something truthy, and
    return that."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}")


def capture_events(app, kind: str, limit: int):
    """Start an event receiver for ``kind`` on ``app``'s broker in a thread, as Flower's
    is; returns (thread, the events it got) once it consumes. Join the thread (it stops
    after ``limit`` events or 30 s) before reading the list."""
    import threading
    seen: list[dict] = []
    listening = threading.Event()

    def listen() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={kind: seen.append})
            receiver.on_consume_ready = lambda *_, **__: listening.set()
            receiver.capture(limit=limit, timeout=30, wakeup=False)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert listening.wait(30), "the event receiver did not start consuming"
    return thread, seen
