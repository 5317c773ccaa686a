"""Where return values go when ``result_store`` is set: one object per attempt that
succeeded, under ``<store>/<run_id>/<node>/<attempt>``.

``file://`` URLs are served here with the standard library; any other scheme (``s3://``,
``gcs://``, ``memory://`` …) goes through fsspec (``pip install 'qflow[store]'``).
Objects are written under their run's prefix, so deleting a run's objects is deleting
that prefix, which also collects an object written by an attempt whose outcome was never
recorded (a crash between the write and the record).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote, unquote, urlsplit

from qflow.errors import UserError


class ObjectStore(Protocol):
    url: str

    def check(self) -> None: ...
    def writer(self, key: str) -> "ObjectWriter": ...
    def open(self, key: str) -> BinaryIO: ...
    def delete_run(self, run_id: str) -> None: ...


class ObjectWriter(Protocol):
    url: str

    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def object_key(run_id: str, node: str, attempt: int) -> str:
    """The object's path under the store: node ids may hold any character."""
    return f"{run_id}/{quote(node, safe='')}/{attempt}"


def log_key(run_id: str, node: str, attempt: int) -> str:
    """Where an attempt's captured output goes with ``log_store = "results"``: beside
    its value, under the run's prefix, so it is deleted with the run."""
    return object_key(run_id, node, attempt) + ".log"


def open_store(url: str) -> ObjectStore:
    """The store of a ``result_store`` URL (not checked yet: see ``check``)."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return LocalStore(url)
    if not scheme:
        raise UserError(f"result_store must be a URL such as file:///srv/qflow-results or "
                        f"s3://bucket/prefix, got {url!r}")
    return FsspecStore(url)


def open_object(url: str) -> BinaryIO:
    """Read an object by the URL its reference recorded."""
    if url.startswith("file://"):
        try:
            return open(_local_path(url), "rb")
        except FileNotFoundError:
            raise UserError(f"stored result {url} is missing") from None
    fsspec = _fsspec(url)
    try:
        return fsspec.open(url, "rb").open()
    except FileNotFoundError:
        raise UserError(f"stored result {url} is missing") from None


def _local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UserError(f"result_store {url}: a file:// URL names a local directory "
                        "(file:///path), not a host")
    return Path(unquote(parts.path))


class LocalStore:
    """A directory on this machine (or a shared mount)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.root = _local_path(self.url)

    def check(self) -> None:
        if not self.root.is_dir():
            raise UserError(f"result_store {self.url}: directory {self.root} does not exist "
                            "(create it, or fix the setting)")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise UserError(f"result_store {self.url}: directory {self.root} is not writable "
                            "by this process")

    def writer(self, key: str) -> "LocalWriter":
        # The URL percent-encodes the path, as file:// URLs do (node ids may hold "%").
        return LocalWriter(self.root / key, f"{self.url}/{quote(key)}")

    def open(self, key: str) -> BinaryIO:
        """The object at ``key``; FileNotFoundError when there is none."""
        return open(self.root / key, "rb")

    def delete_run(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)


class LocalWriter:
    """Writes to a temporary file beside the object, renamed into place on commit, so a
    reader never sees half an object."""

    def __init__(self, path: Path, url: str):
        self.url = url
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        self._fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def commit(self) -> None:
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class FsspecStore:
    """Any filesystem fsspec knows (object stores, memory, SFTP …)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = _fsspec(url).core.url_to_fs(self.url)

    def check(self) -> None:
        try:
            if not self.fs.exists(self.root):
                self.fs.makedirs(self.root, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - each filesystem raises its own
            raise UserError(f"result_store {self.url} is not usable: "
                            f"{type(exc).__name__}: {exc}") from None

    def writer(self, key: str) -> "FsspecWriter":
        return FsspecWriter(self.fs, f"{self.root}/{key}", f"{self.url}/{key}")

    def open(self, key: str) -> BinaryIO:
        return self.fs.open(f"{self.root}/{key}", "rb")

    def delete_run(self, run_id: str) -> None:
        path = f"{self.root}/{run_id}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


class FsspecWriter:
    def __init__(self, fs, path: str, url: str):
        self.url = url
        self.fs, self.path = fs, path
        self._fh = fs.open(path, "wb")

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def commit(self) -> None:
        self._fh.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):     # each filesystem raises its own
            self._fh.close()
            self.fs.rm(self.path)


def _fsspec(url: str):
    try:
        import fsspec
        import fsspec.core  # noqa: F401 - url_to_fs
    except ImportError:
        raise UserError(f"result_store {url.split('://')[0]}:// needs fsspec: pip install "
                        "'qflow[store]' (and the filesystem's own package, e.g. s3fs)") from None
    return fsspec

