"""The web server: qflow's pages and REST API on Tornado, alone (`qflow web`) or added
to Flower's application (`qflow flower`, see :mod:`qflow.broker.flower`)."""
from __future__ import annotations

import importlib.util
import ipaddress
import secrets
import sys
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from qflow.errors import UserError
from qflow.web import api
from qflow.web.auth import STATIC, QflowHandler, WebSettings


class StaticHandler(tornado.web.StaticFileHandler):
    """qflow's static files; public like any site's CSS and scripts (no user data)."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


class NotFound(QflowHandler):
    """Any other path under /qflow/: 404 (after authentication, like every page)."""

    def prepare(self) -> None:
        super().prepare()
        self.fail(404, f"no such page: {self.request.path}")


def qflow_handlers(runtime: Any, settings: WebSettings) -> list:
    """Every qflow route: the API, the pages (when :mod:`qflow.web.pages` is present),
    static files under /qflow/static/ and a 404 for the rest of /qflow/."""
    routes = list(api.handlers(runtime, settings))
    if importlib.util.find_spec("qflow.web.pages") is not None:
        from qflow.web import pages

        routes += list(pages.handlers(runtime, settings))
    kw = dict(runtime=runtime, web=settings)
    return routes + [(r"/qflow/static/(.*)", StaticHandler, {"path": str(STATIC)}),
                     (r"/qflow(/.*)?", NotFound, kw)]


def make_app(runtime: Any, settings: WebSettings) -> tornado.web.Application:
    """The Tornado application of `qflow web`: qflow's routes, / redirecting to /qflow/."""
    return tornado.web.Application(
        qflow_handlers(runtime, settings) + [(r"/", tornado.web.RedirectHandler,
                                              {"url": "/qflow/"})],
        xsrf_cookies=True, cookie_secret=secrets.token_hex(32),
        default_handler_class=NotFound,
        default_handler_args=dict(runtime=runtime, web=settings))


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def listen_address(address: str | None, protected: bool, insecure: bool,
                   option: str = "--address") -> tuple[str, str | None]:
    """The address to listen on, and a note to show when it is 127.0.0.1 for want of auth.

    Without credentials configured, anyone who can connect may trigger and cancel runs:
    only this machine may then, unless ``insecure``. UserError for another address."""
    address = "127.0.0.1" if address is None else address
    if protected or insecure:
        return address, None
    if not is_loopback(address):
        raise UserError(f"refusing to listen on {address or 'every address'} without "
                        "authentication: set web_auth (QFLOW_WEB_AUTH) or web_tokens "
                        f"(QFLOW_WEB_TOKENS), or pass --insecure with {option}")
    return address, ("no web_auth or web_tokens configured: listening on "
                     f"{address} only, every request is allowed")


def serve(runtime: Any, port: int, address: str | None, insecure: bool = False) -> None:
    """Serve qflow's pages and API until interrupted (`qflow web`)."""
    settings = WebSettings.from_config(runtime.config)
    host, note = listen_address(address, settings.protected, insecure)
    app = make_app(runtime, settings)
    try:
        server = app.listen(port, address=host, xheaders=False)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    for line in ([note] if note else []) + [
            f"qflow web console at http://{shown}:{port}/qflow/ (API under /qflow/api/v1/)"]:
        print(line, file=sys.stderr, flush=True)
    try:
        IOLoop.current().start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
