"""Turning what a task did into an outcome to record (pure, no DB, no broker)."""
from __future__ import annotations

import dataclasses
import json
import traceback
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from qflow.core import dag
from qflow.core.records import Claimed, Outcome
from qflow.core.retry import retry_in
from qflow.core.states import FAILED, RETRYING, SUCCEEDED
from qflow.errors import Fail


def arguments(claimed: Claimed) -> tuple[list, dict]:
    """The call's arguments with the parents' stored values in place of their handles."""
    return (dag.substitute(claimed.call.get("args", []), claimed.inputs),
            dag.substitute(claimed.call.get("kwargs", {}), claimed.inputs))


def missing(task: str, attempt: int) -> Outcome:
    """The worker's app has no task of that name."""
    return failure(LookupError(f"task {task!r} is not in this worker's app "
                               "(start the worker with the same -A/--app)"), {}, attempt, None)


def success(value: Any, limit: int) -> Outcome:
    try:
        # NaN and Infinity are not JSON: stored, they would reach readers (status, the
        # API, a child in another language) as invalid JSON.
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return Outcome(FAILED, error_type="TaskOutputError",
                           error=f"return value is not JSON-serialisable: {exc}")
    size = len(text.encode())
    if size > limit:
        return Outcome(FAILED, error_type="TaskOutputError",
                           error=f"return value is {size} bytes, larger than "
                                 f"result_max_bytes ({limit})")
    return Outcome(SUCCEEDED, result=text)


def branch(value: Any, node: str, children: list[str]) -> Outcome:
    """A branch task returns the id of the child to follow, or any sequence (or set) of
    them; ``None`` or an empty one follows none."""
    chosen = _node_ids(value)
    if chosen is None:
        return Outcome(FAILED, error_type="BranchError",
                       error=f"branch {node!r} must return a node id or a sequence of them, "
                             f"got {value!r}")
    unknown = sorted(set(chosen) - set(children))
    if unknown:
        return Outcome(FAILED, error_type="BranchError",
                       error=f"branch {node!r} returned {unknown[0]!r}, not one of its "
                             f"children ({', '.join(children) or 'none'})")
    return Outcome(SUCCEEDED, result=json.dumps(chosen), chosen=tuple(chosen))


def _node_ids(value: Any) -> list[str] | None:
    """The ids a branch returned, in order (a set's sorted), or None if it is not a str
    or a collection of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (Sequence, AbstractSet)) or isinstance(value, (bytes, bytearray)):
        return None
    ids = list(value)
    if not all(isinstance(i, str) for i in ids):
        return None
    return sorted(ids) if isinstance(value, AbstractSet) else ids


def failure(exc: BaseException, options: dict, tries: int, tdef) -> Outcome:
    """A failed attempt, retried or not (``tries``: see :func:`qflow.core.retry.retry_in`)."""
    name = type(exc).__name__
    message = f"{name}: {exc}" if str(exc) else name
    tb = _traceback(exc)
    retry_on = tdef.options.get("retry_on") if tdef is not None else None
    delay = retry_in(options, tries, exc, retry_on)
    return Outcome(FAILED if delay is None else RETRYING,
                       error_type="Fail" if isinstance(exc, Fail) else name,
                       error=message, traceback=tb, retry_in=delay)


# An error longer than this is stored whole (up to error_max_bytes) once, on the attempt's
# row; the task's row, which status, the API, the console's tables and alerts read, keeps
# its start (Outcome.error_summary).
SUMMARY_BYTES = 2048


def storable(outcome: Outcome, max_bytes: int = 0) -> Outcome:
    """The outcome as the results DB keeps it: NUL characters (which PostgreSQL's text
    columns refuse) in its error, traceback and captured output written as ``\\x00``;
    with ``max_bytes`` (``error_max_bytes``) its error and traceback cut to that size;
    a long error's start as its ``error_summary``."""
    fields = {}
    for key in ("error", "traceback", "log"):
        value = getattr(outcome, key)
        if not isinstance(value, str):
            continue
        text = value.replace("\x00", "\\x00") if "\x00" in value else value
        if key == "error":
            summary = capped(text, SUMMARY_BYTES)
            if summary is not text and (not max_bytes or max_bytes > SUMMARY_BYTES):
                fields["error_summary"] = summary
        if max_bytes and key != "log":          # the log has log_max_bytes already
            # A traceback's end (the innermost frames) tells most; an error's start.
            text = capped(text, max_bytes, keep_end=key == "traceback")
        if text is not value:
            fields[key] = text
    return dataclasses.replace(outcome, **fields) if fields else outcome


def capped(text: str, max_bytes: int, keep_end: bool = False) -> str:
    """``text`` cut to about ``max_bytes`` UTF-8 bytes, with a marker saying it was."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    if keep_end:
        return f"(truncated, {len(data)} bytes) … " + data[-max_bytes:].decode(errors="ignore")
    return data[:max_bytes].decode(errors="ignore") + f" … (truncated, {len(data)} bytes)"


# A message longer than this is not repeated at the end of the stored traceback: it is
# the attempt's error already.
_QUOTED = 1000


def _traceback(exc: BaseException) -> str:
    """The exception's traceback (a subprocess's own, for isolated tasks), quoting at
    most the start of a long message, so that a big message is stored once."""
    text = getattr(exc, "remote_traceback", None) or "".join(traceback.format_exception(exc))
    message = str(exc)
    if len(message) > _QUOTED and text.endswith(message + "\n"):
        text = f"{text[:-len(message) - 1]}{message[:_QUOTED]} … (the rest is in the error)\n"
    return text


_UNRECORDABLE = "OutcomeNotRecorded"


def unrecordable(outcome: Outcome, exc: BaseException) -> Outcome:
    """What to record when the DB refused ``outcome`` itself: a failure (not retried)
    that says why, without the values that could not be stored."""
    return Outcome(FAILED, error_type=_UNRECORDABLE,
                   error=f"{_UNRECORDABLE}: the task ended {outcome.state} but its outcome "
                         f"could not be recorded: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:500] if str(exc) else ''}")


def is_unrecordable(outcome: Outcome) -> bool:
    return outcome.error_type == _UNRECORDABLE

