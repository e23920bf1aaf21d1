"""The controller's HTTP surface: ``GET /ping?interval=SECONDS``, ``GET /connections``, JSON errors for the rest.

Every request is tied to the switch that sent it: the CN of the client certificate its connection verified (the
ASGI TLS extension), never anything the request says about itself. A CN that is not in the fleet gets 403.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from quart import Quart, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from controller.accounts.connections import ConnectionRegistry, ControllerConnection, StreamSpan, stream_name
from controller.accounts.forwarded import ProxyPolicy
from controller.http.accounts import serve_accounts
from controller.http.interval import IntervalError, parse_interval
from controller.http.metrics import Metrics
from controller.http.quart_seam import SeamQuart
from controller.server.asgi_tls import CONNECTION_EXTENSION, ConnectionScopeMiddleware
from dialout.config import ControllerConfig
from dialout.errors import DialoutError
from dialout.refusals import Refusal, did_you_mean, listed, words
from dialout.text import format_address, printable, utc_now
from dialout.tls_files import controller_files

logger = logging.getLogger(__name__)
ACCOUNTS = frozenset({"/connections", "/diagnosis"})


class Unavailable:
    """503 Service Unavailable with Retry-After for the next pings, when a trial asks for it
    (``python -m controller trials``): what a controller says when it sheds load."""

    def __init__(self) -> None:
        self._pending: list[int] = []  # Retry-After seconds, one per ping to answer so
        # when each 503 went (monotonic), to which target, on which connection (the controller's number)
        self.answered: list[tuple[float, str, int | None]] = []

    def next(self, retry_after_s: int) -> None:
        self._pending.append(retry_after_s)

    @property
    def waiting(self) -> bool:
        """Whether the next ping is to be answered 503."""
        return bool(self._pending)

    def take(self, target: str, connection: int | None) -> int:
        """The Retry-After for the ping to ``target`` on ``connection``, answered 503 now (only when waiting)."""
        self.answered.append((time.monotonic(), target, connection))
        return self._pending.pop(0)


def create_app(  # noqa: C901 - the app's routes and hooks, closures over its state, as Quart has them
    cfg: ControllerConfig,
    registry: ConnectionRegistry,
    metrics: Metrics | None = None,
    unavailable: Unavailable | None = None,
) -> Quart:
    app = SeamQuart(__name__)
    proxies = ProxyPolicy(cfg.trusted_proxies, controller_files(cfg).trust)
    app.asgi_app = ConnectionScopeMiddleware(app.asgi_app, registry, proxies)  # type: ignore[method-assign]
    max_interval_s = cfg.max_interval_s
    own_name = _own_name(cfg)

    @app.before_request
    async def identify() -> tuple[Response, int] | None:
        scope = request.scope
        g.arrival = arrival = _arrival(scope)
        switch = arrival.switch
        # Log arguments are built only when the line will be written: this runs on every request, -q or not.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s %s: received", _who(arrival), request.method, printable(request.path))
        if not scope.get("raw_path", b"/").startswith(b"/"):
            # ping?interval=0 or https://elsewhere/ping: not a path on this server (RFC 9113 section 8.3.1 wants
            # one starting with "/"), whatever a router would make of it.
            return jsonify(
                {"error": "the request target must be a path starting with '/' (e.g. /ping?interval=5)"}
            ), 400
        # Hypercorn's own limits bite only on a request that arrives in pieces (HTTP/1.1) or on the whole
        # connection (HTTP/2); this holds every request to the configured size and answers 431 (RFC 6585).
        size = _header_bytes(scope)
        if size > cfg.max_header_bytes:
            return jsonify(
                {"error": f"request line and headers are {size} bytes, over max_header_bytes ({cfg.max_header_bytes})"}
            ), 431
        if arrival.refusal is not None:  # through a trusted proxy, with a certificate we could not verify
            return refuse(arrival, Refusal.PROXY_UNVERIFIED, arrival.refusal)
        if switch is None and (cfg.client_certs_optional or (arrival.connection and arrival.connection.cleartext)):
            return None  # bench mode (h2load) or the cleartext listener: an anonymous switch, on loopback only
        if switch is None:
            return refuse(arrival, Refusal.NO_CERTIFICATE, "no verified client certificate on this connection")
        if not listed(switch, cfg.switches):
            if request.path in ACCOUNTS and listed(switch, cfg.operators):
                return None  # an operator's certificate, asking what the switches did
            return refuse(arrival, Refusal.NOT_IN_FLEET, _not_in_fleet(switch, cfg.switches, own_name))
        return None

    def refuse(arrival: Arrival, refusal: Refusal, detail: str) -> tuple[Response, int]:
        """403, said once a second per client and kind in the log, kept in the account, and marked on the
        request's stream: the diagnosis does not judge a refused client's requests as its traffic."""
        if arrival.span is not None:
            arrival.span.refused = refusal
        told = f"{detail}. Fix: {words(refusal).fix}"
        host = arrival.connection.peer.host if arrival.connection is not None else "unknown"
        registry.refusals.request(host, arrival.switch or "(no certificate)", refusal, told)
        return jsonify({"error": told, "refused": refusal.value}), 403

    @app.after_request
    async def log_request(response: Response) -> Response:
        # A connection refused before it reached the app (TLS, framing) never gets here.
        if not logger.isEnabledFor(logging.INFO):
            return response
        arrival: Arrival = g.arrival
        query = request.query_string.decode("latin-1")
        logger.info(
            "%s %s HTTP/%s %s %s%s -> %d in %.3f s",
            _who(arrival),
            _peer(arrival, request.scope),
            request.http_version,
            request.method,
            printable(request.path),
            f"?{printable(query)}" if query else "",
            response.status_code,
            time.perf_counter() - arrival.started,
        )
        return response

    @app.get("/ping")
    async def ping() -> tuple[Response, int]:
        if unavailable is not None and unavailable.waiting:  # a trial's 503 (nothing to look up on other pings)
            on = g.arrival.connection.id if g.arrival.connection is not None else None
            retry_after_s = unavailable.take(request.full_path.rstrip("?"), on)
            shed = jsonify({"error": "the controller is shedding load (a trial): try again later"})
            shed.headers["Retry-After"] = str(retry_after_s)
            return shed, 503
        try:
            interval_s = parse_interval(request.args.getlist("interval"), max_interval_s)
        except IntervalError as exc:
            return jsonify({"error": str(exc)}), 400
        # The point of the controller: hold the stream open for `interval_s` without holding anything else.
        await asyncio.sleep(interval_s)
        arrival: Arrival = g.arrival
        response = jsonify(
            {
                "interval_s": interval_s,
                "http_version": f"HTTP/{request.http_version}",
                "client": _peer(arrival, request.scope),
                "switch": arrival.switch,
                "connection": arrival.connection.id if arrival.connection else None,
                "stream": arrival.stream,
                "stream_id": arrival.stream_id,
                "received_at": arrival.received_at,
                "responded_at": utc_now(),
            }
        )
        # Quart bounds the sending of every response with asyncio.wait_for, on Python 3.11 a task of its own per
        # request: 7% of this app's instructions per ping (bench/app_cost.py, callgrind). A few hundred bytes need
        # no bound: they wait only on a client that stops reading, at most max_concurrent_streams of them per
        # connection, and only until that connection ends (or the shutdown's graceful_timeout_s).
        response.timeout = None
        if metrics is not None:
            metrics.answered(200, time.perf_counter() - arrival.started - interval_s)
        return response, 200

    if metrics is not None:

        @app.after_request
        async def count_refusals(response: Response) -> Response:
            if response.status_code != 200 and request.path == "/ping":
                metrics.answered(response.status_code, None)
            return response

    def own_records() -> str | None:
        """A switch reads its own records; an operator, every switch's. A request with no certificate got this far
        only on loopback (bench mode, the cleartext listener), where the admin listener answers everything too."""
        switch: str | None = g.arrival.switch
        if switch is None or listed(switch, cfg.operators):
            return None
        return switch

    serve_accounts(app, cfg, registry, own_records)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify({"error": f"{status} {exc.name}: {request.method} {request.path}"}), status

    return app


def _not_in_fleet(switch: str, fleet: tuple[str, ...], own_name: str | None) -> str:
    """Whose certificate it is, as far as the controller can tell, and the names it would have let in."""
    mean = did_you_mean(switch, fleet)
    whose = (
        " (the controller's own certificate, a server's: give the client a switch's)"
        if switch == own_name
        else f" (did you mean {mean}?)"
        if mean
        else ""
    )
    return f"switch {switch!r} is not in this controller's fleet{whose} (known: {', '.join(fleet)})"


def _own_name(cfg: ControllerConfig) -> str | None:
    """The CN of the controller's own certificate: a client that presents it is told so."""
    try:
        leaf = controller_files(cfg).identity.chain()[0]
    except DialoutError:  # not made yet (a test app): nothing to tell
        return None
    names = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _header_bytes(scope: Mapping[str, Any]) -> int:
    """About what the request line and headers took on the wire (HTTP/1.1 framing)."""
    line = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


@dataclass(frozen=True)
class Arrival:
    """Who sent a request, on which connection and stream, and when it arrived: read once per request, kept in
    ``g.arrival`` (each ``g.x`` is a context-local lookup)."""

    switch: str | None  # the CN of the verified client certificate of the connection (behind a proxy: the switch's)
    connection: ControllerConnection | None
    stream: int | None  # its number on the connection: 1, 2, ...
    received_at: str  # UTC, ISO 8601
    started: float  # time.perf_counter(), for the request's duration in the log
    refusal: str | None = None  # why a switch behind a trusted proxy is not believed
    stream_id: int | None = None  # HTTP/2: its stream id on the wire
    span: StreamSpan | None = None  # its stream in the account (the switch's, behind a proxy)


def _arrival(scope: Mapping[str, Any]) -> Arrival:
    entry = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
    if entry is None:  # served without our TCP server (a test app, the bench): nobody known
        return Arrival(None, None, None, utc_now(), time.perf_counter())
    connection: ControllerConnection = entry["connection"]
    return Arrival(
        connection.switch,
        connection,
        entry["stream"],
        utc_now(),
        time.perf_counter(),
        entry["refusal"],
        entry["stream_id"],
        entry["span"],
    )


def _who(arrival: Arrival) -> str:
    stream = stream_name(arrival.stream_id, arrival.stream)
    connection = f"conn #{arrival.connection.id} {stream}" if arrival.connection else "conn ?"
    return f"{printable(arrival.switch) if arrival.switch else '(no certificate)'} {connection}"


def _peer(arrival: Arrival, scope: Mapping[str, Any]) -> str:
    """The switch's address: as its connection has it in the account (behind a TCP balancer, what its PROXY header
    said; behind nginx, what nginx saw), else the socket's."""
    if arrival.connection is not None:
        return str(arrival.connection.peer)
    client = scope.get("client")
    return format_address(str(client[0]), int(client[1])) if client else "unknown"
