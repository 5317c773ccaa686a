"""Errors qflow raises; each user-facing one carries its CLI exit code."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class QflowError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UserError(QflowError):
    """Bad input: unknown workflow, bad parameter, cycle, bad config, bad option."""

    exit_code = 2


class CycleError(UserError):
    """The workflow's graph has a cycle."""


class ParamError(UserError):
    """A run parameter is unknown, missing or of the wrong type."""


class UnreachableError(QflowError):
    """The broker or the results DB cannot be reached."""

    exit_code = 3

    def __init__(self, what: str, url: str, reason: object):
        self.url = hide_password(url)
        super().__init__(f"cannot reach the {what} at {self.url}: {one_line(reason)}")


class Fail(Exception):
    """Raise inside a task to fail it at once, without retrying."""


class TaskTimeout(TimeoutError):
    """A task ran past its ``timeout``."""

    def __init__(self, seconds: float, killed: bool = False):
        self.seconds = seconds
        end = " and was killed" if killed else ""
        super().__init__(f"task exceeded its timeout of {seconds:g}s{end}")


class WorkerLost(Exception):
    """The process running a task died (killed, crashed, out of memory)."""


def hide_password(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def one_line(reason: object) -> str:
    """First non-empty line of an error message, for one-line CLI errors."""
    text = str(reason).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(reason).__name__ if isinstance(reason, BaseException) else text
