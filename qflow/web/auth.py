"""Who may use the web console and API, and the base class of every qflow handler.

Credentials: HTTP basic (``web_auth``, alias ``flower_basic_auth``) for pages and API;
``Authorization: Bearer TOKEN`` (``web_tokens``) for the API and metrics. With neither
configured everything is open, and the servers listen on 127.0.0.1 only
(:func:`qflow.web.app.listen_address`). Wrong or missing credentials get 401 and nothing
else.

Cross-site requests. Browsers send basic credentials with any request to the site, also
one a foreign page makes them send, so a state-changing request (POST, PUT, PATCH,
DELETE) is refused with 403 when the browser says it is cross-site (``Sec-Fetch-Site``,
or an ``Origin`` that is not this host), and otherwise accepted only if it

- carries a bearer token (never sent by a browser on its own), or
- has ``Content-Type: application/json`` (a foreign page can only send that with a CORS
  preflight, which qflow never grants), or
- carries Tornado's xsrf token (the ``_xsrf`` form field or ``X-XSRFToken`` header,
  matching the ``_xsrf`` cookie): how the console's own forms post.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import tornado.template
import tornado.web

from qflow.config import Config
from qflow.errors import one_line

T = TypeVar("T")
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/qflow/static/"
_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def _split(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


@dataclass(frozen=True)
class WebSettings:
    """The web server's own settings, built once from the config."""

    users: tuple[str, ...] = ()      # "user:password" pairs (HTTP basic)
    tokens: tuple[str, ...] = ()     # API bearer tokens
    in_flower: bool = False          # served inside Flower: pages may link to its task pages
    oauth: str = ""                  # inside Flower with --auth: who its login lets in

    @classmethod
    def from_config(cls, config: Config, in_flower: bool = False,
                    more_users: tuple[str, ...] = ()) -> "WebSettings":
        users = _split(config.web_auth) + _split(config.flower_basic_auth) + more_users
        return cls(tuple(dict.fromkeys(users)), _split(config.web_tokens), in_flower)

    @property
    def protected(self) -> bool:
        """Whether any credentials are required."""
        return bool(self.users or self.tokens or self.oauth)

    def user(self, authorization: str, accept_tokens: bool) -> str | None:
        """Who the ``Authorization`` header names: a user name, ``token`` for a bearer
        token, or None for missing or wrong credentials."""
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and accept_tokens:
            return "token" if _one_of(value, self.tokens) else None
        if scheme.lower() != "basic":
            return None
        try:
            pair = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return pair.partition(":")[0] if _one_of(pair, self.users) else None


def _one_of(given: str, allowed: tuple[str, ...]) -> bool:
    # Compare with every entry (constant time each): the time taken tells nothing.
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(given.encode(), candidate.encode())
    return found


class Refused(tornado.web.HTTPError):
    """A request qflow answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = one_line(message)


class QflowHandler(tornado.web.RequestHandler):
    """Base class of every qflow page and API handler.

    Mount a subclass with ``dict(runtime=..., web=...)`` as its keyword arguments; see
    :func:`qflow.web.app.qflow_handlers`. It authenticates every request (401 before
    anything is served), refuses cross-site writes (403), and renders errors as
    ``{"error": "one line"}``. DB work belongs in :meth:`blocking`, off the event loop.
    """

    accepts_tokens = False          # bearer tokens: the API and metrics, not pages

    def initialize(self, runtime: Any, web: WebSettings) -> None:
        self.runtime = runtime
        self.web = web
        self.user: str | None = None      # who authenticated ("anonymous": no auth set)

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Referrer-Policy", "same-origin")

    def prepare(self) -> None:
        self.user = self._authenticate()
        if self.request.method in _UNSAFE:
            self._refuse_cross_site()

    def _authenticate(self) -> str:
        if not self.web.protected:
            return "anonymous"
        user = self.web.user(self.request.headers.get("Authorization", ""),
                             self.accepts_tokens) or self._flower_login()
        if user is None:
            raise Refused(401, "authentication required")
        return user

    def _challenge(self) -> None:
        """How a 401 says which credentials would do."""
        schemes = (['Basic realm="qflow"'] if self.web.users else []) + (
            ['Bearer realm="qflow"'] if self.accepts_tokens and self.web.tokens else [])
        for scheme in schemes or ['Basic realm="qflow"']:
            self.add_header("WWW-Authenticate", scheme)

    def _flower_login(self) -> str | None:
        """The user Flower's OAuth login let in (its signed ``user`` cookie), if any."""
        if not self.web.oauth:
            return None
        from flower.utils.authentication import authenticate

        user = self.get_secure_cookie("user")
        name = user.decode() if user else ""
        return name if name and authenticate(self.web.oauth, name) else None

    def get_current_user(self) -> str | None:
        return self.user

    def check_xsrf_cookie(self) -> None:
        """Tornado's own check runs before :meth:`prepare`, ahead of authentication:
        qflow makes its cross-site checks in :meth:`prepare` instead."""

    def _refuse_cross_site(self) -> None:
        site = self.request.headers.get("Sec-Fetch-Site")
        origin = self.request.headers.get("Origin")
        if site and site not in ("same-origin", "none"):
            raise Refused(403, "cross-site request refused")
        if origin and urlsplit(origin).netloc != self.request.host:
            raise Refused(403, "cross-origin request refused")
        if self._bearer() or self._json_body():
            return
        try:
            tornado.web.RequestHandler.check_xsrf_cookie(self)
        except tornado.web.HTTPError:
            raise Refused(403, "request refused: send Content-Type: application/json, a "
                          "bearer token, or the page's _xsrf token") from None

    def _bearer(self) -> bool:
        """Whether the request authenticated with a bearer token."""
        scheme = self.request.headers.get("Authorization", "").strip().partition(" ")[0]
        return self.web.protected and self.accepts_tokens and scheme.lower() == "bearer"

    def _json_body(self) -> bool:
        kind = self.request.headers.get("Content-Type", "")
        return kind.split(";")[0].strip().lower() == "application/json"

    # -- answering -------------------------------------------------------------------
    def write_json(self, obj: Any, status: int = 200) -> None:
        """Answer ``obj`` as JSON; ``<``, ``>`` and ``&`` are escaped so that no value a
        user wrote can close a script element or be sniffed as HTML."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(dumps(obj))

    def compute_etag(self) -> str | None:
        """No ETag (a hash of the whole body) for answers that may not be stored: nothing
        revalidates them, and a run's JSON can be megabytes."""
        if self._headers.get("Cache-Control") == "no-store":
            return None
        return super().compute_etag()

    def fail(self, status: int, message: str) -> None:
        """Stop here and answer ``{"error": message}`` with ``status``."""
        raise Refused(status, message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Refused):
            message = exc.message
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            message = exc.log_message or self._reason
        else:
            message = "internal error (see the server's log)"
        if status_code == 401:
            self._challenge()
        self.write_json({"error": message}, status_code)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object ({} when empty); 400 otherwise."""
        raw = self.request.body.strip()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(400, f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Refused(400, "request body must be a JSON object")
        return body

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` (DB work) in the server's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- pages -----------------------------------------------------------------------
    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def create_template_loader(self, template_path: str) -> tornado.template.Loader:
        """qflow's templates, also inside Flower (whose settings name Flower's)."""
        return tornado.template.Loader(template_path)

    def qflow_static(self, name: str) -> str:
        """The URL of ``qflow/web/static/NAME``."""
        return STATIC_PREFIX + name


def dumps(obj: Any) -> str:
    """JSON safe to embed in HTML: ``<``, ``>`` and ``&`` only ever occur inside strings,
    where their ``\\u`` escapes mean the same."""
    # Every answer is a tree built for it: no need to track containers for cycles.
    text = json.dumps(obj, default=str, check_circular=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
