"""Errors qflow raises; each user-facing one carries its CLI exit code."""
from __future__ import annotations

import re


class QflowError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UserError(QflowError):
    """Bad input: unknown workflow, bad parameter, cycle, bad config, bad option."""

    exit_code = 2


class NoResultsDB(UserError):
    """A command that only reads found no results DB, or an empty one: nothing ran yet."""


class CycleError(UserError):
    """The workflow's graph has a cycle."""


class ParamError(UserError):
    """A run parameter is unknown, missing or of the wrong type."""


class UnreachableError(QflowError):
    """The broker or the results DB cannot be reached."""

    exit_code = 3

    def __init__(self, what: str, url: str, reason: object):
        self.url = hide_password(url)
        # A driver may quote the URL it was given, password and all.
        why = one_line(reason).replace(url, self.url) if url else one_line(reason)
        super().__init__(f"cannot reach the {what} at {self.url}: {why}")


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


# Query parameters that carry a secret in URLs (libpq's ?password=, kombu's, S3-style keys).
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token|sslpassword|"
                           r"access_key|secret_key|access_key_id|secret_access_key)=)[^&;#]*")


def hide_password(url: str) -> str:
    """Return ``url`` with every password replaced by ``***``; never raises.

    Handles several URLs separated by ``;`` (Redis Sentinel, broker failover lists), a
    password in the user part or in the query (``?password=``), and URLs that do not
    parse (a bad port): the text is masked, not parsed.
    """
    if not url:
        return url
    return ";".join(_hide_one(part) for part in url.split(";"))


def _hide_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The user part ends at the last "@": a password may hold "/", "?" or "@" unescaped;
    # hiding too much of a strange URL is better than showing a password.
    user, at, host = rest.rpartition("@")
    if at and ":" in user:
        rest = f"{user.split(':', 1)[0]}:***@{host}"
    return scheme + sep + _SECRET_QUERY.sub(r"\1***", rest)


def one_line(reason: object) -> str:
    """First non-empty line of an error message, for one-line CLI errors."""
    text = str(reason).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(reason).__name__ if isinstance(reason, BaseException) else text
