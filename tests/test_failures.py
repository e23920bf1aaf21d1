"""Every failure kind the switch reports, produced by a real peer: a scripted HTTP/2 controller (GOAWAY with a
stream in flight, a reset stream, no answer), our controller (a refused certificate, a GOAWAY after
keep_alive_max_requests), and nothing at all (down). Each is classified once, where it was caught, and
every renderer reads that kind: the trace, the summary, ``--json``, the session's retry decision.
"""

from __future__ import annotations

import socket
from pathlib import Path

from h2.errors import ErrorCodes

from controller.server.serve import server_ssl_context
from dialout.config import ControllerConfig, OneShot, ReconnectPolicy, Scenario, Schedule, SwitchConfig
from dialout.refusals import Refusal, explained
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.failures import Failure, FailureKind
from sim_switch.model.results import GiveUpReason, PingOutcome, PingResult, RunResult
from sim_switch.model.verdict import Outcome, judge
from sim_switch.render.report import ping_error, render_summary, to_json
from tests.conftest import SWITCH_IDS
from tests.h2_peer import GoAway, Move, Reset, ScriptedPeer, Silence, scripted_peer
from tests.servers import run_controller
from tests.switches import one_shot
from tests.switches import session as run_session_for

ONE_PING = Scenario("one", OneShot((0.0,)))
QUICK_REDIAL = ReconnectPolicy(initial_s=0.05, max_s=0.2, multiplier=2, jitter=0.2, give_up_after_s=60)


async def one_ping(url: str, certs_dir: Path, request_timeout_s: float = 10.0) -> RunResult:
    return await one_shot(
        ONE_PING, url, client_ssl_context(certs_dir, "switch-1"), timeout_s=request_timeout_s, ask=False
    )


async def against(certs_dir: Path, script: list[Move], request_timeout_s: float = 10.0) -> tuple[Failure, RunResult]:
    context = server_ssl_context(ControllerConfig(certs_dir=certs_dir))
    async with scripted_peer(context, script) as peer:
        result = await one_ping(f"https://127.0.0.1:{peer.port}", certs_dir, request_timeout_s)
    [ping] = result.pings
    assert ping.failure is not None, "the scripted move should have failed the ping"
    return ping.failure, result


def session(count: int) -> Scenario:
    return Scenario("session", Schedule(every_s=0.05, interval_s=0.0, count=count))


async def test_goaway_that_names_no_stream_processed_is_safe_to_retry(certs_dir: Path) -> None:
    failure, result = await against(certs_dir, [GoAway(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=0)])
    assert failure.kind is FailureKind.GOAWAY
    assert failure.detail == "GOAWAY ENHANCE_YOUR_CALM, last stream 0"
    assert failure.retry_safe  # RFC 9113 section 6.8: streams above the last one were not processed
    verdict = judge(result)
    assert verdict.outcome is Outcome.FAILED
    ping = to_json(result, verdict)["pings"][0]
    assert ping["failure"] == {
        "kind": "goaway",
        "detail": "GOAWAY ENHANCE_YOUR_CALM, last stream 0",
        "retry_safe": True,
        "status": None,
        "gave_up": None,
    }
    assert ping["error"] == "the controller closed the connection while the ping was in flight: " + failure.detail
    assert to_json(result, verdict)["failure_kinds"] == {"goaway": 1}


async def test_goaway_with_the_stream_in_flight_may_have_processed_it(certs_dir: Path) -> None:
    """Its stream was at or below the last-stream-id: the controller may have processed it. The switch waits for
    its answer (RFC 9113 section 6.8), and the connection closes without one."""
    failure, _ = await against(certs_dir, [GoAway(ErrorCodes.NO_ERROR, last_stream_id=1, close=True)])
    assert failure.kind is FailureKind.GOAWAY
    assert failure.detail == "GOAWAY NO_ERROR, last stream 1"
    assert not failure.retry_safe


async def test_a_reset_stream(certs_dir: Path) -> None:
    failure, result = await against(certs_dir, [Reset(ErrorCodes.INTERNAL_ERROR)])
    assert failure == Failure(FailureKind.STREAM_RESET, "INTERNAL_ERROR", retry_safe=False)
    assert "failure: ping 1 (0 s): the controller reset the stream: INTERNAL_ERROR" in render_summary(
        result, judge(result)
    )


async def test_a_refused_stream_from_the_peer_is_safe_to_retry(certs_dir: Path) -> None:
    failure, _ = await against(certs_dir, [Reset(ErrorCodes.REFUSED_STREAM)])
    assert failure.kind is FailureKind.REFUSED_STREAM
    assert failure.retry_safe


async def test_a_controller_that_never_answers_is_the_request_timeout(certs_dir: Path) -> None:
    failure, result = await against(certs_dir, [Silence()], request_timeout_s=0.5)
    assert failure == Failure(FailureKind.NO_ANSWER, "within 0.5 s (switch.request_timeout_s)", retry_safe=False)
    assert (
        ping_error(result.pings[0]) == "no complete answer from the controller: within 0.5 s (switch.request_timeout_s)"
    )


async def test_a_controller_that_is_down(certs_dir: Path) -> None:
    reserved = socket.socket()  # bound, not listening: a connect is refused, and the port stays ours
    reserved.bind(("127.0.0.1", 0))
    with reserved:
        result = await one_ping(f"https://127.0.0.1:{reserved.getsockname()[1]}", certs_dir)
    [ping] = result.pings
    assert ping.failure is not None
    assert ping.failure.kind is FailureKind.DOWN
    assert ping.failure.retry_safe  # it never reached anyone


async def test_a_refused_certificate(certs_dir: Path, foreign_certs_dir: Path) -> None:
    async with run_controller(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)) as running:
        # the foreign PKI's switch-1, trusting our controller's CA
        context = client_ssl_context(foreign_certs_dir, "switch-1")
        context.load_verify_locations(certs_dir / "ca.pem")
        result = await one_shot(ONE_PING, running.url, context, timeout_s=10.0, ask=False)
    [ping] = result.pings
    assert ping.failure is not None
    assert ping.failure.kind is FailureKind.CERTIFICATE_REFUSED
    assert ping.failure.detail == explained(Refusal.UNKNOWN_CA)


async def test_a_session_gives_up_after_give_up_after_s(certs_dir: Path) -> None:
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    switch = SwitchConfig(
        certs_dir=certs_dir,
        request_timeout_s=5,
        reconnect=ReconnectPolicy(initial_s=0.05, max_s=0.1, give_up_after_s=0.3),
    )
    with reserved:
        result = await run_session_for(
            session(2),
            f"https://127.0.0.1:{reserved.getsockname()[1]}",
            client_ssl_context(certs_dir, "switch-1"),
            switch,
        )
    for ping in result.pings:
        assert ping.outcome is PingOutcome.FAILED
        assert ping.failure is not None
        assert ping.failure.kind is FailureKind.DOWN
        assert ping.gave_up is not None
    # the first ping led the redials until its time was up; the link, down as long, gave up with it, and the ping
    # that waited for it is failed without a dial of its own (issue 29)
    assert [ping.gave_up.reason for ping in result.pings if ping.gave_up] == [
        GiveUpReason.TIME_UP,
        GiveUpReason.LINK_DOWN,
    ]
    assert result.pings[0].gave_up is not None
    assert result.pings[0].gave_up.over_s >= 0.3
    tries = [ping.gave_up.tries for ping in result.pings if ping.gave_up is not None]
    assert max(tries) >= 2  # the leader redialled before giving up
    report = to_json(result, judge(result))
    assert report["outcome"] == "session_failed"
    assert report["pings"][0]["failure"]["gave_up"]["reason"] == "time_up"
    assert "(gave up; " in str(report["pings"][0]["error"])


async def one_session_ping_after_goaway(
    certs_dir: Path, last_stream_id: int
) -> tuple[PingResult, RunResult, ScriptedPeer]:
    """A session of one ping against a peer that answers its first request with GOAWAY, then answers."""
    context = server_ssl_context(ControllerConfig(certs_dir=certs_dir))
    switch = SwitchConfig(certs_dir=certs_dir, request_timeout_s=5, reconnect=QUICK_REDIAL)
    async with scripted_peer(context, [GoAway(ErrorCodes.NO_ERROR, last_stream_id)]) as peer:
        result = await run_session_for(
            session(1), f"https://127.0.0.1:{peer.port}", client_ssl_context(certs_dir, "switch-1"), switch
        )
    [ping] = result.pings
    return ping, result, peer


async def test_a_session_retries_a_ping_a_goaway_left_unprocessed(certs_dir: Path) -> None:
    ping, result, peer = await one_session_ping_after_goaway(certs_dir, last_stream_id=0)
    assert ping.outcome is PingOutcome.RETRIED_THEN_OK
    assert (ping.attempts, result.reconnects, peer.connections) == (2, 1, 2)


async def test_a_session_does_not_retry_a_ping_the_goaway_may_have_processed(certs_dir: Path) -> None:
    ping, _, peer = await one_session_ping_after_goaway(certs_dir, last_stream_id=1)
    assert ping.gave_up is not None
    assert ping.gave_up.reason is GiveUpReason.NOT_RETRY_SAFE
    assert peer.requests == ["/ping?interval=0"]  # sent once, never again
    assert "not safe to retry: it may have been processed; 1 try over" in str(ping_error(ping))


async def test_pings_in_flight_when_keep_alive_max_requests_is_reached_are_answered(certs_dir: Path) -> None:
    """The GOAWAY Hypercorn sends past keep_alive_max_requests closed h2's state machine: every answer still to
    come on that connection was dropped, and its ping lost to the switch's timeout."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, keep_alive_max_requests=2)
    async with run_controller(cfg) as running:
        result = await one_shot(
            Scenario("four", OneShot((0.3,) * 4)), running.url, client_ssl_context(certs_dir, "switch-1"), timeout_s=5
        )
    assert [ping.outcome for ping in result.pings] == [PingOutcome.OK] * 4, result.pings
    assert len(result.connections) == 1


async def test_keep_alive_max_requests_ends_connections_without_losing_a_ping(certs_dir: Path) -> None:
    """Hypercorn sends GOAWAY after that many requests on a connection; the switch opens the next one."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, keep_alive_max_requests=2)
    switch = SwitchConfig(certs_dir=certs_dir, request_timeout_s=5, reconnect=QUICK_REDIAL)
    async with run_controller(cfg) as running:
        result = await run_session_for(session(6), running.url, client_ssl_context(certs_dir, "switch-1"), switch)
    verdict = judge(result)
    assert verdict.ok, verdict.problems
    assert [ping.outcome for ping in result.pings] == [PingOutcome.OK] * 6
    assert len(result.connections) >= 2  # each retired by a GOAWAY after its requests
    assert result.reconnects == 0  # a connection the controller retired is not a link that went down
