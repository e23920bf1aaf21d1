"""The admin listener's app (``controller.admin``, plain HTTP, loopback by default): what a browser on the demo
laptop, or Prometheus, may ask without a switch certificate.

- ``GET /``: an overview of switches, open connections and their streams in flight, and totals;
- ``GET /connections`` and ``GET /diagnosis``: the same answers as on the TLS port;
- ``GET /metrics``: Prometheus text format (``controller/metrics.py``).
"""

from __future__ import annotations

import time
from html import escape

from quart import Quart, Response, jsonify, request

from controller.accounts import connections_answer, diagnosis_answer
from controller.config import ControllerConfig
from controller.connections import ConnectionRegistry, ControllerConnection, plural
from controller.metrics import Metrics

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
RECENT_CLOSED = 10


def create_admin_app(cfg: ControllerConfig, registry: ConnectionRegistry, metrics: Metrics) -> Quart:
    app = Quart("dialout-admin")

    @app.get("/")
    async def overview() -> Response:
        return Response(_overview_html(registry), content_type="text/html; charset=utf-8")

    @app.get("/connections")
    async def connections() -> Response:
        return jsonify(connections_answer(registry, request.args.get("switch")))

    @app.get("/diagnosis")
    async def diagnosis() -> tuple[Response, int]:
        answer, status = diagnosis_answer(cfg, registry, request.args)
        return jsonify(answer), status

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.text(), content_type=PROMETHEUS_TEXT)

    return app


def _overview_html(registry: ConnectionRegistry) -> str:
    recorded = registry.connections()
    open_now = [c for c in recorded if c.closed_at is None]
    closed = [c for c in recorded if c.closed_at is not None][-RECENT_CLOSED:]
    switches = sorted({c.switch or "(no certificate)" for c in open_now})
    now = time.monotonic()
    rows = "".join(_row(c, now) for c in open_now)
    recent = "".join(_row(c, now) for c in reversed(closed))
    head = "<tr><th>conn</th><th>switch</th><th>peer</th><th>ALPN</th><th>streams</th><th>in flight</th></tr>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>dialout controller</title></head><body>'
        f"<h1>dialout controller</h1><p id='totals'>{plural(len(switches), 'switch')} connected, "
        f"{plural(len(open_now), 'open connection')}, {sum(c.in_flight for c in open_now)} streams in flight, "
        f"{registry.opened_total} connections since the start</p>"
        f"<h2>Open connections</h2><table id='open'>{head}{rows}</table>"
        f"<h2>Recently closed</h2><table id='closed'>{head}{recent}</table>"
        "<p><a href='/connections'>/connections</a> · <a href='/diagnosis'>/diagnosis</a> · "
        "<a href='/metrics'>/metrics</a></p></body></html>"
    )


def _row(connection: ControllerConnection, now: float) -> str:
    age = f"{now - connection.opened:.1f} s"
    cells = (f"#{connection.id}", connection.switch or "(no certificate)", connection.peer, connection.alpn or "none",
             str(connection.streams), str(connection.in_flight))  # fmt: skip
    return (
        f"<tr class='connection' data-id='{connection.id}' title='open for {age}'>"
        + "".join(f"<td>{escape(cell)}</td>" for cell in cells)
        + "</tr>"
    )
