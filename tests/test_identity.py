"""The controller knows its switches: identity from the verified certificate, per-connection accounting, and a
verdict that both ends must agree on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Sockets
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from hypercorn.utils import wrap_app

from controller.accounts.connections import ConnectionRegistry
from controller.server.asgi_tls import CONNECTION_EXTENSION, ConnectionScopeMiddleware
from controller.server.serve import hypercorn_config, install_seams, new_registry, server_ssl_context
from dialout.asyncio_seam import count_loop_turns, loop_turn
from dialout.config import ControllerConfig, OneShot, Scenario
from dialout.pki import ca_cert_path, controller_identity, generate_certs, switch_identity
from sim_switch.dial.controller_view import compare
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.results import ConnectionRecord, NoRecord, PingResult, RunResult
from sim_switch.model.verdict import judge
from sim_switch.render.trace import describe_disagreement, describe_view
from tests.attacks import RawH2Client
from tests.conftest import HOSTNAMES
from tests.servers import ControllerProcess, RunningController, run_controller
from tests.switches import async_switch_client, one_shot
from tests.test_curl import curl_pings

HELD_S = 0.1  # long beside a loop turn, short for a test

# --- the adapter, pinned against Hypercorn --------------------------------------------------------------------


async def echo_tls(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """A bare ASGI app that answers with what the scope says about TLS and the connection."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    extensions: dict[str, Any] = dict(scope.get("extensions") or {})
    entry = extensions.get(CONNECTION_EXTENSION) or {}
    body = json.dumps(
        {"tls": extensions.get("tls"), "connection": entry["connection"].id, "stream": entry["stream"]}
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@contextlib.asynccontextmanager
async def serving(app: ASGIFramework, certs_dir: Path) -> AsyncIterator[tuple[str, ConnectionRegistry]]:
    """``app`` behind the controller's seams and middleware on a real Hypercorn: its URL and its account."""
    sock = socket.create_server(("127.0.0.1", 0))
    cfg = ControllerConfig(certs_dir=certs_dir)
    registry = new_registry(cfg)
    config = hypercorn_config(cfg, server_ssl_context(cfg), registry)
    install_seams()
    stop = asyncio.Event()
    wrapped = wrap_app(ConnectionScopeMiddleware(app), config.wsgi_max_body_size, "asgi")
    sockets = Sockets(secure_sockets=[sock], insecure_sockets=[], quic_sockets=[])
    task = asyncio.create_task(worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait))
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}", registry
    finally:
        stop.set()
        await task


@pytest.fixture
async def echo_server(certs_dir: Path) -> AsyncIterator[tuple[str, ConnectionRegistry]]:
    async with serving(echo_tls, certs_dir) as served:
        yield served


async def test_scope_carries_the_asgi_tls_extension(
    echo_server: tuple[str, ConnectionRegistry], certs_dir: Path
) -> None:
    url, registry = echo_server
    async with async_switch_client(certs_dir, "switch-2") as client:
        first = (await client.get(f"{url}/")).json()
        second = (await client.get(f"{url}/")).json()
    tls = first["tls"]
    assert set(tls) == {
        "server_cert",
        "client_cert_chain",
        "client_cert_name",
        "client_cert_error",
        "tls_version",
        "cipher_suite",
    }
    leaf = x509.load_pem_x509_certificate(tls["client_cert_chain"][0].encode())
    assert leaf == x509.load_pem_x509_certificate(switch_identity(certs_dir, "switch-2").cert.read_bytes())
    assert tls["client_cert_name"] == leaf.subject.rfc4514_string()
    assert "CN=switch-2" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)  # the TLS 1.3 suites (RFC 8446 appendix B.4)
    server = x509.load_pem_x509_certificate(tls["server_cert"].encode())
    assert server == x509.load_pem_x509_certificate(controller_identity(certs_dir).cert.read_bytes())
    assert (first["connection"], first["stream"]) == (1, 1)
    assert (second["connection"], second["stream"]) == (1, 2)
    [record] = registry.connections()
    assert (record.switch, record.alpn, record.streams) == ("switch-2", "h2", 2)


async def test_cipher_suite_under_tls12(echo_server: tuple[str, ConnectionRegistry], certs_dir: Path) -> None:
    url, _ = echo_server
    context = client_ssl_context(certs_dir, "switch-1")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with httpx.AsyncClient(http2=True, verify=context, trust_env=False) as client:
        tls = (await client.get(f"{url}/")).json()["tls"]
    assert tls["tls_version"] == 0x0303
    # ECDHE-ECDSA-AES256-GCM-SHA384 or -AES128-: RFC 5289 gives them 0xC02C and 0xC02B.
    assert tls["cipher_suite"] in (0xC02B, 0xC02C, 0xCCA9)


async def test_an_answer_is_timed_when_it_is_written(certs_dir: Path) -> None:
    """The account's answer time is the write's, not the app's last send: the server writes what a loop turn
    gathered at the turn's end, and a loop held in between (here, by the app itself) delays the answer on the wire.
    Timed at the send, the held time was in neither the answer's time nor the loop lag counted up to it, and the
    switch, which read the answer that much later, looked late beside it (a CI run: 80 ms). Another stream is in
    flight meanwhile, as a short ping's long ones are."""
    held_until: list[float] = []
    long_started, long_ends = asyncio.Event(), asyncio.Event()

    async def answer_then_hold(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            await echo_tls(scope, receive, send)
            return
        if scope["path"] == "/long":
            long_started.set()
            await long_ends.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"pong", "more_body": False})
        if scope["path"] != "/long":
            time.sleep(HELD_S)  # the loop held after the answer's last send, before this turn's write
            held_until.append(time.monotonic())

    async with serving(answer_then_hold, certs_dir) as (url, registry), async_switch_client(certs_dir) as client:
        long = asyncio.create_task(client.get(f"{url}/long"))
        await long_started.wait()
        answer = await client.get(f"{url}/short")
        long_ends.set()
        await long
    assert answer.content == b"pong"
    [span] = (span for span in registry.latest_spans(2) if span.path == "/short")
    assert span.answered is not None
    assert span.answered >= held_until[0]


async def test_requests_read_together_on_an_idle_connection_start_in_one_loop_turn(certs_dir: Path) -> None:
    """Hypercorn stops a connection's idle timer at the first request after a pause, and waited for the timer's
    task to end before it looked at the next request read with it: two to five turns of the loop. Under a storm of
    handshakes (10-40 ms a turn), a switch's second ping of a batch began 60-100 ms after its first
    (bench/hostile.py's storm; the victim's p99 was 26 times its own alone)."""
    count_loop_turns()
    turns: list[int | None] = []

    async def note_the_turn(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            await echo_tls(scope, receive, send)
            return
        turns.append(loop_turn())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serving(note_the_turn, certs_dir) as (url, _):
        peer = await RawH2Client.connect(int(url.rsplit(":", 1)[1]), client_ssl_context(certs_dir, "switch-1"))
        assert await peer.answer(peer.request("/first")) == 200  # and then the connection is idle: its timer runs
        together = peer.requests(["/second", "/third", "/fourth"])
        assert [await peer.answer(stream_id) for stream_id in together] == [200, 200, 200]
        await peer.close()
    assert len(turns) == 4
    assert turns[1] == turns[2] == turns[3], turns


# --- identity in the controller's answers -----------------------------------------------------------------------


async def test_two_switches_at_once_are_told_apart(controller: RunningController, certs_dir: Path) -> None:
    async with async_switch_client(certs_dir, "switch-1") as one, async_switch_client(certs_dir, "switch-2") as two:
        answers = await asyncio.gather(
            one.get(f"{controller.url}/ping?interval=0.2"),
            two.get(f"{controller.url}/ping?interval=0.2"),
            one.get(f"{controller.url}/ping?interval=0.2"),
        )
        only_one = (await one.get(f"{controller.url}/connections", params={"switch": "switch-1"})).json()
        own = (await two.get(f"{controller.url}/connections")).json()  # asking for every switch's
    bodies = [answer.json() for answer in answers]
    assert [body["switch"] for body in bodies] == ["switch-1", "switch-2", "switch-1"]
    assert bodies[0]["connection"] == bodies[2]["connection"] != bodies[1]["connection"]
    assert sorted([bodies[0]["stream"], bodies[2]["stream"]]) == [1, 2]  # the ordinals
    assert sorted([bodies[0]["stream_id"], bodies[2]["stream_id"]]) == [1, 3]  # the ids on the wire
    assert [record["switch"] for record in only_one["connections"]] == ["switch-1"]
    assert only_one["connections"][0]["streams"] == 3  # two pings and this query
    assert only_one["switches"] == {"switch-1": {"connections": 1, "streams": 3, "peak_in_flight": 2}}
    assert [record["switch"] for record in own["connections"]] == ["switch-2"]  # a switch reads only its own


async def test_a_valid_certificate_for_an_unknown_switch_gets_403(tmp_path: Path) -> None:
    generate_certs(tmp_path, HOSTNAMES, ["switch-1", "rogue-1"])
    async with (
        run_controller(ControllerConfig(certs_dir=tmp_path, switches=("switch-1",))) as running,
        async_switch_client(tmp_path, "rogue-1") as rogue,
    ):
        ping = await rogue.get(f"{running.url}/ping?interval=0")
        listing = await rogue.get(f"{running.url}/connections")
        [record] = running.registry.connections()
    assert ping.status_code == 403
    assert ping.json() == {
        "error": "switch 'rogue-1' is not in this controller's fleet (known: switch-1). Fix: give the client a "
        "certificate of a switch in controller.switches, or add its name there",
        "refused": "not_in_fleet",
    }
    assert listing.status_code == 403
    assert (record.switch, record.streams) == ("rogue-1", 2)  # refused, but seen


async def test_a_switch_without_certificate_never_reaches_the_app(
    controller: RunningController, certs_dir: Path
) -> None:
    context = ssl.create_default_context(cafile=ca_cert_path(certs_dir))
    async with httpx.AsyncClient(verify=context, trust_env=False) as anonymous:
        # The refusal surfaces as the TLS alert or as the broken connection, depending on who is faster.
        with pytest.raises((httpx.HTTPError, ssl.SSLError)):
            await anonymous.get(f"{controller.url}/ping?interval=0")
    assert controller.registry.connections() == []
    assert controller.registry.totals() == {}


async def test_a_connection_that_carries_nothing_is_on_record(controller: RunningController, certs_dir: Path) -> None:
    context = client_ssl_context(certs_dir, "switch-1")
    _, writer = await asyncio.open_connection("127.0.0.1", controller.port, ssl=context, server_hostname="127.0.0.1")
    local = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
    writer.close()
    await writer.wait_closed()
    async with async_switch_client(certs_dir, "switch-1") as client:
        records = (await client.get(f"{controller.url}/connections")).json()["connections"]
    idle = next(record for record in records if record["peer"] == local)
    assert (idle["switch"], idle["streams"], idle["peak_in_flight"]) == ("switch-1", 0, 0)


# --- both ends must agree -------------------------------------------------------------------------------------


async def test_seed_run_is_confirmed_by_the_controller(controller: RunningController, certs_dir: Path) -> None:
    scenario = Scenario("seed", OneShot((0.3, 0.6, 0.9)))
    result = await one_shot(scenario, controller.url, client_ssl_context(certs_dir, "switch-1"))
    view = result.controller_view
    assert view is not None
    assert view.agrees, view.disagreements
    assert (len(view.records), view.streams, view.peak_in_flight, view.unused) == (1, 3, 3, 0)
    assert view.records[0]["peer"] == result.connections[0].local_address
    assert describe_view(view) == "controller saw switch-1: 1 connection, 3 streams, 3 at once"
    assert judge(result).multiplexed


def a_run(pings: list[PingResult], connections: list[ConnectionRecord]) -> RunResult:
    return RunResult(
        Scenario("unit", OneShot(tuple(p.interval_s for p in pings))),
        "https://127.0.0.1:1",
        tuple(pings),
        tuple(connections),
        1.0,
    )


def ping(number: int, connection: int, sent_at_s: float = 0.0, finished_at_s: float = 1.0) -> PingResult:
    return PingResult(
        number,
        1.0,
        1.0,
        status=200,
        http_version="HTTP/2",
        connection=connection,
        headers_sent_at_s=sent_at_s,
        finished_at_s=finished_at_s,
    )


def connection(number: int, port: int) -> ConnectionRecord:
    return ConnectionRecord(number, 0.0, f"127.0.0.1:{port}", "127.0.0.1:8443", port, "TLSv1.3", "h2")


def record(id_: int, port: int, streams: int, peak: int) -> dict[str, Any]:
    return {"id": id_, "peer": f"127.0.0.1:{port}", "switch": "switch-1", "streams": streams, "peak_in_flight": peak}


def test_views_agree_when_every_number_matches() -> None:
    pings = [ping(1, 1), ping(2, 1), ping(3, 1)]
    view = compare("switch-1", [connection(1, 5000)], pings, [record(7, 5000, 4, 3)], query_connection=1)
    assert view.agrees
    assert (view.streams, view.peak_in_flight) == (3, 3)


def test_a_disagreement_names_both_numbers() -> None:
    pings = [ping(1, 1), ping(2, 1), ping(3, 2)]
    records = [record(7, 5000, 1, 1), record(3, 5001, 9, 9), record(9, 5001, 1, 1)]  # newest record of a port wins
    view = compare("switch-1", [connection(1, 5000), connection(2, 5001)], pings, records, query_connection=None)
    assert tuple(map(describe_disagreement, view.disagreements)) == (
        "conn #1 (127.0.0.1:5000): the switch sent 2 streams, the controller saw 1",
        "conn #1 (127.0.0.1:5000): the switch had 2 streams in flight at once, the controller 1",
    )
    run = a_run(pings, [connection(1, 5000), connection(2, 5001)])
    verdict = judge(RunResult(**{**run.__dict__, "controller_view": view}))
    assert not verdict.ok
    assert not verdict.multiplexed  # the switch saw it; unproven until the controller does too


def test_a_connection_the_controller_never_saw_is_a_disagreement() -> None:
    view = compare("switch-1", [connection(1, 5000)], [ping(1, 1)], [], query_connection=None)
    assert view.disagreements == (NoRecord(1, "127.0.0.1:5000"),)
    assert describe_disagreement(view.disagreements[0]) == (
        "conn #1 (127.0.0.1:5000): the switch opened it, the controller has no record of it"
    )


def test_unused_connections_are_shown() -> None:
    view = compare(
        "switch-1",
        [connection(1, 5000), connection(2, 5001)],
        [ping(1, 1)],
        [record(1, 5000, 1, 1), record(2, 5001, 0, 0)],
        query_connection=None,
    )
    assert view.agrees
    assert describe_view(view) == "controller saw switch-1: 2 connections (1 carried no stream), 1 stream, 1 at once"


# --- a client we did not write ----------------------------------------------------------------------------------


def curl_local_ports(process: ControllerProcess, *mode: str) -> list[int]:
    written = curl_pings(process.url, process.config.parent / "certs", *mode, write_out="%{local_port}\\n")
    return [int(line) for line in written.split()]


async def controller_records(process: ControllerProcess, ports: set[int]) -> list[dict[str, Any]]:
    async with async_switch_client(process.config.parent / "certs", "switch-1") as client:
        records = (await client.get(f"{process.url}/connections", params={"switch": "switch-1"})).json()
    return [record for record in records["connections"] if int(record["peer"].rsplit(":", 1)[1]) in ports]


async def test_curl_parallel_is_one_connection_with_three_streams(controller_process: ControllerProcess) -> None:
    ports = await asyncio.to_thread(curl_local_ports, controller_process, "--parallel")
    assert len(set(ports)) == 1
    [record] = await controller_records(controller_process, set(ports))
    assert (record["streams"], record["peak_in_flight"], record["alpn"]) == (3, 3, "h2")


async def test_curl_parallel_immediate_is_three_connections_of_one_stream(
    controller_process: ControllerProcess,
) -> None:
    ports = await asyncio.to_thread(curl_local_ports, controller_process, "--parallel", "--parallel-immediate")
    assert len(set(ports)) == 3
    records = await controller_records(controller_process, set(ports))
    assert sorted((r["streams"], r["peak_in_flight"]) for r in records) == [(1, 1)] * 3


def test_a_connection_from_before_the_controller_started_is_forgotten_not_a_disagreement() -> None:
    """The controller restarted at 2.0 s into the run (its uptime says so): our connection from 0.0 s is one it
    cannot know of; one from 3.0 s it should."""
    old, new = connection(1, 5000), dataclasses.replace(connection(2, 5001), opened_at_s=3.0)
    view = compare("switch-1", [old, new], [ping(1, 2)], [], query_connection=None, forgets_before_s=2.0)
    assert view.forgotten == 1
    assert view.disagreements == (NoRecord(2, "127.0.0.1:5001"),)
