"""The report's question, answered end to end: real switch, real controller, real HTTP/2 over mutual TLS."""

from __future__ import annotations

from pathlib import Path

from dialout.config import Expectation, OneShot, Scenario
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import AskingController, ConnectionReused, FirstByte, TcpConnected, TlsDone, TraceEvent
from sim_switch.model.results import RunResult
from sim_switch.model.verdict import judge
from sim_switch.render.report import against_interval, ping_error, problem_lines, render_summary, verdict_line
from sim_switch.render.trace import describe
from tests.servers import RunningController
from tests.switches import as_on_a_quiet_machine, one_shot

INTERVALS_S = (0.3, 0.6, 0.9)


async def run(url: str, certs_dir: Path, scenario: Scenario, events: list[TraceEvent] | None = None) -> RunResult:
    sink = events.append if events is not None else (lambda event: None)
    return await one_shot(scenario, url, client_ssl_context(certs_dir, "switch-1"), sink)


async def test_seed_pings_share_one_http2_connection(controller: RunningController, certs_dir: Path) -> None:
    scenario = Scenario(
        "seed", OneShot(INTERVALS_S), http2=True, expect=Expectation(connections=1, http_version="HTTP/2")
    )
    events: list[TraceEvent] = []
    result = await run(controller.url, certs_dir, scenario, events)
    verdict = judge(result)

    assert verdict.ok, problem_lines(verdict)
    assert verdict.multiplexed
    assert len(result.connections) == 1
    assert result.connections[0].alpn == "h2"
    assert [ping.status for ping in result.pings] == [200, 200, 200]
    assert {ping.http_version for ping in result.pings} == {"HTTP/2"}
    assert {ping.connection for ping in result.pings} == {1}
    assert sorted(ping.stream_id or 0 for ping in result.pings) == [1, 3, 5]
    assert result.peak_in_flight(1) == 3
    # One after another they would need the sum of the intervals; together, about the longest.
    assert result.wall_time_s / sum(INTERVALS_S) < 1  # in flight together, not one after another
    # The clock stops as the last ping ends: the questions to the controller after it are not the run's time.
    asked_at_s = min(event.at_s for event in events if isinstance(event, AskingController))
    assert max(ping.finished_at_s or 0.0 for ping in result.pings) <= result.wall_time_s <= asked_at_s
    assert as_on_a_quiet_machine(verdict_line(verdict)).startswith(
        "MULTIPLEXED: 3 pings as 3 streams on 1 connection (HTTP/2), "
    )

    assert sum(isinstance(event, TcpConnected) for event in events) == 1
    [tls] = [event for event in events if isinstance(event, TlsDone)]
    assert (tls.version, tls.alpn) == ("TLSv1.3", "h2")
    assert sum(isinstance(event, ConnectionReused) for event in events) == 2
    first_bytes = [event for event in events if isinstance(event, FirstByte)]
    assert [(event.status, event.http_version, event.connection) for event in first_bytes] == [(200, "HTTP/2", 1)] * 3
    # and in words, as the trace prints them
    assert describe(first_bytes[0]).startswith("first response byte: 200 HTTP/2 on connection #1 stream ")
    assert describe(tls).startswith("TLS handshake done: TLSv1.3, ALPN h2, ")


async def test_contrast_pings_need_one_http11_connection_each(controller: RunningController, certs_dir: Path) -> None:
    scenario = Scenario("contrast", OneShot(INTERVALS_S), http2=False, expect=Expectation(3, "HTTP/1.1"))
    result = await run(controller.url, certs_dir, scenario)
    verdict = judge(result)

    assert verdict.ok, problem_lines(verdict)
    assert not verdict.multiplexed
    assert [record.alpn for record in result.connections] == ["http/1.1"] * 3
    assert sorted(ping.connection or 0 for ping in result.pings) == [1, 2, 3]
    assert {ping.stream_id for ping in result.pings} == {None}
    assert len({ping.local_port for ping in result.pings}) == 3
    assert as_on_a_quiet_machine(verdict_line(verdict)).startswith(
        "NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1), "
    )


async def test_unmet_expectation_fails_the_run_and_says_both_numbers(
    controller: RunningController, certs_dir: Path
) -> None:
    scenario = Scenario(
        "wrong", OneShot(INTERVALS_S), http2=True, expect=Expectation(connections=3, http_version="HTTP/1.1")
    )
    result = await run(controller.url, certs_dir, scenario)
    verdict = judge(result)

    assert not verdict.ok
    assert verdict.multiplexed  # the pings themselves were fine
    assert "expected 3 connections, opened 1" in problem_lines(verdict)
    assert any(failure.startswith("expected HTTP/1.1 for every ping, got HTTP/2") for failure in problem_lines(verdict))
    summary = render_summary(result, verdict)
    assert "expect connections = 3: FAILED (1)" in summary


async def test_a_single_ping_has_nothing_to_multiplex(controller: RunningController, certs_dir: Path) -> None:
    result = await run(controller.url, certs_dir, Scenario("one", OneShot((0.0,))))
    verdict = judge(result)
    assert verdict.ok
    assert not verdict.multiplexed
    assert as_on_a_quiet_machine(verdict_line(verdict)).startswith(
        "NOTHING TO MULTIPLEX: 1 ping on 1 connection (HTTP/2)"
    )


async def test_a_refused_ping_is_a_failure_with_the_controllers_reason(
    controller: RunningController, certs_dir: Path
) -> None:
    # max_interval_s is 5 in the fixture: 7 s is refused with 400 before any waiting.
    result = await run(controller.url, certs_dir, Scenario("too-long", OneShot((0.0, 7.0))))
    verdict = judge(result)
    assert not verdict.ok
    assert result.pings[1].status == 400
    assert ping_error(result.pings[1]) == "HTTP 400: interval must be <= 5 s (max_interval_s), got '7'"
    assert verdict_line(verdict).startswith("FAILED: 1 of 2 pings failed: HTTP 400")


def test_an_answer_before_its_interval_reads_as_early() -> None:
    assert against_interval(0.042) == "+42 ms over its interval"
    assert against_interval(-4.97) == "4.97 s early"
