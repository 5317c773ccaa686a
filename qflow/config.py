"""Configuration: built once from file, environment and flags (flags win), then passed in."""
from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from qflow.core.sizing import AUTO, AutoWindow
from qflow.errors import UserError

DEFAULT_DATABASE_URL = "sqlite:///qflow.db"


@dataclass(frozen=True)
class Config:
    """Everything qflow reads from the outside. Empty ``broker_url`` = embedded default."""

    app: str = ""
    broker_url: str = ""
    database_url: str = DEFAULT_DATABASE_URL
    default_queue: str = "default"
    result_max_bytes: int = 1024 * 1024
    worker_concurrency: int = 0               # 0: number of CPUs
    embedded_concurrency: int = 4
    wait_poll_interval: float = 0.2
    db_pool_size: int = 5
    max_map_size: int = 10_000          # widest .map() a run may expand
    async_concurrency: int = 100        # async tasks running at once per worker process
    task_events: bool = False           # workers send Celery task events (Flower enables)
    pools: str = ""                     # "name=slots,name=slots": pools created on first use
    # A worker process runs a task's released child itself (no broker round trip) for
    # up to this many seconds per message; 0 = every task goes through the broker.
    follow_seconds: float = 1.0
    # Bounded dispatch (qflow/store/window.py): at most this many of a run's tasks have a
    # message (or run) at a time; the rest wait queued in the DB and are sent as those
    # end. 0 = no bound (every ready task is a message at once); a number is kept by the
    # run created with it. "auto" (qflow/core/sizing.py): dispatch_window_per_slot
    # places per live worker process serving the run's queues, at least
    # dispatch_window_min and at most dispatch_window_max, following workers as they
    # come and go (README "Bounded dispatch": what a lower minimum costs).
    dispatch_window: int | str = AUTO
    dispatch_window_per_slot: int = 10
    dispatch_window_min: int = 1000
    dispatch_window_max: int = 10_000
    # Workers: how long a state write keeps retrying while the DB is unreachable.
    db_retry_seconds: float = 120.0
    # Liveness (qflow/engine/upkeep.py): heartbeats, the sweeper and the reconciler.
    heartbeat_interval: float = 5.0
    worker_lost_timeout: float = 60.0
    max_redeliveries: int = 3
    requeue_after: float = 300.0          # re-publish tasks queued this long; 0 = never
    # A claim (queued -> running) waits for the disk before its task starts (PostgreSQL;
    # README "Claims and crashes" says what each choice guarantees).
    durable_claims: bool = False
    # Message signing (Celery's auth serializer); all three paths, or none.
    security_key: str = ""
    security_certificate: str = ""
    security_cert_store: str = ""
    scheduler_interval: float = 1.0           # most seconds between two scheduler looks
    # Alerts (qflow/engine/alerts.py): which events notify, and where.
    notify_events: str = "run_failed"
    alert_retry_hours: float = 24.0       # how long an undelivered alert is retried
    # Runs ended longer ago than this ("30d") are pruned by the workers' maintenance
    # thread, a small batch at a time; empty: kept for ever (`qflow db prune` by hand).
    retention: str = ""
    notify_webhook_url: str = ""
    notify_email_to: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "qflow@localhost"
    # Upgrade to TLS with STARTTLS whenever the server offers it (false: never; with a
    # login, a server that does not offer it gets no password in clear).
    smtp_starttls: bool = True
    # Results and data outside the DB (qflow/results): where return values are written
    # (an fsspec URL; "" = in the results DB, capped by result_max_bytes), the keys that
    # encrypt results, logs, errors and secret parameters (comma-separated: the first
    # encrypts, all decrypt; `qflow keygen`), and a key that authenticates pickled
    # results when no encryption_key is set.
    result_store: str = ""
    encryption_key: str = ""
    result_signing_key: str = ""
    # Seeing what runs (qflow/worker/capture.py, `qflow flower`).
    log_max_bytes: int = 64 * 1024            # captured output per attempt; 0 = none
    # An attempt's error message and traceback are each cut to this size; 0 = no limit.
    error_max_bytes: int = 64 * 1024
    log_level: str = "INFO"                   # lowest level of captured log records
    # Where an attempt's captured output is kept: "db" (qflow_attempts.log) or
    # "results" (one object per attempt beside its return value, in result_store,
    # encrypted with encryption_key; the DB keeps none of it).
    log_store: str = "db"
    flower_basic_auth: str = ""               # user:password[,user:password...]
    # The web console and REST API (`qflow web`, `qflow flower`): HTTP basic users for
    # pages and API ("user:password,..."; flower_basic_auth is an alias) and bearer
    # tokens for the API ("token,token"). Without either, servers listen on 127.0.0.1.
    web_auth: str = ""
    web_tokens: str = ""
    flower_max_tasks: int = 10000             # tasks Flower keeps in memory
    flower_purge_offline_workers: int = 600   # seconds; 0 = keep offline workers
    # Container tasks (qflow/worker/container.py): the CLI that runs them ("" = docker
    # when a Docker engine is configured, else whichever of podman and docker is
    # installed), a remote engine's URL, and how long a stopped container may take to
    # end before SIGKILL (keep it under the 5 s margin of Celery's hard time limit).
    container_runtime: str = ""
    container_host: str = ""
    container_stop_grace: float = 3.0

    def __post_init__(self) -> None:
        if not isinstance(logging.getLevelName(str(self.log_level).upper()), int):
            raise UserError(f"setting 'log_level' must be a logging level such as INFO or "
                            f"DEBUG, got {self.log_level!r}")
        if self.log_store not in ("db", "results"):
            raise UserError(f"setting 'log_store' must be db or results, got "
                            f"{self.log_store!r}")
        if self.log_store == "results" and not self.result_store:
            raise UserError("setting 'log_store' is results but no result_store is set "
                            "(logs go beside the results: set result_store too)")
        if self.dispatch_window != AUTO and not (
                isinstance(self.dispatch_window, int) and self.dispatch_window >= 0):
            raise UserError(f"setting 'dispatch_window' must be auto, or 0 (no bound) or "
                            f"more, got {self.dispatch_window!r}")
        if not 1 <= self.dispatch_window_min <= self.dispatch_window_max:
            raise UserError("settings 'dispatch_window_min' and 'dispatch_window_max' must "
                            f"be 1 or more, min not above max, got {self.dispatch_window_min}"
                            f" and {self.dispatch_window_max}")
        if self.dispatch_window_per_slot < 1:
            raise UserError("setting 'dispatch_window_per_slot' must be 1 or more, got "
                            f"{self.dispatch_window_per_slot}")
        if self.container_runtime not in ("", "docker", "podman"):
            raise UserError(f"setting 'container_runtime' must be docker or podman, got "
                            f"{self.container_runtime!r}")

    def pool_slots(self) -> dict[str, int]:
        """The ``pools`` setting as {name: slots}."""
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in self.pools.split(","))):
            name, _, slots = part.partition("=")
            if not name.strip() or not slots.strip().isdigit():
                raise UserError(f"setting 'pools': expected name=slots, got {part!r}")
            out[name.strip()] = int(slots)
        return out

    def window(self) -> int | AutoWindow | None:
        """A new run's dispatch window: a size, how to size it, or None (no bound)."""
        if self.dispatch_window == AUTO:
            return AutoWindow(self.dispatch_window_per_slot, self.dispatch_window_min,
                              self.dispatch_window_max, self.worker_lost_timeout,
                              self.default_queue)
        return self.dispatch_window or None

    @property
    def embedded(self) -> bool:
        return not self.broker_url or self.broker_url.startswith("memory://")


_FIELDS = {f.name: f for f in fields(Config)}


def load_config(path: str | None = None, env: Mapping[str, str] | None = None,
                **flags: Any) -> Config:
    """Read the config file (``path``, else ``$QFLOW_CONFIG``), then ``QFLOW_*``, then flags."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("QFLOW_CONFIG")
    if path:
        values.update(_read_file(path))
    for name in _FIELDS:
        key = "QFLOW_" + name.upper()
        if env.get(key, "") != "":
            values[name] = env[key]
    values.update({k: v for k, v in flags.items() if v is not None and v != ""})
    return replace(Config(), **{k: _typed(k, v) for k, v in values.items()})


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path}: {exc}") from None
    section = data.get("qflow", data)
    unknown = sorted(k for k, v in section.items() if k not in _FIELDS and not isinstance(v, dict))
    if unknown:
        raise UserError(f"config file {path}: unknown key {unknown[0]!r} "
                        f"(known: {', '.join(_FIELDS)})")
    return {k: v for k, v in section.items() if k in _FIELDS}


# Settings that are lengths of time as users write them ("30d"): checked when loaded, so a
# bad one stops a command at once instead of failing the maintenance thread every beat.
_DURATIONS = frozenset({"retention"})


def _typed(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise UserError(f"unknown setting {name!r}")
    if name in _DURATIONS and value != "":
        from qflow.core.durations import parse_duration
        try:
            parse_duration(value)
        except ValueError as exc:
            raise UserError(f"setting {name!r}: {exc}") from None
        value = str(value)
    if name == "dispatch_window":                       # auto, or a number
        return _window(value)
    kind = type(getattr(Config(), name))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        raise UserError(f"setting {name!r} must be true or false, got {value!r}")
    if isinstance(value, list) and kind is str:
        value = ",".join(str(v) for v in value)
    if isinstance(value, dict) and kind is str:          # e.g. [pools] warehouse = 3
        value = ",".join(f"{k}={v}" for k, v in value.items())
    try:
        if kind is int and not isinstance(value, bool):
            return int(value)
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    except ValueError:
        pass
    raise UserError(f"setting {name!r} must be {kind.__name__}, got {value!r}")


def _window(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        if not isinstance(value, bool):
            return int(value)
    except ValueError:
        pass
    raise UserError(f"setting 'dispatch_window' must be auto or a number, got {value!r}")
