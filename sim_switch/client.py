"""Running a scenario: one httpx client, the scenario's pings fired at once, every one traced and accounted for."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

import httpx

from controller.config import Scenario
from sim_switch.controller_view import ask_controller
from sim_switch.diagnosis import explain, probe_client_certificate
from sim_switch.results import ControllerView, PingResult, RunResult, format_interval
from sim_switch.tracing import TraceEvent, Tracer

# A connect that takes longer than this on a network of one machine is not going to succeed.
CONNECT_TIMEOUT_S = 10.0


async def run_scenario(
    scenario: Scenario,
    controller_url: str,
    ssl_context: ssl.SSLContext,
    request_timeout_s: float,
    emit: Callable[[TraceEvent], None],
    switch_id: str,
) -> RunResult:
    """Fire the scenario's pings at once, then ask the controller what it saw of them (as ``switch_id``)."""
    tracer = Tracer(emit)
    timeout = httpx.Timeout(request_timeout_s, connect=min(CONNECT_TIMEOUT_S, request_timeout_s))
    async with httpx.AsyncClient(
        http1=True, http2=scenario.http2, verify=ssl_context, trust_env=False, timeout=timeout
    ) as client:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_ping(client, tracer, controller_url, number, interval_s, request_timeout_s))
                for number, interval_s in enumerate(scenario.pings_s, start=1)
            ]
        wall_time_s = tracer.now_s()
        outcomes = [task.result() for task in tasks]
        pings = [ping for ping, _ in outcomes]
        view: ControllerView | None = None
        if any(ping.status is not None for ping in pings):
            view = await ask_controller(client, controller_url, switch_id, tracer, pings)
    if not any(ping.ok for ping in pings) and any(_broke_after_handshake(exc) for _, exc in outcomes):
        pings = await _diagnose_refused_certificate(pings, controller_url, ssl_context, tracer)
    for ping in pings:
        record = tracer.connections[ping.connection - 1] if ping.connection else None
        if record is not None:
            record.pings.append(ping.number)
    return RunResult(scenario, controller_url, tuple(pings), tuple(tracer.connections), wall_time_s, view)


async def _ping(
    client: httpx.AsyncClient, tracer: Tracer, controller_url: str, number: int, interval_s: float,
    request_timeout_s: float,
) -> tuple[PingResult, BaseException | None]:  # fmt: skip
    """One ping, never raising: every outcome is a PingResult (and the exception, for diagnosis)."""
    trace = tracer.for_ping(number)
    url = f"{controller_url.rstrip('/')}/ping?interval={format_interval(interval_s)}"
    started_s = tracer.now_s()
    tracer.event(number, f"get connection: GET {url}")
    result = PingResult(number=number, interval_s=interval_s, elapsed_s=0.0)
    try:
        async with asyncio.timeout(request_timeout_s):
            request = client.build_request("GET", url, extensions={"trace": trace})
            response = await client.send(request, stream=True)
            try:
                record = tracer.connection_of(response.extensions.get("network_stream"))
                trace.connection = record.number if record else None
                result = replace(
                    result,
                    status=response.status_code,
                    http_version=response.http_version,
                    connection=record.number if record else None,
                    local_port=record.local_port if record else None,
                    stream_id=response.extensions.get("stream_id"),
                    headers_sent_at_s=trace.headers_sent_at_s,
                )
                on = f"connection #{record.number}" if record else "an unknown connection"
                stream = f" stream {result.stream_id}" if result.stream_id else ""
                tracer.event(
                    number, f"first response byte: {response.status_code} {response.http_version} on {on}{stream}",
                    result.connection, at_s=trace.first_byte_at_s,
                )  # fmt: skip
                body = await response.aread()
            finally:
                await response.aclose()
    except Exception as exc:  # every failure becomes this ping's result; the run goes on
        reason = explain(exc, request_timeout_s)
        tracer.event(number, f"failed: {reason}", result.connection)
        finished_s = tracer.now_s()
        return replace(result, elapsed_s=finished_s - started_s, finished_at_s=finished_s, error=reason), exc
    finished_s = tracer.now_s()
    refusal = None if response.status_code == 200 else f"HTTP {response.status_code}: {_error_text(body)}"
    if refusal:
        tracer.event(number, f"failed: {refusal}", result.connection)
    return replace(result, elapsed_s=finished_s - started_s, finished_at_s=finished_s, error=refusal), None


def _error_text(body: bytes) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else body[:200].decode("utf-8", "replace")


def _broke_after_handshake(exc: BaseException | None) -> bool:
    return isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError)


async def _diagnose_refused_certificate(
    pings: list[PingResult], controller_url: str, ssl_context: ssl.SSLContext, tracer: Tracer
) -> list[PingResult]:
    parts = urlsplit(controller_url)
    host, port = parts.hostname or "localhost", parts.port or 443
    tracer.event(None, "every ping lost its connection after the TLS handshake: dialing once more to read why")
    reason = await probe_client_certificate(host, port, ssl_context)
    if reason is None:
        return pings
    tracer.event(None, f"diagnosis: {reason}")
    return [replace(ping, error=reason) if ping.error else ping for ping in pings]
