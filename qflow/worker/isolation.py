"""Tasks that run outside the worker process: ``isolation="subprocess"`` and ``shell()``,
and the placeholder filling that ``shell()`` and ``container()`` share.

A subprocess task runs in a forked child, so a crash, ``os._exit`` or a memory leak ends
with the child; the worker survives and records a clean failure. The child sends back
its JSON result (or its error) and what it printed through a pipe.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import shlex
import signal
import string
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

from qflow.errors import TaskTimeout
from qflow.worker import capture


class SubprocessDied(Exception):
    """The task's child process ended without reporting a result."""


def call_in_subprocess(fn: Callable, args: list, kwargs: dict, timeout: float | None,
                       log_limit: int) -> Any:
    """Run ``fn(*args, **kwargs)`` in a forked child and return its (JSON) result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the child
        os.close(read_fd)
        _child(fn, args, kwargs, write_fd, log_limit)
    os.close(write_fd)
    try:
        data = _read_all(read_fd, timeout, pid)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not data:
        raise SubprocessDied(f"task process {_describe(status)} without a result")
    report = json.loads(data)
    if report.get("log"):
        sys.stdout.write(report["log"])                    # into the attempt's log
    if "error" in report:
        raise rebuild(report["error"])
    return report["value"]


def _child(fn: Callable, args: list, kwargs: dict, write_fd: int, log_limit: int) -> None:
    code = 0
    out = capture.Capture(log_limit)
    try:
        try:
            with out:
                report: dict = {"value": fn(*args, **kwargs)}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            report = {"error": error_report(exc)}
        report["log"] = out.text
        payload = report_json(report).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
    except BaseException:  # noqa: BLE001 - never return into the worker's code
        code = 1
    finally:
        os._exit(code)


def error_report(exc: BaseException) -> dict:
    """An exception as JSON-ready data, for :func:`rebuild` on the other side."""
    return {"module": type(exc).__module__, "type": type(exc).__qualname__,
            "message": str(exc), "args": _json_args(exc),
            "traceback": "".join(traceback.format_exception(exc))}


def report_json(report: dict) -> str:
    """``report`` (a ``value`` or an ``error``) as JSON; a value that is not
    JSON-serialisable becomes a TypeError report."""
    try:
        return json.dumps(report)
    except (TypeError, ValueError) as exc:
        error = TypeError(f"return value is not JSON-serialisable: {exc}")
        return json.dumps({**report, "value": None,
                           "error": {**error_report(error), "traceback": ""}})


def _json_args(exc: BaseException) -> list:
    try:
        json.dumps(exc.args)
        return list(exc.args)
    except (TypeError, ValueError):
        return [str(exc)]


def _read_all(fd: int, timeout: float | None, pid: int) -> bytes:
    deadline = None if not timeout else time.monotonic() + timeout
    chunks = []
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TaskTimeout(timeout or 0, killed=True)
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else "ended"


def rebuild(error: dict) -> BaseException:
    """The child's exception, as its own class when importable (for retry_on and Fail)."""
    try:
        cls: Any = importlib.import_module(error["module"])
        for part in error["type"].split("."):
            cls = getattr(cls, part)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exc = cls.__new__(cls)
            exc.args = tuple(error.get("args", [error["message"]]))
            exc.remote_traceback = error["traceback"]          # the child's, for the record
            return exc
    except Exception:  # noqa: BLE001 - fall back to a generic error
        pass
    return SubprocessDied(f"{error['type']}: {error['message']}")


# -- commands: shell tasks and container tasks ----------------------------------------------
class ShellError(Exception):
    """A shell task's command exited with a non-zero status."""


class _Quoting(string.Formatter):
    """``str.format`` whose every filled-in value is quoted for a POSIX shell."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return shlex.quote(_text(value, format_spec))


class _Plain(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return _text(value, format_spec)


def _text(value: Any, format_spec: str) -> str:
    """A value as command text: lists and dicts (parents' results) as JSON."""
    if isinstance(value, (list, dict)) and not format_spec:
        return json.dumps(value)
    return format(value, format_spec)


def fill_command(command: str | list[str], args: tuple | list, values: dict
                 ) -> str | list[str]:
    """Fill ``{placeholders}`` from ``args``/``values`` so that no value can change the
    command's shape: in a string (run by a shell) each value is shell-quoted; in a list
    (run without a shell) each item is formatted on its own, so a value stays inside
    its one argv item."""
    try:
        if isinstance(command, str):
            return _Quoting().vformat(command, tuple(args), values)
        return [_Plain().vformat(item, tuple(args), values) for item in command]
    except (KeyError, IndexError) as exc:
        raise ShellError(f"command {command!r} needs a value for {exc}") from None


def run_command(template: str | list[str], *args: Any, **values: Any) -> dict:
    """Run ``template`` with its placeholders filled (see :func:`fill_command`): a string
    in a shell, a list without one. Its output goes to the task's log.

    Returns ``{"command", "returncode", "stdout"}`` (stdout's last 4 KiB); a non-zero
    exit fails the task with the end of stderr.
    """
    command = fill_command(template, args, values)
    shown = command if isinstance(command, str) else shlex.join(command)
    print(f"$ {shown}", flush=True)
    try:
        done = subprocess.run(command, shell=isinstance(command, str), capture_output=True,
                              text=True)
    except OSError as exc:                   # a list command whose program is missing
        raise ShellError(f"cannot run {shown!r}: {exc.strerror or exc}") from None
    if done.stdout:
        sys.stdout.write(done.stdout)
    if done.stderr:
        sys.stderr.write(done.stderr)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        raise ShellError(f"command exited with {done.returncode}: {tail[0]}")
    return {"command": shown, "returncode": 0, "stdout": done.stdout[-4096:]}
