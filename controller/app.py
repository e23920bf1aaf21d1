"""The controller's HTTP surface: ``GET /ping?interval=SECONDS`` and JSON errors for everything else."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

from quart import Quart, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from controller.interval import IntervalError, parse_interval

logger = logging.getLogger(__name__)


def create_app(max_interval_s: float) -> Quart:
    app = Quart(__name__)

    @app.before_request
    async def start_clock() -> None:
        g.started = time.perf_counter()
        g.received_at = _utc_now()
        logger.debug("%s HTTP/%s %s %s: received", _peer(), request.http_version, request.method, request.path)

    @app.after_request
    async def log_request(response: Response) -> Response:
        # A request refused before it reached the app (TLS, framing) never gets here; Hypercorn logs those.
        elapsed_s = time.perf_counter() - g.started
        query = request.query_string.decode("latin-1")
        logger.info(
            "%s HTTP/%s %s %s%s -> %d in %.3f s",
            _peer(), request.http_version, request.method, request.path, f"?{query}" if query else "",
            response.status_code, elapsed_s,
        )  # fmt: skip
        return response

    @app.get("/ping")
    async def ping() -> tuple[Response, int]:
        try:
            interval_s = parse_interval(request.args.getlist("interval"), max_interval_s)
        except IntervalError as exc:
            return jsonify({"error": str(exc)}), 400
        # The point of the controller: hold the stream open for `interval_s` without holding anything else.
        await asyncio.sleep(interval_s)
        body = {
            "interval_s": interval_s,
            "http_version": f"HTTP/{request.http_version}",
            "client": _peer(),
            "received_at": g.received_at,
            "responded_at": _utc_now(),
        }
        return jsonify(body), 200

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify({"error": f"{status} {exc.name}: {request.method} {request.path}"}), status

    return app


def _peer() -> str:
    client = request.scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
