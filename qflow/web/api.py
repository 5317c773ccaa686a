"""The REST API under /qflow/api/v1/ (paths and shapes: CONTRACT.md)."""
from __future__ import annotations

from typing import Any

from qflow.store import read
from qflow.web.auth import QflowHandler, WebSettings

PREFIX = "/qflow/api/v1"


class ApiHandler(QflowHandler):
    """An API endpoint: bearer tokens are accepted besides HTTP basic."""

    accepts_tokens = True


class RunHandler(ApiHandler):
    async def get(self, run_id: str) -> None:
        run = await self.blocking(self._load, run_id)
        if run is None:
            self.fail(404, f"unknown run {run_id!r}")
        self.write_json(run)

    def _load(self, run_id: str) -> dict[str, Any] | None:
        with self.runtime.store.read() as conn:
            return read.get_run(conn, run_id)


def handlers(runtime: Any, settings: WebSettings) -> list:
    """The API's routes, each handler given the runtime and the web settings."""
    kw = dict(runtime=runtime, web=settings)
    return [(PREFIX + r"/runs/([0-9a-f]{32})", RunHandler, kw)]
