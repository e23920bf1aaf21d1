"""The switch's own HTTP/2 connection (``sim_switch.wire``) against a peer the test drives frame by frame: answers
out of order, a stream limit lowered mid-connection, GOAWAY with streams on both sides of its last-stream-id,
REFUSED_STREAM, a small flow-control window under a 1 MB body, the peer's PING, and a peer gone silent."""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from controller.server.serve import server_ssl_context
from dialout.config import ControllerConfig, OneShot, Scenario, StreamPolicy
from dialout.h2_seam import reopen_after_sending_goaway
from sim_switch.dial.failures import classify
from sim_switch.dial.tls import client_ssl_context
from sim_switch.dial.tracing import Tracer
from sim_switch.model.events import TraceEvent
from sim_switch.model.failures import FailureKind
from sim_switch.model.frames import Direction, HeadersFrame, PingFrame
from sim_switch.wire.connection import HEADERS_A_WRITE
from sim_switch.wire.errors import GoneAway, StreamReset
from sim_switch.wire.transport import DialOptions, SwitchTransport
from tests.h2_peer import DrivenConnection, driven_peer
from tests.switches import one_shot

GAP_S = 0.1  # between the peer's answers
# How far apart the switch may see two answers from how far apart the peer sent them: one event loop, one machine.
SLACK_S = 0.03
PINGS = 100


@pytest.fixture
def server_context(certs_dir: Path) -> ssl.SSLContext:
    return server_ssl_context(ControllerConfig(certs_dir=certs_dir))


def client(certs_dir: Path, tracer: Tracer | None = None) -> tuple[httpx.AsyncClient, SwitchTransport]:
    transport = SwitchTransport(DialOptions(client_ssl_context(certs_dir, "switch-1"), 5.0), StreamPolicy.QUEUE, tracer)
    return httpx.AsyncClient(transport=transport, timeout=10.0), transport


@pytest.fixture
async def switch(certs_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SwitchTransport]]:
    made = client(certs_dir)
    async with made[0]:
        yield made


async def test_answers_out_of_order_each_reach_their_ping_when_they_are_read(
    server_context: ssl.SSLContext, certs_dir: Path
) -> None:
    answered_at: dict[int, float] = {}

    async def drive(peer: DrivenConnection) -> None:
        held = [await peer.request() for _ in range(3)]
        for request in reversed(held):  # the last stream first
            peer.answer(request.stream_id)
            answered_at[request.stream_id] = time.perf_counter()
            await asyncio.sleep(GAP_S)

    async with driven_peer(server_context, drive) as peer:
        result = await one_shot(
            Scenario("three", OneShot((0.0, 0.0, 0.0))), peer.url, client_ssl_context(certs_dir, "switch-1"), ask=False
        )
    pings = sorted(result.pings, key=lambda ping: ping.stream_id or 0)
    assert [ping.stream_id for ping in pings] == [1, 3, 5]
    assert all(ping.ok for ping in pings)
    # Each answer reached its ping when the peer sent it: the gaps the peer made are the gaps the switch saw.
    finished = {ping.stream_id: ping.finished_at_s or 0.0 for ping in pings}
    for later, earlier in ((3, 5), (1, 3)):
        sent_gap = answered_at[later] - answered_at[earlier]
        seen_gap = finished[later] - finished[earlier]
        assert abs(seen_gap - sent_gap) < SLACK_S, (later, earlier, sent_gap, seen_gap)


async def test_a_stream_limit_lowered_mid_connection_is_kept(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    http, _ = switch
    lowered = asyncio.Event()

    async def drive(peer: DrivenConnection) -> None:
        first = await peer.request()
        peer.max_streams(1)
        await peer.until(lambda: peer.settings_acks >= 2)  # our first SETTINGS, then this one
        peer.count_from_now()
        lowered.set()
        await asyncio.sleep(GAP_S)
        peer.answer(first.stream_id)
        for _ in range(3):
            request = await peer.request()
            await asyncio.sleep(GAP_S / 4)
            peer.answer(request.stream_id)

    async with driven_peer(server_context, drive) as peer:
        first = asyncio.create_task(http.get(f"{peer.url}/ping?interval=0"))
        await lowered.wait()
        rest = await asyncio.gather(*(http.get(f"{peer.url}/ping?interval=0") for _ in range(3)))
        answers = [await first, *rest]
    [connection] = peer.connections
    assert [answer.status_code for answer in answers] == [200] * 4
    assert connection.requests == 4
    assert connection.peak_open == 1  # never more than the lowered limit, once it was acknowledged


async def test_a_stream_both_ends_have_ended_gives_its_room_back_before_its_answer_is_read(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    """At a limit of one stream, the next request goes out once the first's END_STREAM is read, while nobody has
    read or closed the first's answer yet: it held the room until its ping's task closed it, and a connection
    at its limit waited those turns for its next request."""
    http, _ = switch

    async def drive(peer: DrivenConnection) -> None:
        peer.max_streams(1)
        for _ in range(2):
            request = await peer.request()
            peer.answer(request.stream_id)

    async with driven_peer(server_context, drive) as peer, asyncio.timeout(10):
        first = await http.send(http.build_request("GET", f"{peer.url}/ping?interval=0"), stream=True)
        second = await http.get(f"{peer.url}/ping?interval=0")  # (the first still unread and open)
        assert (first.status_code, second.status_code) == (200, 200)
        assert await first.aread() == b'{"ok": true}'
        await first.aclose()
    [connection] = peer.connections
    assert connection.requests == 2
    assert connection.peak_open == 1


async def test_goaway_finishes_the_streams_it_covers_and_the_rest_are_safe_to_retry_elsewhere(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    http, _ = switch

    async def drive(peer: DrivenConnection) -> None:
        if peer.number > 1:  # the connection after the GOAWAY: answer everything
            while True:
                peer.answer((await peer.request()).stream_id)
        held = [await peer.request() for _ in range(3)]  # streams 1, 3, 5
        peer.goaway(ErrorCodes.NO_ERROR, last_stream_id=3)
        await asyncio.sleep(GAP_S)  # after the GOAWAY, the streams it covers are still answered
        peer.answer(held[0].stream_id)
        peer.answer(held[1].stream_id)

    async with driven_peer(server_context, drive) as peer:
        answers = await asyncio.gather(
            *(http.get(f"{peer.url}/ping?interval={n}") for n in range(3)), return_exceptions=True
        )
        after = await http.get(f"{peer.url}/ping?interval=9")
    first, second, third = answers
    assert isinstance(first, httpx.Response)
    assert first.status_code == 200
    assert isinstance(second, httpx.Response)
    assert second.status_code == 200
    assert isinstance(third, GoneAway), third
    assert not third.processed
    failure = classify(third)
    assert failure.kind is FailureKind.GOAWAY
    assert failure.retry_safe
    assert after.status_code == 200
    assert [connection.requests for connection in peer.connections] == [3, 1]  # nothing more on the old one


async def test_a_reset_after_a_goaway_that_left_the_stream_out_does_not_make_it_processed(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    """A stream above a GOAWAY's last-stream-id was never processed (RFC 9113 section 6.8), whatever reset of it
    follows: a controller shutting down may reset it with NO_ERROR (Hypercorn's default) in the same write."""
    http, _ = switch

    async def drive(peer: DrivenConnection) -> None:
        stream_id = (await peer.request()).stream_id
        peer.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=0)
        reopen_after_sending_goaway(peer.conn)
        peer.conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        peer.flush()  # one write: the switch reads both before its ping hears of either

    async with driven_peer(server_context, drive) as peer:
        with pytest.raises(GoneAway) as gone:
            await http.get(f"{peer.url}/ping?interval=0")
    assert not gone.value.processed
    assert classify(gone.value).retry_safe


async def test_a_refused_stream_is_safe_to_retry_and_the_connection_goes_on(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    http, _ = switch

    async def drive(peer: DrivenConnection) -> None:
        peer.reset((await peer.request()).stream_id, ErrorCodes.REFUSED_STREAM)
        peer.answer((await peer.request()).stream_id)

    async with driven_peer(server_context, drive) as peer:
        with pytest.raises(StreamReset) as refused:
            await http.get(f"{peer.url}/ping?interval=0")
        again = await http.get(f"{peer.url}/ping?interval=0")
    assert not refused.value.processed
    failure = classify(refused.value)
    assert (failure.kind, failure.retry_safe) == (FailureKind.REFUSED_STREAM, True)
    assert again.status_code == 200
    assert len(peer.connections) == 1


async def test_a_1_mb_body_keeps_to_a_small_flow_control_window(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    http, _ = switch
    got: list[int] = []

    async def drive(peer: DrivenConnection) -> None:
        request = await peer.request()
        got.append(len(request.body))
        peer.answer(request.stream_id)

    body = b"x" * 1_000_000
    small = {SettingCodes.INITIAL_WINDOW_SIZE: 16_384}
    async with driven_peer(server_context, drive, small) as peer:
        answer = await http.post(f"{peer.url}/ping?interval=0", content=body)
    assert answer.status_code == 200
    assert got == [len(body)]  # h2 on the peer's side would have refused a byte beyond its window


async def test_the_peers_ping_is_acked_and_both_frames_are_in_the_trace(
    server_context: ssl.SSLContext, certs_dir: Path
) -> None:
    events: list[TraceEvent] = []
    tracer = Tracer(events.append, frames=True)
    http, _ = client(certs_dir, tracer)

    async def drive(peer: DrivenConnection) -> None:
        request = await peer.request()
        peer.ping()
        await peer.until(lambda: peer.pings_acked >= 1)
        peer.answer(request.stream_id)

    async with http, driven_peer(server_context, drive) as peer:
        trace = tracer.for_ping(1, tracer.now_s())
        answer = await http.get(f"{peer.url}/ping?interval=0", extensions={"trace": trace})
    assert answer.status_code == 200
    pings = [(e.direction, e.ack, e.opaque) for e in events if isinstance(e, PingFrame)]
    peers = "3132333435363738"  # b"12345678"
    assert (Direction.RECEIVED, False, peers) in pings
    assert (Direction.SENT, True, peers) in pings
    [ours_acked] = [e for e in events if isinstance(e, PingFrame) and e.ack and e.direction is Direction.RECEIVED]
    assert ours_acked.rtt_s is not None
    assert ours_acked.rtt_s > 0


async def test_a_peer_that_stops_answering_ping_is_found_silent(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    http, transport = switch
    went_silent = asyncio.Event()

    async def drive(peer: DrivenConnection) -> None:
        peer.answer((await peer.request()).stream_id)
        await peer.request()
        peer.silent = True
        went_silent.set()

    async with driven_peer(server_context, drive) as peer:
        await http.get(f"{peer.url}/ping?interval=0")
        [connection] = transport.connections(peer.url)
        assert await connection.ping(2.0) is not None  # alive: its ACK came
        hanging = asyncio.create_task(http.get(f"{peer.url}/ping?interval=0"))
        await went_silent.wait()
        assert await connection.ping(0.3) is None  # no ACK: the keepalive's sign of a silent controller
        hanging.cancel()


async def test_httpxs_read_timeout_holds_on_the_switchs_transport(
    server_context: ssl.SSLContext, switch: tuple[httpx.AsyncClient, SwitchTransport]
) -> None:
    """The controller's account, asked with httpx's timeouts and no deadline of the switch's own, must not hang
    on a controller that takes the request and never answers."""
    http, _ = switch

    async def drive(peer: DrivenConnection) -> None:
        await peer.request()

    async with driven_peer(server_context, drive) as peer:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{peer.url}/connections", timeout=0.3)


async def test_a_turn_that_starts_many_streams_writes_their_headers_a_few_dozen_at_a_time(
    server_context: ssl.SSLContext, certs_dir: Path
) -> None:
    """The pings that wait for the controller's SETTINGS all start in the turn they arrive: their HEADERS go out
    ``HEADERS_A_WRITE`` a write (each write's frames carry one time), so the peer starts on the first while the
    switch makes the rest; and not one write each, either."""
    sent_at: list[float] = []

    def watch(event: TraceEvent) -> None:
        if isinstance(event, HeadersFrame) and event.direction is Direction.SENT:
            sent_at.append(event.at_s)

    async def drive(peer: DrivenConnection) -> None:
        for _ in range(PINGS):
            peer.answer((await peer.request()).stream_id)

    async with driven_peer(server_context, drive) as peer:
        result = await one_shot(
            Scenario("many", OneShot((0.0,) * PINGS)),
            peer.url,
            client_ssl_context(certs_dir, "switch-1"),
            watch,
            ask=False,
            frames=True,
        )
    assert all(ping.ok for ping in result.pings)
    writes = sorted(collections.Counter(sent_at).values(), reverse=True)
    assert sum(writes) == PINGS
    assert writes[:3] == [HEADERS_A_WRITE] * 3, writes  # the 99 that waited for the SETTINGS: 32, 32, 32 and 3
