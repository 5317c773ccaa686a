"""Tasks that run in a container image, through the ``docker`` or ``podman`` CLI.

One code path for both: ``create`` (with ``--rm`` and the labels ``qflow.run``,
``qflow.node`` and ``qflow.attempt``), then ``start --attach``, whose stdout and stderr
are read line by line into the attempt's log as they come. The container itself is
supervised by the runtime, not by this process, so a worker that dies leaves it running:
the sweeper finds it by its labels (see :mod:`qflow.worker.runtime_cli`).

A failure to create the container (a missing image, a refused pull, an unreachable
runtime) is permanent: :class:`ContainerUnavailable` is a :class:`~qflow.errors.Fail`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from qflow.errors import TaskTimeout, one_line
from qflow.worker import capture
from qflow.worker.isolation import fill_command
from qflow.worker.runtime_cli import ContainerUnavailable, Runtime, stop

OUT_DIR = "/qflow/out"                       # result.json here is the task's value
PULL_POLICIES = ("missing", "always", "never")
TICK_SECONDS = 1.0
log = logging.getLogger("qflow.container")


class ContainerFailed(Exception):
    """The container's command exited with a non-zero code."""


class ContainerStopped(Exception):
    """The container was stopped before its command ended (cancel, lost attempt)."""


@dataclass(frozen=True)
class Spec:
    """How to run a container: ``docker run``'s options that qflow passes on."""

    image: str
    env: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)   # host path -> "target[:ro]"
    workdir: str | None = None
    user: str | None = None
    network: str | None = None
    cpus: float | None = None
    memory: str | None = None
    pull: str = "missing"

    def create_args(self) -> list[str]:
        """The ``create`` options; env values stay out of the argument list (``-e NAME``
        takes the value from the CLI's environment), so ``ps`` never shows them."""
        args = ["--pull", self.pull]
        for name in self.env:
            args += ["-e", name]
        for host, target in self.volumes.items():
            args += ["-v", f"{host}:{target}"]
        for flag, value in (("-w", self.workdir), ("-u", self.user),
                            ("--network", self.network), ("--cpus", self.cpus),
                            ("--memory", self.memory)):
            if value is not None:
                args += [flag, str(value)]
        return args


def check_spec(spec: Spec, where: str) -> None:
    """Raise ValueError on options the runtime would refuse only at run time."""
    if not isinstance(spec.image, str) or not spec.image:
        raise ValueError(f"{where}: image must be a non-empty string")
    if spec.pull not in PULL_POLICIES:
        raise ValueError(f"{where}: pull must be one of {', '.join(PULL_POLICIES)}, "
                         f"got {spec.pull!r}")
    for kind, mapping in (("env", spec.env), ("volumes", spec.volumes)):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise ValueError(f"{where}: {kind} must map strings to strings")


SPEC_OPTIONS = ("image", "env", "volumes", "workdir", "user", "network", "cpus", "memory",
                "pull")


def spec_of(options: dict) -> Spec:
    """The container options of a task (``container()``'s keywords, or ``@task``'s)."""
    return Spec(options["image"], dict(options.get("env") or {}),
                dict(options.get("volumes") or {}), options.get("workdir"),
                options.get("user"), options.get("network"), options.get("cpus"),
                options.get("memory"), options.get("pull") or "missing")


# -- running a task in a container -------------------------------------------------------------
def invoke(tdef: Any, args: list, kwargs: dict, config: Any, ctx: Any,
           timeout: float | None, live: Callable[..., bool] | None = None) -> Any:
    """Run one attempt of a container task (``container()``, or a Python task with
    ``isolation="container"``) and return its value. ``live(text)`` stores the output so
    far (None: unchanged) and says whether the attempt is still current; ``live(None,
    True)`` says it ended."""
    runtime, spec = Runtime.from_config(config), spec_of(tdef.options)
    labels = {"qflow.run": ctx.run_id, "qflow.node": ctx.node,
              "qflow.attempt": str(ctx.attempt)}
    grace = config.container_stop_grace
    command = getattr(tdef.fn, "container_command", None)
    watch = _LiveLog(live) if live is not None else None
    try:
        if command is None:
            from qflow.worker import inside
            return inside.call(runtime, spec, tdef, args, kwargs, ctx, config.app, labels,
                               timeout, grace, watch and watch.tick)
        return _command(runtime, spec, command, args, kwargs, labels, timeout, grace,
                        watch and watch.tick)
    finally:
        if watch is not None:
            watch.end()


class _LiveLog:
    """Hands the task's captured output to ``live`` when it changed since last time."""

    def __init__(self, live: Callable[..., bool]):
        self.live = live
        self.sent: str | None = None

    def tick(self) -> bool:
        text = capture.snapshot()
        try:
            current = self.live(None if text == self.sent else text)
        except Exception:  # noqa: BLE001 - a DB blip must not stop the container
            log.warning("could not write the live log", exc_info=True)
            return True
        self.sent = text
        return current

    def end(self) -> None:
        try:
            self.live(None, True)
        except Exception:  # noqa: BLE001 - only a copy; the attempt's row has the log
            log.warning("could not forget the live log", exc_info=True)


def call_plain(options: dict, command: list[str] | None, args: tuple, kwargs: dict) -> Any:
    """A ``container()`` task called outside a workflow run: the same container, with
    the settings of ``load_config()`` and no run to label it with."""
    from qflow.config import load_config
    config = load_config()
    return _command(Runtime.from_config(config), spec_of(options), command, args, kwargs,
                    {}, options.get("timeout"), config.container_stop_grace, None)


def _command(runtime: "Runtime", spec: Spec, command: list[str] | None, args, kwargs,
             labels: dict[str, str], timeout: float | None, grace: float,
             tick: Callable[[], bool] | None) -> Any:
    argv = fill_command(command, args, kwargs) if command is not None else None
    shown = shlex.join(argv) if argv is not None else "(the image's command)"
    print(f"[{spec.image}] $ {shown}", flush=True)
    with shared_dir("qflow-out-") as out_dir:
        output = run(runtime, replace(spec, volumes={**spec.volumes, out_dir: OUT_DIR}),
                     argv, labels, timeout, grace, tick)
        return _result(Path(out_dir) / "result.json", output)


# -- one container, start to end -----------------------------------------------------------
@dataclass
class _Output:
    """What the container printed: forwarded to the task's log as it comes, with the
    last JSON line of stdout and the last lines of stderr kept."""

    value: Any = None
    has_value: bool = False
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=5))

    def line(self, stream: str, text: str) -> None:
        (sys.stdout if stream == "stdout" else sys.stderr).write(text)
        stripped = text.strip()
        if stream == "stderr":
            if stripped:
                self.stderr_tail.append(stripped)
        elif stripped:
            try:
                self.value, self.has_value = json.loads(stripped), True
            except ValueError:
                pass


def run(runtime: Runtime, spec: Spec, command: list[str] | None, labels: dict[str, str],
        timeout: float | None = None, grace: float = 3.0,
        tick: Callable[[], bool] | None = None) -> "_Output":
    """Run ``command`` (None: the image's own) in a new container; return what it printed.

    ``tick`` is called about every second while the container runs; when it returns False
    (the attempt was canceled or given up) the container is stopped. Timeout, a tick
    saying stop and SIGTERM (in the main thread) stop the container (SIGTERM, SIGKILL
    after ``grace`` seconds) and remove it. A non-zero exit raises ContainerFailed.
    """
    cid = _create(runtime, spec, command, labels)
    try:
        code, output = _attend(runtime, cid, timeout, grace, tick)
    finally:
        runtime.call("rm", "-f", cid, timeout=30)     # --rm may lag behind the exit
    if code != 0:
        tail = " | ".join(output.stderr_tail) or "(no stderr)"
        raise ContainerFailed(f"container exited with code {code}: {tail}")
    return output


@contextlib.contextmanager
def shared_dir(prefix: str) -> Iterator[str]:
    """A temporary directory to mount into a container, removed afterwards."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o777)                     # the image's user may not be ours
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _create(runtime: Runtime, spec: Spec, command: list[str] | None,
            labels: dict[str, str]) -> str:
    args = ["create", "--rm", *spec.create_args()]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    env = {**os.environ, **spec.env}
    done = runtime.call(*args, spec.image, *(command or []), env=env, timeout=600.0)
    if done.returncode != 0:
        reason = one_line(done.stderr.replace("Error: ", "")) or f"exit {done.returncode}"
        raise ContainerUnavailable(f"cannot create a container from {spec.image!r} with "
                                   f"{runtime.program}: {reason}")
    return done.stdout.strip().splitlines()[-1]


def _attend(runtime: Runtime, cid: str, timeout: float | None, grace: float,
            tick: Callable[[], bool] | None) -> tuple[int, _Output]:
    """Start the container attached and forward its output until it ends."""
    proc = subprocess.Popen(runtime.argv("start", "--attach", cid), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_read, args=(pipe, name, lines), daemon=True)
               for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    output = _Output()
    try:
        with _stop_on_sigterm():
            _forward(lines, output, timeout, tick)
    except BaseException:
        stop(runtime, cid, grace)             # ends `start --attach` too
        proc.wait(30)
        raise
    return proc.wait(), output


def _read(pipe, name: str, lines: queue.Queue) -> None:
    for raw in iter(pipe.readline, b""):
        lines.put((name, raw.decode("utf-8", "replace")))
    lines.put((name, None))


def _forward(lines: queue.Queue, output: _Output, timeout: float | None,
             tick: Callable[[], bool] | None) -> None:
    deadline = time.monotonic() + timeout if timeout else None
    next_tick = time.monotonic() + TICK_SECONDS
    open_streams = 2
    while open_streams:
        try:
            name, text = lines.get(timeout=0.2)
        except queue.Empty:
            pass
        else:
            if text is None:
                open_streams -= 1
            else:
                output.line(name, text)
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise TaskTimeout(timeout or 0, killed=True)
        if tick is not None and now >= next_tick:
            next_tick = now + TICK_SECONDS
            if not tick():
                raise ContainerStopped("the attempt was canceled or given up; its "
                                       "container was stopped")


class _stop_on_sigterm:
    """In the main thread (a prefork pool process, which ``qflow cancel`` terminates
    with SIGTERM), turn SIGTERM into an exception so the container is stopped first."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(_signum, _frame) -> None:
        raise ContainerStopped("the task was terminated (SIGTERM); its container was stopped")

    def __exit__(self, *exc_info: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _result(path: Path, output: _Output) -> Any:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ContainerFailed(f"{OUT_DIR}/result.json is not JSON: {exc}") from None
    return output.value if output.has_value else None
