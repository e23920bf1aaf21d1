"""The controller's HTTP surface: ``GET /ping?interval=SECONDS``, ``GET /connections``, JSON errors for the rest.

Every request is tied to the switch that sent it: the CN of the client certificate its connection verified (the
ASGI TLS extension), never anything the request says about itself. A CN that is not in the fleet gets 403.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from quart import Quart, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from controller.asgi_tls import CONNECTION_EXTENSION, ConnectionScopeMiddleware
from controller.config import ControllerConfig
from controller.connections import ConnectionRegistry, ControllerConnection, format_address, utc_now
from controller.interval import IntervalError, parse_interval

logger = logging.getLogger(__name__)


def create_app(cfg: ControllerConfig, registry: ConnectionRegistry) -> Quart:
    app = Quart(__name__)
    app.asgi_app = ConnectionScopeMiddleware(app.asgi_app)  # type: ignore[method-assign]  # Quart's documented way
    known_switches = frozenset(switch for switch in cfg.switches if "*" not in switch)
    known_patterns = tuple(switch for switch in cfg.switches if "*" in switch)
    max_interval_s = cfg.max_interval_s

    @app.before_request
    async def identify() -> tuple[Response, int] | None:
        g.started = time.perf_counter()
        g.received_at = utc_now()
        extensions = request.scope.get("extensions") or {}
        g.switch = _switch_of(extensions)
        g.connection, g.stream = _connection_of(extensions)
        # Log arguments are built only when the line will be written: this runs on every request, -q or not.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s %s: received", _who(), request.method, request.path)
        # Hypercorn's own limits bite only on a request that arrives in pieces (HTTP/1.1) or on the whole
        # connection (HTTP/2); this holds every request to the configured size and answers 431 (RFC 6585).
        size = _header_bytes(request.scope)
        if size > cfg.max_header_bytes:
            return jsonify({"error": f"request line and headers are {size} bytes, over max_header_bytes "
                                     f"({cfg.max_header_bytes})"}), 431  # fmt: skip
        if g.switch is None and cfg.client_certs_optional:
            return None  # bench mode: an anonymous client (h2load) is served, on loopback only
        if g.switch is None:
            return jsonify({"error": "no verified client certificate on this connection"}), 403
        if g.switch not in known_switches and not any(fnmatch.fnmatchcase(g.switch, p) for p in known_patterns):
            known = ", ".join(cfg.switches)
            return jsonify({"error": f"switch {g.switch!r} is not in this controller's fleet (known: {known})"}), 403
        return None

    @app.after_request
    async def log_request(response: Response) -> Response:
        # A connection refused before it reached the app (TLS, framing) never gets here.
        if not logger.isEnabledFor(logging.INFO):
            return response
        query = request.query_string.decode("latin-1")
        logger.info(
            "%s %s HTTP/%s %s %s%s -> %d in %.3f s",
            _who(), _peer(), request.http_version, request.method, request.path, f"?{query}" if query else "",
            response.status_code, time.perf_counter() - g.started,
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
            "switch": g.switch,
            "connection": g.connection.id if g.connection else None,
            "stream": g.stream,
            "received_at": g.received_at,
            "responded_at": utc_now(),
        }
        return jsonify(body), 200

    @app.get("/connections")
    async def connections() -> Response:
        switch = request.args.get("switch")
        return jsonify(
            {
                "connections": [connection.to_json() for connection in registry.connections(switch)],
                "switches": {
                    name: {"connections": t.connections, "streams": t.streams, "peak_in_flight": t.peak_in_flight}
                    for name, t in registry.totals().items()
                    if switch is None or name == switch
                },
            }
        )

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify({"error": f"{status} {exc.name}: {request.method} {request.path}"}), status

    return app


def _header_bytes(scope: Mapping[str, Any]) -> int:
    """About what the request line and headers took on the wire (HTTP/1.1 framing)."""
    line = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


def _switch_of(extensions: dict[str, Any]) -> str | None:
    chain = extensions.get("tls", {}).get("client_cert_chain") or []
    return _common_name(chain[0]) if chain else None


@functools.lru_cache(maxsize=1024)
def _common_name(pem: str) -> str | None:
    """The CN of a PEM certificate; parsed once per distinct certificate, not once per request."""
    names = x509.load_pem_x509_certificate(pem.encode()).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _connection_of(extensions: dict[str, Any]) -> tuple[ControllerConnection | None, int | None]:
    entry = extensions.get(CONNECTION_EXTENSION)
    return (entry["connection"], entry["stream"]) if entry else (None, None)


def _who() -> str:
    connection = f"conn #{g.connection.id} stream {g.stream}" if g.connection else "conn ?"
    return f"{g.switch or '(no certificate)'} {connection}"


def _peer() -> str:
    client = request.scope.get("client")
    return format_address(str(client[0]), int(client[1])) if client else "unknown"
