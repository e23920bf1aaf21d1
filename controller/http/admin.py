"""The admin listener's app (``controller.admin`` in config.yaml; plain HTTP, loopback by default): what a browser on
the demo laptop, or Prometheus, may ask without a switch certificate.

- ``GET /``: a live page of switches, open connections and their streams in flight, answered and closed ones,
  and totals; it follows ``GET /events`` (server-sent events, ``controller/http/live.py``);
- ``GET /connections`` and ``GET /diagnosis``: the same answers as on the TLS port;
- ``GET /metrics``: Prometheus text format (``controller/http/metrics.py``).
"""

from __future__ import annotations

import asyncio
import time

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from quart import Quart, Response

from controller.accounts.connections import ConnectionRegistry
from controller.http import live
from controller.http.accounts import serve_accounts
from controller.http.metrics import Metrics
from dialout.config import ControllerConfig

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# The page and its script, one template beside this one; the first snapshot goes in it, so it draws before any
# event. Autoescaped, and the snapshot through tojson, which escapes what could end the <script> early.
PAGE = Environment(
    loader=PackageLoader("controller.http", ""), autoescape=select_autoescape(), undefined=StrictUndefined
).get_template("admin_page.html")


def create_admin_app(
    cfg: ControllerConfig, registry: ConnectionRegistry, metrics: Metrics, closing: asyncio.Event
) -> Quart:
    """``closing`` is set when the controller stops: open event streams end then."""
    app = Quart("dialout-admin")

    @app.get("/")
    async def page() -> Response:
        return Response(_page(registry), content_type="text/html; charset=utf-8")

    @app.get("/events")
    async def events() -> Response:
        response = Response(live.events(registry, closing), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-store"
        response.timeout = None  # Quart ends a response after 60 s by default; this one lasts while the page is open
        return response

    serve_accounts(app, cfg, registry)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.text(), content_type=PROMETHEUS_TEXT)

    return app


def _page(registry: ConnectionRegistry) -> str:
    return PAGE.render(initial=live.message(live.snapshot(registry), time.monotonic()))
