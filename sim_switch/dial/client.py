"""A one-shot run: one httpx client, the scenario's pings fired at once, every one traced and accounted for.

``attempt_ping`` (one try of one ping) and ``finish_run`` (what every run does at its end) serve the persistent
session too.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx

from dialout.config import OneShot
from dialout.loop_lag import LoopLag
from sim_switch.dial.controller_view import ask_controller
from sim_switch.dial.failures import (
    classify,
    probe_client_certificate,
    probe_scheme,
    refused_with,
)
from sim_switch.dial.keepalive import socket_options
from sim_switch.dial.settings import Outgoing, RunSettings
from sim_switch.dial.streams import StreamPool
from sim_switch.dial.tracing import PingTrace, Tracer
from sim_switch.model.events import Diagnosed, FirstByte, GetConnection, PingFailed, Probe, Probing, TraceEvent
from sim_switch.model.failures import Failure, FailureKind
from sim_switch.model.results import ControllerView, Failover, PingResult, RunResult, format_interval
from sim_switch.wire.transport import DialOptions, SwitchTransport

# A connect that takes longer than this on a network of one machine is not going to succeed.
CONNECT_TIMEOUT_S = 10.0
# httpx's own default limits, stated here because an HTTP/1.1 run keeps as many pings in flight as connections.
MAX_CONNECTIONS = 100
CLIENT_LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20)


async def run_scenario(settings: RunSettings, controller_url: str, emit: Callable[[TraceEvent], None]) -> RunResult:
    """Fire the scenario's pings at once, then (``settings.ask``) ask the controller what it saw of them."""
    scenario = settings.scenario
    if not isinstance(scenario.kind, OneShot):
        raise ValueError(f"scenario {scenario.name!r} is a {scenario.kind.mode} scenario, not a one-shot run")
    tracer = Tracer(emit, frames=settings.trace_frames)
    pool = new_pool(settings, tracer)
    try:

        async def ping(number: int, interval_s: float) -> Attempt:
            asked_at_s = tracer.now_s()
            async with pool.slot() as client:
                outgoing = Outgoing(number, interval_s, asked_at_s)
                return await attempt_ping(client, tracer, settings, controller_url, outgoing)

        async with LoopLag.of_running_loop().running(), asyncio.TaskGroup() as group:
            tasks = [group.create_task(ping(n, interval_s)) for n, interval_s in enumerate(scenario.kind.pings_s, 1)]
        attempts = [task.result() for task in tasks]
        return await finish_run(pool.primary, tracer, settings, controller_url, attempts)
    finally:
        await pool.aclose()


def new_pool(settings: RunSettings, tracer: Tracer) -> StreamPool:
    """The run's client. HTTP/2 (over TLS with ALPN, or h2c with prior knowledge for an ``http://`` URL, RFC 9113
    section 3.3) goes on the switch's own transport (``sim_switch.wire``), with ``tracer`` hearing of its frames;
    HTTP/1.1 on httpx's."""
    scenario, ssl_context, request_timeout_s = settings.scenario, settings.ssl_context, settings.request_timeout_s
    timeout = httpx.Timeout(request_timeout_s, connect=min(CONNECT_TIMEOUT_S, request_timeout_s))
    options = socket_options(settings.switch.keepalive)

    def new_http1_client() -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(
            http1=True,
            http2=False,
            verify=ssl_context or False,
            trust_env=False,
            limits=CLIENT_LIMITS,
            socket_options=options,
            local_address=settings.source_address,
        )
        return httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout)

    if not scenario.http2:
        return StreamPool(new_http1_client, limit=MAX_CONNECTIONS)
    dial = DialOptions(ssl_context, min(CONNECT_TIMEOUT_S, request_timeout_s), tuple(options), settings.source_address)
    wire = SwitchTransport(dial, scenario.streams, tracer)
    return StreamPool(lambda: httpx.AsyncClient(transport=wire, trust_env=False, timeout=timeout), wire)


@dataclass(frozen=True)
class Attempt:
    """One try of one ping: its result (``result.failure`` says why it failed, if it did), and whether the
    controller answered at all (a refusing status is an answer)."""

    result: PingResult
    answered: bool


@dataclass(frozen=True)
class LinkHistory:
    """What a persistent session's link went through: how often it came back, and at which other controllers."""

    reconnects: int = 0
    failovers: tuple[Failover, ...] = ()


async def finish_run(
    client: httpx.AsyncClient,
    tracer: Tracer,
    settings: RunSettings,
    controller_url: str,
    attempts: list[Attempt],
    history: LinkHistory = LinkHistory(),
) -> RunResult:
    """Stop the clock, ask the controller what it saw, explain a refused certificate, and account every ping."""
    wall_time_s = tracer.now_s()
    pings = [attempt.result for attempt in attempts]
    ssl_context, reconnects = settings.ssl_context, history.reconnects
    view: ControllerView | None = None
    if settings.ask and any(ping.status is not None for ping in pings):
        # A controller that restarted during the run has no record of the connections before it.
        # In cleartext the controller knows no switch by name (no certificate): ask for every connection.
        asked_as = settings.switch_id if ssl_context is not None else None
        view = await ask_controller(client, controller_url, asked_as, tracer, pings, forgot_earlier=reconnects > 0)
    if _failed_at_first_bytes(pings, controller_url):
        pings = await _diagnose_scheme(pings, controller_url, tracer)
    refused = not any(ping.ok for ping in pings) and any(_broke_after_handshake(ping.failure) for ping in pings)
    if refused and ssl_context is not None:
        pings = await _diagnose_refused_certificate(pings, controller_url, ssl_context, tracer)
    for ping in pings:
        record = tracer.connections[ping.connection - 1] if ping.connection else None
        if record is not None:
            record.pings.append(ping.number)
    return RunResult(
        settings.scenario,
        controller_url,
        tuple(pings),
        tuple(tracer.connections),
        wall_time_s,
        view,
        reconnects,
        history.failovers,
    )


async def attempt_ping(
    client: httpx.AsyncClient, tracer: Tracer, settings: RunSettings, controller_url: str, outgoing: Outgoing
) -> Attempt:
    """One try of one ping, never raising: every outcome is an Attempt. The request timeout counts from now: it
    is about the controller's answer, not the wait for a free stream (``Outgoing.asked_at_s``). Its result says how
    late this process's loop ran meanwhile (``loop_lag_s``), when the run samples it (``LoopLag.running``)."""
    began = time.monotonic()
    attempt = await _attempt_ping(client, tracer, settings, controller_url, outgoing)
    lag_s = LoopLag.of_running_loop().worst(began).worst_s
    return replace(attempt, result=replace(attempt.result, loop_lag_s=lag_s))


async def _attempt_ping(
    client: httpx.AsyncClient, tracer: Tracer, settings: RunSettings, controller_url: str, outgoing: Outgoing
) -> Attempt:
    number, interval_s, asked_at_s = outgoing.number, outgoing.interval_s, outgoing.asked_at_s
    ping, request_timeout_s = settings.request, settings.request_timeout_s
    started_s = tracer.now_s() if asked_at_s is None else asked_at_s
    trace = tracer.for_ping(number, started_s, controller_url)
    url = controller_url.rstrip("/") + ping.target(format_interval(interval_s), number)
    tracer.emit(GetConnection(at_s=started_s, ping=number, method=ping.method, url=url))
    result = PingResult(
        number=number, interval_s=interval_s, elapsed_s=0.0, started_at_s=started_s, controller=controller_url
    )
    try:
        async with asyncio.timeout(request_timeout_s):
            request = client.build_request(
                ping.method,
                url,
                headers=ping.headers,
                extensions={"trace": trace},
                content=None if ping.body is None else ping.body.encode(),
            )
            response = await client.send(request, stream=True)
            try:
                record = tracer.connection_of(response.extensions.get("network_stream"))
                trace.connection = record.number if record else None
                result = replace(
                    result,
                    stream_wait_s=trace.stream_wait_s,
                    status=response.status_code,
                    http_version=response.http_version,
                    connection=record.number if record else None,
                    local_port=record.local_port if record else None,
                    stream_id=response.extensions.get("stream_id"),
                    headers_sent_at_s=trace.headers_sent_at_s,
                )
                tracer.emit(
                    FirstByte(
                        at_s=trace.first_byte_at_s if trace.first_byte_at_s is not None else tracer.now_s(),
                        ping=number,
                        connection=result.connection,
                        status=response.status_code,
                        http_version=response.http_version,
                        stream_id=result.stream_id,
                    )
                )
                body = await response.aread()
            finally:
                await response.aclose()
    except Exception as exc:  # every failure becomes this ping's result; the run goes on
        failure = classify(exc, trace.headers_sent_at_s is not None, request_timeout_s)
        tracer.emit(PingFailed(at_s=tracer.now_s(), ping=number, connection=result.connection, failure=failure))
        finished_s = tracer.now_s()
        failed = replace(
            _timed(result, trace), elapsed_s=finished_s - started_s, finished_at_s=finished_s, failure=failure
        )
        return Attempt(failed, answered=False)
    # The last byte as read off the wire where the transport knows it (HTTP/2), else now.
    finished_s = trace.last_byte_at_s if trace.last_byte_at_s is not None else tracer.now_s()
    refusal = None if response.status_code in ping.statuses else refused_with(response.status_code, _error_text(body))
    if refusal:
        tracer.emit(PingFailed(at_s=tracer.now_s(), ping=number, connection=result.connection, failure=refusal))
    answered = replace(
        _timed(result, trace), elapsed_s=finished_s - started_s, finished_at_s=finished_s, failure=refusal
    )
    return Attempt(answered, answered=True)


def _timed(result: PingResult, trace: PingTrace) -> PingResult:
    """The times the trace learnt, for the waterfall."""
    return replace(
        result,
        tls_started_at_s=trace.tls_started_at_s,
        tls_done_at_s=trace.tls_done_at_s,
        first_byte_at_s=trace.first_byte_at_s,
        headers_sent_at_s=trace.headers_sent_at_s,
    )


def _error_text(body: bytes) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    text = str(message) if message else body[:200].decode("utf-8", "replace")
    return " ".join(text.split())  # one line, whatever the body's layout (an HTML error page)


_BROKEN = frozenset(
    {FailureKind.CONNECTION_BROKE, FailureKind.PROTOCOL_ERROR, FailureKind.GOAWAY, FailureKind.STREAM_RESET}
)


def _broke_after_handshake(failure: Failure | None) -> bool:
    return failure is not None and failure.kind in _BROKEN


# How a wrong scheme looks from here: https:// to plain HTTP fails the handshake ("wrong version number"); http://
# to a TLS port has the connection closed at the first request bytes.
_SCHEME_SIGNS = {
    "https": frozenset({FailureKind.CONNECT_FAILED, FailureKind.TLS_FAILED}),
    "http": frozenset({FailureKind.PROTOCOL_ERROR, FailureKind.CONNECTION_BROKE}),
}


def _failed_at_first_bytes(pings: list[PingResult], controller_url: str) -> bool:
    signs = _SCHEME_SIGNS.get(urlsplit(controller_url).scheme, frozenset())
    return all(ping.status is None and ping.failure is not None and ping.failure.kind in signs for ping in pings)


async def _diagnose_scheme(pings: list[PingResult], controller_url: str, tracer: Tracer) -> list[PingResult]:
    tracer.emit(Probing(at_s=tracer.now_s(), probe=Probe.SCHEME))
    found = await probe_scheme(controller_url)
    if found is None:
        return pings
    tracer.emit(Diagnosed(at_s=tracer.now_s(), failure=found))
    return _relabelled(pings, found)


def _relabelled(pings: list[PingResult], cause: Failure) -> list[PingResult]:
    """Every failed ping's failure as ``cause`` found by a probe; whether it was safe to retry stays its own."""
    return [
        replace(ping, failure=replace(ping.failure, kind=cause.kind, detail=cause.detail)) if ping.failure else ping
        for ping in pings
    ]


async def _diagnose_refused_certificate(
    pings: list[PingResult], controller_url: str, ssl_context: ssl.SSLContext, tracer: Tracer
) -> list[PingResult]:
    parts = urlsplit(controller_url)
    host, port = parts.hostname or "localhost", parts.port or 443
    tracer.emit(Probing(at_s=tracer.now_s(), probe=Probe.CLIENT_CERTIFICATE))
    refusal = await probe_client_certificate(host, port, ssl_context)
    if refusal is None:
        return pings
    tracer.emit(Diagnosed(at_s=tracer.now_s(), failure=refusal))
    return _relabelled(pings, refusal)
