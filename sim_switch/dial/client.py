"""A one-shot run: one httpx client, the scenario's pings fired at once, every one traced and accounted for.

``attempt_ping`` (one try of one ping) and ``finish_run`` (what every run does at its end) serve the persistent
session too.
"""

from __future__ import annotations

import asyncio
import json
import ssl
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
from sim_switch.dial.ping_requests import PingRequests
from sim_switch.dial.settings import Outgoing, RunSettings
from sim_switch.dial.streams import StreamPool
from sim_switch.dial.tracing import PingTrace, Tracer
from sim_switch.model.events import Diagnosed, FirstByte, GetConnection, PingFailed, Probe, Probing, TraceEvent
from sim_switch.model.failures import Failure, FailureKind
from sim_switch.model.results import ControllerView, Failover, PingResult, RunResult
from sim_switch.wire.transport import DialOptions, SwitchTransport

# A connect that takes longer than this on a network of one machine is not going to succeed.
CONNECT_TIMEOUT_S = 10.0
# httpx's own default limits, stated here because an HTTP/1.1 run keeps as many pings in flight as connections.
MAX_CONNECTIONS = 100
CLIENT_LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20)
# Pings whose tasks start in one loop turn. Each task's first step (to the transport, to wait for a stream) costs
# ~25 us: 5,000 started in one turn held the first one's dial back for 120 ms, the controller idle all that time.
LAUNCHED_A_TURN = 64


async def run_scenario(settings: RunSettings, controller_url: str, emit: Callable[[TraceEvent], None]) -> RunResult:
    """Fire the scenario's pings at once, then (``settings.ask``) ask the controller what it saw of them."""
    scenario = settings.scenario
    if not isinstance(scenario.kind, OneShot):
        raise ValueError(f"scenario {scenario.name!r} is a {scenario.kind.mode} scenario, not a one-shot run")
    tracer = Tracer(emit, frames=settings.trace_frames)
    pool = new_pool(settings, tracer)
    try:

        async def ping(number: int, interval_s: float, asked_at_s: float) -> Attempt:
            async with pool.slot():
                outgoing = Outgoing(number, interval_s, asked_at_s)
                return await attempt_ping(pool, tracer, settings, controller_url, outgoing)

        lag = LoopLag.of_running_loop()
        async with lag.running():
            async with asyncio.TaskGroup() as group:
                asked_at_s = tracer.now_s()  # all at once: each one's time runs from here
                tasks = []
                for n, interval_s in enumerate(scenario.kind.pings_s, 1):
                    tasks.append(group.create_task(ping(n, interval_s, asked_at_s)))
                    if n % LAUNCHED_A_TURN == 0:
                        await asyncio.sleep(0)  # the next turn: the first ones dial and go out meanwhile
            tracer.stop_clock()
            attempts = await with_loop_lag([task.result() for task in tasks], tracer, lag)
        return await finish_run(pool.primary, tracer, settings, controller_url, attempts)
    finally:
        await pool.aclose()


async def with_loop_lag(attempts: list[Attempt], tracer: Tracer, lag: LoopLag) -> list[Attempt]:
    """Each attempt with the worst lag of this process's loop while its ping was out (``loop_lag_s``): what its
    times may be late by. Taken once the run is over and the sampler has woken again, so that a loop turn that
    made the last answers late is counted (it is measured only once it ends), and once a run, not once a ping."""
    await lag.sampled()
    history = lag.history()
    return [
        Attempt(
            attempt.result.with_loop_lag(
                history.held_during(
                    tracer.monotonic_of(attempt.result.started_at_s or 0.0),
                    tracer.monotonic_of(attempt.result.finished_at_s or tracer.now_s()),
                )
            ),
            attempt.answered,
        )
        for attempt in attempts
    ]


def new_pool(settings: RunSettings, tracer: Tracer) -> StreamPool:
    """The run's client. HTTP/2 (over TLS with ALPN, or h2c with prior knowledge for an ``http://`` URL, RFC 9113
    section 3.3) goes on the switch's own transport (``sim_switch.wire``), with ``tracer`` hearing of its frames;
    HTTP/1.1 on httpx's."""
    scenario, ssl_context, request_timeout_s = settings.scenario, settings.ssl_context, settings.request_timeout_s
    timeout = httpx.Timeout(request_timeout_s, connect=min(CONNECT_TIMEOUT_S, request_timeout_s))
    options = socket_options(settings.switch.keepalive)

    connect_timeout_s = min(CONNECT_TIMEOUT_S, request_timeout_s)
    requests = PingRequests(settings.request, connect_timeout_s)

    def new_client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout)

    def new_http1_transport() -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(
            http1=True,
            http2=False,
            verify=ssl_context or False,
            trust_env=False,
            limits=CLIENT_LIMITS,
            socket_options=options,
            local_address=settings.source_address,
        )

    if not scenario.http2:
        return StreamPool(new_http1_transport, new_client, requests, request_timeout_s, limit=MAX_CONNECTIONS)
    dial = DialOptions(ssl_context, connect_timeout_s, tuple(options), settings.source_address)
    wire = SwitchTransport(dial, scenario.streams, tracer)
    return StreamPool(lambda: wire, new_client, requests, request_timeout_s)


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
    """Stop the clock (if the run has not: ``Tracer.stop_clock``), ask the controller what it saw, explain a
    refused certificate, and account every ping."""
    wall_time_s = tracer.stop_clock()
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
    pool: StreamPool, tracer: Tracer, settings: RunSettings, controller_url: str, outgoing: Outgoing
) -> Attempt:
    """One try of one ping, on the pool's transport, never raising: every outcome is an Attempt. The request
    timeout counts from now: it is about the controller's answer, not the wait for a free stream
    (``Outgoing.asked_at_s``). How late this process's loop ran meanwhile is the run's to say, at its end
    (``with_loop_lag``)."""
    number, interval_s = outgoing.number, outgoing.interval_s
    started_s = tracer.now_s() if outgoing.asked_at_s is None else outgoing.asked_at_s
    trace = tracer.for_ping(number, started_s, controller_url)
    url = pool.requests.url(controller_url, interval_s, number)
    tracer.emit(GetConnection(at_s=started_s, ping=number, method=settings.request.method, url=url))
    answer = _Answer()
    failure: Failure | None = None
    answered = False  # the controller answered, whatever it said (a refusing status is an answer)
    try:
        async with pool.deadlines.bound():  # the request timeout, as asyncio.timeout(settings.request_timeout_s)
            await _send(pool, url, trace, tracer, answer)
    except Exception as exc:  # every failure becomes this ping's result; the run goes on
        failure = classify(exc, trace.headers_sent_at_s is not None, settings.request_timeout_s)
        tracer.emit(PingFailed(at_s=tracer.now_s(), ping=number, connection=answer.connection, failure=failure))
        finished_s = tracer.now_s()
    else:
        answered = True
        # The last byte as read off the wire where the transport knows it (HTTP/2), else now.
        finished_s = trace.last_byte_at_s if trace.last_byte_at_s is not None else tracer.now_s()
        if answer.status is not None and answer.status not in settings.request.statuses:
            failure = refused_with(answer.status, _error_text(answer.body))
            tracer.emit(PingFailed(at_s=tracer.now_s(), ping=number, connection=answer.connection, failure=failure))
    result = PingResult(
        number=number,
        interval_s=interval_s,
        elapsed_s=finished_s - started_s,
        status=answer.status,
        http_version=answer.http_version,
        connection=answer.connection,
        stream_id=answer.stream_id,
        local_port=answer.local_port,
        headers_sent_at_s=trace.headers_sent_at_s,
        finished_at_s=finished_s,
        started_at_s=started_s,
        tls_started_at_s=trace.tls_started_at_s,
        tls_done_at_s=trace.tls_done_at_s,
        first_byte_at_s=trace.first_byte_at_s,
        failure=failure,
        stream_wait_s=trace.stream_wait_s if answer.status is not None else None,
        controller=controller_url,
    )
    return Attempt(result, answered=answered)


class _Answer:
    """What came back of one ping, as it comes (a failure half-way keeps what was known by then)."""

    __slots__ = ("body", "connection", "http_version", "local_port", "status", "stream_id")

    def __init__(self) -> None:
        self.status: int | None = None
        self.http_version: str | None = None
        self.connection: int | None = None
        self.local_port: int | None = None
        self.stream_id: int | None = None
        self.body = b""


async def _send(pool: StreamPool, url: str, trace: PingTrace, tracer: Tracer, answer: _Answer) -> None:
    """The ping's request on the pool's transport (httpx's transport seam: ``ping_requests`` says why), its answer
    read whole as it crossed the wire."""
    response = await pool.pings.handle_async_request(pool.requests.request(url, trace))
    try:
        record = tracer.connection_of(response.extensions.get("network_stream"))
        trace.connection = answer.connection = record.number if record else None
        answer.local_port = record.local_port if record else None
        answer.stream_id = response.extensions.get("stream_id")
        answer.http_version = response.http_version
        tracer.emit(
            FirstByte(
                at_s=trace.first_byte_at_s if trace.first_byte_at_s is not None else tracer.now_s(),
                ping=trace.ping,
                connection=answer.connection,
                status=response.status_code,
                http_version=answer.http_version,
                stream_id=answer.stream_id,
            )
        )
        answer.status = response.status_code
        body = response.stream
        assert isinstance(body, httpx.AsyncByteStream)  # an async transport's
        answer.body = b"".join([chunk async for chunk in body])
    finally:
        await response.aclose()


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
