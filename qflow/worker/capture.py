"""Capture what a task prints and logs, one attempt at a time, size-capped.

Several tasks may run at once in one process (the embedded worker runs them on threads),
so nothing here swaps a stream for the duration of one task. While at least one capture
is active, ``sys.stdout``/``sys.stderr`` are wrapped by a :class:`_Tee` and a handler sits
on the root logger; both look up the *current* capture in a context variable and write
to it, then let the text go where it went before. A thread without a capture (the CLI's
own output, Celery's consumer) passes straight through. ``contextvars`` rather than
thread-locals because qflow's timeout helper runs a task in a new thread with a copy of
the caller's context.
"""
from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections import deque
from typing import Any

_target: contextvars.ContextVar["_Buffer | None"] = contextvars.ContextVar(
    "qflow_capture", default=None)
# Set while a _Tee hands text on to the stream it wraps. Celery's workers replace
# sys.stdout by a proxy that *logs* what is written: without this flag a print would be
# captured twice, once as text and once as that proxy's log record.
_forwarding: contextvars.ContextVar[bool] = contextvars.ContextVar("qflow_forwarding",
                                                                  default=False)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Buffer:
    """The first and last ``limit / 2`` bytes of a text stream, with what was cut."""

    def __init__(self, limit: int):
        self.limit = limit
        self.head_room = limit - limit // 2
        self.tail_room = limit // 2
        self.head: list[str] = []
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0
        self.cut = 0
        self.closed = False
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        with self.lock:
            if self.head_room > 0:
                head = data[:self.head_room].decode("utf-8", "ignore")
                self.head.append(head)
                used = len(head.encode())
                # The head ends when full, or at a character that no longer fits.
                self.head_room = self.head_room - used if used == len(data) else 0
                data = data[used:]
            if len(data) > self.tail_room:               # memory stays bounded
                self.cut += len(data) - self.tail_room
                data = data[len(data) - self.tail_room:]
            if data:
                self.tail.append(data)
                self.tail_bytes += len(data)
                while self.tail and self.tail_bytes - len(self.tail[0]) >= self.tail_room:
                    gone = self.tail.popleft()
                    self.tail_bytes -= len(gone)
                    self.cut += len(gone)

    def text(self) -> str:
        with self.lock:
            tail = b"".join(self.tail)
            extra = max(0, len(tail) - self.tail_room)
            cut = self.cut + extra
            out = "".join(self.head)
            if cut:
                out += (f"\n[... {cut} bytes cut: the log is capped at log_max_bytes="
                        f"{self.limit}; this is its beginning and end ...]\n")
            return out + tail[extra:].decode("utf-8", "ignore")


class _Tee:
    """Stands in for sys.stdout or sys.stderr while tasks run."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        buffer = _target.get()
        if buffer is not None and not buffer.closed and isinstance(text, str):
            buffer.write(text)
        token = _forwarding.set(True)
        try:
            return self._stream.write(text)
        finally:
            _forwarding.reset(token)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Handler(logging.Handler):
    """On the root logger while tasks run: each record goes to its task's capture."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = _target.get()
        if buffer is None or buffer.closed or _forwarding.get():
            return
        try:
            buffer.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break the task
            self.handleError(record)


class _AtLeast(logging.Filter):
    """Keeps the root logger's other handlers at the level they had before a capture
    lowered the root level to see a task's INFO records."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class _Hooks:
    """The process-wide hooks, installed while at least one capture is active."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.handler = _Handler()
        self.handler.setFormatter(logging.Formatter(FORMAT))
        self.saved: dict[str, Any] = {}

    def install(self, level: int) -> None:
        with self.lock:
            self.active += 1
            if self.active > 1:
                return
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if stream is not None:
                    self.saved[name] = stream
                    setattr(sys, name, _Tee(stream))
            root = logging.getLogger()
            root.addHandler(self.handler)
            if root.level > level:
                self._lower(root, level)

    def _lower(self, root: logging.Logger, level: int) -> None:
        keep = _AtLeast(root.level)
        handlers = [h for h in root.handlers if h is not self.handler]
        for handler in handlers:
            handler.addFilter(keep)
        self.saved["level"] = (root.level, level, keep, handlers)
        root.setLevel(level)

    def uninstall(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active > 0:
                return
            for name in ("stdout", "stderr"):
                stream = self.saved.pop(name, None)
                tee = getattr(sys, name)
                if isinstance(tee, _Tee) and tee._stream is stream:   # else replaced since
                    setattr(sys, name, stream)
            root = logging.getLogger()
            root.removeHandler(self.handler)
            if "level" in self.saved:
                old, lowered, keep, handlers = self.saved.pop("level")
                for handler in handlers:
                    handler.removeFilter(keep)
                if root.level == lowered:
                    root.setLevel(old)


_HOOKS = _Hooks()


def snapshot() -> str | None:
    """What the capture of the calling task holds so far (None outside one)."""
    buffer = _target.get()
    return None if buffer is None else buffer.text()


class Capture:
    """``with Capture(limit) as cap: ...`` — afterwards ``cap.text`` is what the block
    printed and logged at ``level`` or above (None if nothing), at most ``limit`` bytes
    plus a marker line: the beginning and the end are kept. ``limit <= 0`` captures
    nothing."""

    def __init__(self, limit: int, level: str | int = "INFO"):
        self.limit = limit
        self.level = level if isinstance(level, int) else logging.getLevelName(level.upper())
        if not isinstance(self.level, int):
            raise ValueError(f"unknown log level {level!r}")
        self.text: str | None = None
        self._buffer: _Buffer | None = None
        self._token: contextvars.Token | None = None

    def __enter__(self) -> "Capture":
        if self.limit > 0:
            self._buffer = _Buffer(self.limit)
            _HOOKS.install(self.level)
            self._token = _target.set(self._buffer)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._buffer is None:
            return
        _target.reset(self._token)
        self._buffer.closed = True       # a thread abandoned by a timeout writes no more
        _HOOKS.uninstall()
        self.text = self._buffer.text() or None
