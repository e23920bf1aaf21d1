"""Both ends check each other's times: the controller says how long it took to answer each stream
(``/connections?streams=1``), and the switch holds that against how long each answer took to reach it. An answer
that arrived later than the controller sent it, by more than LATE_ANSWER_S and the round trip, fails the run.

The reference for "late" is real: httpx on httpcore's HTTP/2 connection (1.0.9), the client the switch used before
``sim_switch.wire``, still delivers a 0.2 s answer behind four 1 s ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import httpx
import pytest

from dialout.config import OneShot, Scenario
from dialout.loop_lag import PERIOD_S
from sim_switch.dial.controller_view import compare, late_answers
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import HeadersWritten, TraceEvent
from sim_switch.model.results import LATE_ANSWER_S, Concurrency, ConnectionRecord, LateAnswer, PingResult, RunResult
from sim_switch.model.verdict import INCONCLUSIVE_EXIT, judge
from sim_switch.render.report import problem_lines, verdict_line
from sim_switch.render.trace import describe_disagreement
from tests.servers import ControllerProcess, RunningController
from tests.switches import one_shot

pytestmark = pytest.mark.timing  # verdicts from times, bounds on how long: run loaded too

SHORT_S, LONG_S = 0.2, 1.0
# The switch's loop held up this long once its one ping is sent: the controller answers meanwhile (after SHORT_S),
# loaded machine or not.
HELD_S = 1.0
SHAPE = (SHORT_S,) + (LONG_S,) * 4  # four or more long ones: what httpcore's read lock needs to show


async def test_the_switch_and_the_controller_agree_on_every_streams_time(
    controller: RunningController, certs_dir: Path
) -> None:
    result = await one_shot(
        Scenario("skewed", OneShot(SHAPE)), controller.url, client_ssl_context(certs_dir, "switch-1")
    )
    verdict = judge(result)
    assert verdict.ok, problem_lines(verdict)
    assert result.controller_view is not None
    [record] = result.controller_view.records
    times = {entry["stream_id"]: (entry["answered_in_s"], entry["loop_lag_s"]) for entry in record["stream_times"]}
    for ping in result.pings:
        assert ping.stream_id is not None
        answered_in_s, held_s = times[ping.stream_id]
        # The controller slept the interval, then answered: at once, but for what its own loop was held meanwhile
        # (a loaded machine: a CI run's was held 0.28 s, and answered a 0.2 s ping in 0.30 s).
        assert answered_in_s >= ping.interval_s
        assert answered_in_s < ping.interval_s + LATE_ANSWER_S + held_s
    # Had an answer been late, the run would have failed, saying with both numbers which one.
    held_back = LateAnswer(1, record["peer"], 1, 1, switch_s=2.03, controller_s=0.201, bound_s=0.101)
    view = dataclasses.replace(result.controller_view, disagreements=(held_back,))
    judged = judge(dataclasses.replace(result, controller_view=view))
    assert not judged.ok
    assert any("answered in 0.201 s by the controller but took 2.030 s" in line for line in problem_lines(judged))


async def test_the_cross_check_catches_an_answer_held_back_by_httpcores_read_lock(
    controller: RunningController, certs_dir: Path
) -> None:
    async with httpx.AsyncClient(http2=True, verify=client_ssl_context(certs_dir, "switch-1")) as old:

        async def timed(interval_s: float) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await old.get(f"{controller.url}/ping", params={"interval": str(interval_s)})
            return response, time.perf_counter() - started

        (short, short_s), *_ = await asyncio.gather(*(timed(interval_s) for interval_s in SHAPE))
        answer = await old.get(f"{controller.url}/connections", params={"switch": "switch-1", "streams": "1"})
    stream_id = short.extensions["stream_id"]
    [record] = [r for r in answer.json()["connections"] if any(t["stream_id"] == stream_id for t in r["stream_times"])]
    ours = ConnectionRecord(1, 0.0, str(record["peer"]), "", None, rtt_s=0.001)
    ping = PingResult(1, SHORT_S, short_s, 200, "HTTP/2", 1, stream_id, headers_sent_at_s=0.0, finished_at_s=short_s)
    [late] = late_answers(ours, [ping], record["stream_times"])
    assert isinstance(late, LateAnswer)
    # The controller answered on time, but for what its own loop lagged (it runs in this test's loop: CI's loaded
    # run measured 0.456 s of it and an answer at 0.475 s)...
    assert late.controller_s < SHORT_S + LATE_ANSWER_S + late.controller_lag_s
    assert late.late_s > LONG_S / 2  # ...and the answer reached httpx with the long ones
    words = describe_disagreement(late)
    assert f"ping 1 (stream {stream_id}) was answered in {late.controller_s:.3f} s by the controller" in words


async def test_an_answer_read_late_while_the_switch_itself_lagged_is_inconclusive(
    controller_process: ControllerProcess,
) -> None:
    """The switch's own loop held up while the answer came (a busy machine): its late reading is no disagreement
    and no agreement either; the run says so, with exit code 3 (issue 28)."""
    certs = controller_process.config.parent / "certs"
    loop = asyncio.get_running_loop()

    def hold_once_sent(event: TraceEvent) -> None:
        if isinstance(event, HeadersWritten):  # the request is out (and, soon after, the PING's ACK read: the
            loop.call_later(SHORT_S / 2, time.sleep, HELD_S)  # round trip is not held): hold past the answer

    result = await one_shot(
        Scenario("held", OneShot((SHORT_S,))),
        controller_process.url,
        client_ssl_context(certs, "switch-1"),
        hold_once_sent,
    )
    verdict = judge(result)
    [ping] = result.pings
    assert ping.loop_lag_s >= HELD_S - 2 * PERIOD_S  # the lag it measured is the hold
    assert verdict.ok, problem_lines(verdict)  # not a disagreement...
    [late] = verdict.inconclusive  # ...and not an agreement
    assert late.switch_lag_s == ping.loop_lag_s
    assert verdict.exit_code == INCONCLUSIVE_EXIT
    line = verdict_line(verdict)
    assert line.startswith("INCONCLUSIVE: ")
    assert f"while this switch's own event loop lagged {ping.loop_lag_s * 1000:.0f} ms" in line


def test_a_late_answer_the_lag_cannot_explain_still_fails() -> None:
    """Lag excuses no more than itself: an answer 1.8 s late with 50 ms of lag is still held back on its way."""
    late = LateAnswer(1, "127.0.0.1:1", 1, 1, switch_s=2.03, controller_s=0.201, bound_s=0.101, switch_lag_s=0.05)
    assert not late.inconclusive
    lagged = dataclasses.replace(late, switch_lag_s=1.8)
    assert lagged.inconclusive


def _two_pings(overlap_s: float) -> tuple[ConnectionRecord, list[PingResult]]:
    """Two pings on one connection of 0.3 ms round trip, the second written ``overlap_s`` before the first's answer
    was read."""
    connection = ConnectionRecord(1, 0.0, "127.0.0.1:50000", "127.0.0.1:8443", 50000, rtt_s=0.0003)
    first = PingResult(1, 0.0, 0.01, 200, "HTTP/2", 1, 1, headers_sent_at_s=0.10, finished_at_s=1.10)
    second = PingResult(
        2, 0.0, 0.01, 200, "HTTP/2", 1, 3, headers_sent_at_s=1.10 - overlap_s, finished_at_s=2.10 - overlap_s
    )
    return connection, [first, second]


def _record(peak: int) -> dict[str, object]:
    return {"id": 7, "peer": "127.0.0.1:50000", "streams": 2, "peak_in_flight": peak}


def test_two_pings_that_crossed_on_the_wire_are_no_disagreement() -> None:
    """The first answered before the second arrived: at once at the switch for less than the round trip and the
    scheduling allowance, one at a time at the controller. Neither end is wrong; neither proves multiplexing."""
    connection, pings = _two_pings(overlap_s=0.002)
    view = compare("switch-1", [connection], pings, [_record(peak=1)], query_connection=None)
    assert view.disagreements == ()
    result = RunResult(Scenario("crossed", OneShot((0.0, 0.0))), "https://c", tuple(pings), (connection,), 2.2, view)
    verdict = judge(result)
    assert verdict.peak_in_flight == 2  # the switch's own count stays what it saw
    assert verdict.ok
    assert not verdict.multiplexed


def test_two_pings_at_once_for_longer_than_a_crossing_disagree_with_a_controller_that_had_one() -> None:
    """A second of overlap is no crossing: a controller that says one at a time is wrong (or is not the one
    answering), and the run fails on it."""
    connection, pings = _two_pings(overlap_s=1.0 - LATE_ANSWER_S)
    view = compare("switch-1", [connection], pings, [_record(peak=1)], query_connection=None)
    [disagreement] = view.disagreements
    assert disagreement == Concurrency(1, "127.0.0.1:50000", switch_peak=2, controller_peak=1)
    agreeing = compare("switch-1", [connection], pings, [_record(peak=2)], query_connection=None)
    assert agreeing.agrees
    result = RunResult(
        Scenario("at once", OneShot((1.0, 1.0))), "https://c", tuple(pings), (connection,), 2.2, agreeing
    )
    assert judge(result).multiplexed
