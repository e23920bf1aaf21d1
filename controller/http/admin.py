"""The admin listener's app (``controller.admin`` in config.yaml; plain HTTP, loopback by default): what a browser on
the demo laptop, or Prometheus, may ask without a switch certificate.

- ``GET /``: a live page of switches, open connections and their streams in flight, answered and closed ones,
  and totals; it follows ``GET /events`` (server-sent events, ``controller/http/live.py``);
- ``GET /connections`` and ``GET /diagnosis``: the same answers as on the TLS port;
- ``GET /metrics``: Prometheus text format (``controller/http/metrics.py``).

Who may ask: with ``controller.admin.token_file``, only a request with that bearer token (``Authorization:
Bearer ...``, or the cookie that ``/?token=...`` sets for a browser, whose EventSource cannot send headers); it is
required off loopback. Without one, only a request naming a loopback host (``Host``): a web page elsewhere that
points its own name at 127.0.0.1 (DNS rebinding) gets 403, not the fleet's records. ``/events`` streams are capped
at ``controller.admin.max_event_clients``: each is a connection and a snapshot five times a second.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from quart import Quart, Response, request

from controller.accounts.connections import ConnectionRegistry
from controller.http import live
from controller.http.accounts import serve_accounts
from controller.http.metrics import Metrics
from dialout.config import ControllerConfig
from dialout.text import printable

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_COOKIE = "dialout_admin"
RETRY_AFTER_S = 5
# The page and its script, one template beside this one; the first snapshot goes in it, so it draws before any
# event. Autoescaped, and the snapshot through tojson, which escapes what could end the <script> early.
PAGE = Environment(
    loader=PackageLoader("controller.http", ""), autoescape=select_autoescape(), undefined=StrictUndefined
).get_template("admin_page.html")


def create_admin_app(  # noqa: C901 - the app's routes and hooks, closures over its state, as Quart has them
    cfg: ControllerConfig,
    registry: ConnectionRegistry,
    metrics: Metrics,
    closing: asyncio.Event,
    token: str | None = None,
) -> Quart:
    """``closing`` is set when the controller stops: open event streams end then. ``token``: the bearer token
    every request must carry (None: loopback hosts only)."""
    app = Quart("dialout-admin")
    watching = 0  # /events streams open now

    @app.before_request
    async def guard() -> Response | None:
        if token is None:
            host = _host_name(request.host)
            if host not in LOOPBACK_HOSTS and host != cfg.admin.host:
                refusal = f"Host {printable(request.host)!r} is not this admin listener's (loopback names only)"
                return _refused(refusal, 403)
            return None
        offered = request.args.get("token") if request.path == "/" else None
        offered = offered or _bearer(request.headers.get("Authorization")) or request.cookies.get(TOKEN_COOKIE)
        if offered is None or not hmac.compare_digest(offered.encode(), token.encode()):
            refused = _refused("this admin listener needs its bearer token (controller.admin.token_file)", 401)
            refused.headers["WWW-Authenticate"] = 'Bearer realm="dialout admin"'
            return refused
        if request.args.get("token") is not None and request.path == "/":  # a browser: a cookie, and a clean URL
            moved = Response("", status=303, headers={"Location": "/", "Cache-Control": "no-store"})
            moved.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
            return moved
        return None

    @app.get("/")
    async def page() -> Response:
        return Response(_page(registry), content_type="text/html; charset=utf-8")

    @app.get("/events")
    async def events() -> Response:
        nonlocal watching
        if watching >= cfg.admin.max_event_clients:
            refused = _refused(
                f"{watching} live pages are open, the most controller.admin.max_event_clients allows", 503
            )
            refused.headers["Retry-After"] = str(RETRY_AFTER_S)
            return refused
        watching += 1

        async def counted() -> AsyncIterator[bytes]:
            nonlocal watching
            try:
                async for event in live.events(registry, closing):
                    yield event
            finally:
                watching -= 1

        response = Response(counted(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-store"
        response.timeout = None  # Quart ends a response after 60 s by default; this one lasts while the page is open
        return response

    serve_accounts(app, cfg, registry)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.text(), content_type=PROMETHEUS_TEXT)

    return app


def _refused(error: str, status: int) -> Response:
    return Response(json.dumps({"error": error}), status=status, content_type="application/json")


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8444`` is ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _bearer(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _page(registry: ConnectionRegistry) -> str:
    return PAGE.render(initial=live.message(live.snapshot(registry), time.monotonic()))
