"""Private Redis and PostgreSQL instances for the test session, from installed servers.

Each is started once per session on a free port in a temporary directory, so tests can
flush, kill or restart them without touching a shared server. Set QFLOW_TEST_REDIS_URL or
QFLOW_TEST_DATABASE_URL to use a running server instead.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


class ServerMissing(Exception):
    """The server binary is not installed; the message says what to install."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Server:
    url: str
    port: int
    stop: callable
    pids: callable = list          # the server's processes now (the benchmarks' CPU count)
    crash: callable = None         # SIGKILL every process of the server, as a crash would
    start: callable = None         # start it again (after a crash) on the same port and data


def with_children(pid: int) -> list[int]:
    """``pid`` and its child processes' pids (Linux)."""
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except OSError:
        return [pid]
    return [pid, *map(int, text.split())]


def start_redis(port: int | None = None, bind: str = "127.0.0.1",
                password: str | None = None) -> Server:
    """A private redis-server keeping nothing on disk (a restart loses every message)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerMissing("redis-server is not installed: apt-get install redis-server "
                            "(or set QFLOW_TEST_REDIS_URL)")
    port = port or free_port()
    folder = tempfile.mkdtemp(prefix="qflow-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", *bind.split(), "--save", "", "--appendonly",
         "no", "--dir", folder, "--logfile", os.path.join(folder, "redis.log"),
         *(["--requirepass", password] if password else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)

    auth = f":{password}@" if password else ""
    return Server(f"redis://{auth}127.0.0.1:{port}/0", port, stop, lambda: [proc.pid])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def start_postgres(listen: str = "127.0.0.1", trust_net: str | None = None,
                   durable: bool = False, settings: str = "") -> Server:
    """A private PostgreSQL server. Tests run it without fsync; ``durable=True`` keeps
    stock durability (a commit waits for the WAL on disk), as the benchmarks need.
    ``settings`` adds server options (``-c name=value ...``)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServerMissing("PostgreSQL server binaries are not installed: apt-get install "
                            "postgresql (or set QFLOW_TEST_DATABASE_URL)")
    port = free_port()
    folder = tempfile.mkdtemp(prefix="qflow-pg-")
    data = os.path.join(folder, "data")
    as_user = []
    if os.geteuid() == 0:                       # initdb refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_user + [initdb, "-D", data, "-A", "trust", "-U", "postgres",
                              *([] if durable else ["--no-sync"])], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if trust_net:
        with open(os.path.join(data, "pg_hba.conf"), "a") as fh:
            fh.write(f"host all all {trust_net} trust\n")
    options = f"-p {port} -k {folder} -c listen_addresses='{listen}' -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if settings:
        options += " " + settings

    def start() -> None:
        subprocess.run(as_user + [pg_ctl, "-D", data, "-o", options, "-l",
                                  os.path.join(folder, "pg.log"), "-w", "start"], check=True,
                       stdout=subprocess.DEVNULL)

    def stop() -> None:
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)

    def pids() -> list[int]:
        with open(os.path.join(data, "postmaster.pid")) as fh:
            return with_children(int(fh.readline()))

    def crash() -> None:
        # Every process at once, the postmaster first: none gets to write out what is
        # still only in shared memory (WAL not flushed yet), as in a crash of the server.
        killed = pids()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.02)
        # A killed process not reaped yet would pass for a running server: its lock
        # files go, as an administrator would remove them.
        for lock in (os.path.join(data, "postmaster.pid"),
                     os.path.join(folder, f".s.PGSQL.{port}.lock")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)

    start()
    return Server(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", port, stop,
                  pids, crash, start)


class Mailbox:
    """A local SMTP server (aiosmtpd) that keeps every message."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append(envelope)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
