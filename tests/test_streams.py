"""A full connection: the switch queues for a free stream (and says how long) or spills onto another connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from dialout.config import ControllerConfig, OneShot, Request, Scenario, StreamPolicy, parse_config
from sim_switch.dial.ping_requests import PingRequests
from sim_switch.dial.streams import StreamPool
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import GetConnection, HeadersWritten, TlsStarted, TraceEvent
from sim_switch.model.results import RunResult
from sim_switch.model.verdict import judge
from sim_switch.render.report import problem_lines, render_summary, to_json
from tests.conftest import SWITCH_IDS
from tests.servers import RunningController, run_controller
from tests.switches import one_shot

INTERVAL_S = 0.3
# 120 pings held open until the last is sent: 0.3 s was not always enough on a loaded machine (a peak of fewer than
# 120 seen in the parallel suite), five times that is.
HELD_OPEN_S = 1.5


@pytest.fixture
async def five_streams(certs_dir: Path) -> AsyncIterator[RunningController]:
    """A controller that takes 5 concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, max_concurrent_streams=5)
    async with run_controller(cfg) as running:
        yield running


async def run(url: str, certs_dir: Path, scenario: Scenario) -> RunResult:
    context = client_ssl_context(certs_dir, "switch-1")
    return await one_shot(scenario, url, context)


def waited(result: RunResult) -> list[int]:
    return [ping.number for ping in result.queued_for_a_stream()]


async def test_queue_keeps_one_connection_and_reports_the_wait(
    five_streams: RunningController, certs_dir: Path
) -> None:
    result = await run(
        five_streams.url, certs_dir, Scenario("q", OneShot((INTERVAL_S,) * 10), streams=StreamPolicy.QUEUE)
    )
    verdict = judge(result)
    assert verdict.ok, problem_lines(verdict)
    assert len(result.connections) == 1
    assert result.peak_in_flight(1) == 5
    assert len(waited(result)) == 5  # the second five waited for the first five
    assert min(result.pings[number - 1].stream_wait_s or 0 for number in waited(result)) > INTERVAL_S / 2
    # Their latency counts from when they wanted to go: the wait, then the interval.
    assert min(result.pings[number - 1].elapsed_s for number in waited(result)) > 1.5 * INTERVAL_S
    assert "stream waits: 5 pings waited for a free stream" in render_summary(result, verdict)
    assert to_json(result, verdict)["pings_that_waited_for_a_stream"] == 5


async def test_spill_opens_another_connection_instead(five_streams: RunningController, certs_dir: Path) -> None:
    result = await run(
        five_streams.url, certs_dir, Scenario("s", OneShot((INTERVAL_S,) * 10), streams=StreamPolicy.SPILL)
    )
    verdict = judge(result)
    assert verdict.ok, problem_lines(verdict)
    assert len(result.connections) == 2
    assert sorted(len(record.pings) for record in result.connections) == [5, 5]
    assert waited(result) == []
    # All ten at once, not in two rounds: every request was out before the first answer came, however slow the
    # machine (a wall-time bound of two intervals failed at 0.93 s in a busy CI run, with nothing waiting).
    sent = [ping.headers_sent_at_s for ping in result.pings]
    answered = [ping.first_byte_at_s for ping in result.pings]
    assert None not in sent
    assert None not in answered
    assert max(at for at in sent if at is not None) < min(at for at in answered if at is not None)
    assert verdict.multiplexed


async def test_the_controllers_limit_is_the_only_one(certs_dir: Path) -> None:
    """No cap of the switch's own (httpcore's was 100): a controller that takes 150 gets 120 pings on one
    connection at once; one that takes 100 gets the other 20 on a second connection under spill."""
    scenario = OneShot((HELD_OPEN_S,) * 120)
    wide = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, max_concurrent_streams=150)
    async with run_controller(wide) as controller:
        queued = await run(controller.url, certs_dir, Scenario("q", scenario, streams=StreamPolicy.QUEUE))
    assert len(queued.connections) == 1
    assert queued.peak_in_flight(1) == 120
    assert waited(queued) == []
    default = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)
    async with run_controller(default) as controller:
        spilled = await run(controller.url, certs_dir, Scenario("s", scenario, streams=StreamPolicy.SPILL))
    assert sorted(len(record.pings) for record in spilled.connections) == [20, 100]
    assert waited(spilled) == []


async def test_http1_hands_httpcore_no_more_requests_than_connections() -> None:
    """httpcore's pool rescans every request it holds whenever one comes or goes: HTTP/1.1 holds the rest back."""
    pool = StreamPool(
        httpx.AsyncHTTPTransport, lambda t: httpx.AsyncClient(transport=t), PingRequests(Request(), 10.0), 10.0, limit=3
    )
    inside = peak = 0
    release = asyncio.Event()

    async def request() -> None:
        nonlocal inside, peak
        async with pool.slot():
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(10):
                group.create_task(request())
            async with asyncio.timeout(5):  # a pool that lets none in would hang here
                while peak < 3:  # yield until the ten tasks have run up to their slot
                    await asyncio.sleep(0)
            release.set()
    finally:
        await pool.aclose()
    assert peak == 3


async def test_thousands_of_pings_do_not_hold_back_the_dial(controller: RunningController, certs_dir: Path) -> None:
    """The first ping dials while the others are still being handed to the client: each one's start costs the
    loop some microseconds, and 5,000 started in one loop turn held the dial back 120 ms, the controller idle."""
    order: list[TraceEvent] = []

    def emit(event: TraceEvent) -> None:
        if isinstance(event, (GetConnection, TlsStarted)):
            order.append(event)

    pings = 2000
    scenario = Scenario("many", OneShot((0.0,) * pings), streams=StreamPolicy.QUEUE)
    result = await one_shot(scenario, controller.url, client_ssl_context(certs_dir, "switch-1"), emit)
    assert judge(result).ok
    dialled = next(at for at, event in enumerate(order) if isinstance(event, TlsStarted))
    handed_before = sum(isinstance(event, GetConnection) for event in order[:dialled])
    # A dial takes its loop some turns (the connect, then TLS); the pings are handed over in 32 (all in one before)
    assert handed_before < pings / 2
    assert result.pings[-1].started_at_s == result.pings[0].started_at_s  # asked at once, each timed from then


def test_many_pings_of_one_interval_and_the_stream_policy_parse() -> None:
    cfg = parse_config({"scenarios": {"deep": {"pings": {"count": 1000, "interval_s": 1}, "streams": "spill"}}})
    deep = cfg.scenario("deep")
    assert deep.kind == OneShot((1.0,) * 1000)
    assert deep.streams is StreamPolicy.SPILL


async def test_a_run_stopped_with_its_pings_out_ends_them_all(five_streams: RunningController, certs_dir: Path) -> None:
    """A one-shot run cancelled (stopped) with pings on the wire and pings waiting for a stream: none is left."""
    written = asyncio.Event()

    def emit(event: TraceEvent) -> None:
        if isinstance(event, HeadersWritten):
            written.set()

    scenario = Scenario("stopped", OneShot((60.0,) * 8), streams=StreamPolicy.QUEUE)
    context = client_ssl_context(certs_dir, "switch-1")
    run_task = asyncio.create_task(one_shot(scenario, five_streams.url, context, emit))
    await written.wait()
    others = asyncio.all_tasks() - {run_task, asyncio.current_task()}
    pings = {task for task in others if "ping" in getattr(task.get_coro(), "__qualname__", "")}
    assert len(pings) == 8  # five on the wire, three waiting
    run_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run_task
    assert all(task.cancelled() for task in pings)  # not left to run out their time
