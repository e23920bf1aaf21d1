"""Times that are right: a short ping among long ones on one HTTP/2 connection is reported when its answer crossed
the wire, held against curl (nghttp2's one read loop) on the same controller in the same test.

httpcore's HTTP/2 connection (1.0.9), which the switch used before ``sim_switch.wire``, reported the 0.2 s ping of
``[0.2] + [2] * k`` at 2.03 s for every k from 4 up: its answer waited in a read lock behind the long ones.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
from pathlib import Path

import httpx

from dialout.config import OneShot, Scenario
from dialout.text import utc_text
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.results import PingResult
from tests.servers import ControllerProcess
from tests.switches import one_shot
from tests.test_curl import curl_pings

# Not run loaded (make test-loaded): it holds the switch's reading to curl's, measured in a round before it, and on
# a loaded machine the two rounds get different shares of the CPU (the switch read 0.35 s where curl had read 0.22 s,
# its own loop lagging 66 ms). What holds under load is the switch's cross-check with the controller, which says
# inconclusive where its own lag could explain a late reading (tests/test_cross_check.py, run loaded).

SHORT_S = 0.2
LONG_S = 1.0  # five times the short one: an answer held behind the long ones is unmistakable
# Every k up to 6 (httpcore's lock showed from 4), then spaced out to 50: three rounds of 1 s instead of sixteen of 2.
KS = (1, 2, 3, 4, 5, 6, 8, 11, 16, 23, 32, 50)
# Shapes run side by side in rounds of at most this many streams and shapes, curl's round then the switch's:
# sixteen rounds each instead of fifty, and little enough work at a round's start that the controller answers
# the short pings at 0.2 s and the switch (all its runs in this one process) is free to read them then. At 150
# streams and 15 shapes a round, the switch's 15 handshakes and 135 requests kept its loop busy past 0.2 s and it
# read some short answers 35 ms late, which is its true reading time but not the wire's.
STREAMS_A_ROUND = 100
SHAPES_A_ROUND = 8
TOLERANCE_S = 0.030
# Each transfer's URL and its times: from the request on its way (pretransfer) to the answer's end (total).
CURL_TIMES = "%{url_effective} %{time_pretransfer} %{time_total}\\n"


def rounds() -> list[list[int]]:
    """The ks, packed in order into rounds of at most ``STREAMS_A_ROUND`` streams and ``SHAPES_A_ROUND`` shapes."""
    packed: list[list[int]] = [[]]
    for k in KS:
        full = len(packed[-1]) == SHAPES_A_ROUND
        if full or sum(each + 1 for each in packed[-1]) + k + 1 > STREAMS_A_ROUND:
            packed.append([])
        packed[-1].append(k)
    return packed


def request_to_answer_s(ping: PingResult) -> float:
    """From its request headers written to its last byte read: what curl's total minus pretransfer measures."""
    assert ping.headers_sent_at_s is not None, ping
    assert ping.finished_at_s is not None, ping
    return ping.finished_at_s - ping.headers_sent_at_s


def curl_short_ping_s(url: str, certs_dir: Path, k: int) -> float:
    intervals = (SHORT_S,) + (LONG_S,) * k
    written = curl_pings(
        url,
        certs_dir,
        "--parallel",
        "--parallel-max",
        str(len(intervals)),
        write_out=CURL_TIMES,
        count=len(intervals),
        intervals=intervals,
    )
    [short] = [line.split() for line in written.splitlines() if line.split()[0].endswith(f"interval={SHORT_S}")]
    return float(short[2]) - float(short[1])


async def test_a_short_ping_among_long_ones_is_timed_as_curl_times_it(controller_process: ControllerProcess) -> None:
    certs_dir = controller_process.config.parent / "certs"
    # k, switch, curl, reported latency, the switch's lag, the controller's own request-to-answer time and lag
    rows: list[tuple[int, float, float, float, float, float, float]] = []
    # The switch runs in this process, which holds the whole suite's objects: a full collection of them, landing
    # at 0.2 s, would hold its loop for tens of milliseconds (a fresh `python -m sim_switch` has no such heap).
    # Freeze what is here, so the collector looks only at what the runs make.
    gc.collect()
    gc.freeze()
    try:
        await run_rounds(controller_process, certs_dir, rows)
    finally:
        gc.unfreeze()
    # Never later than curl by more than the tolerance, and never earlier than the controller can answer. (Curl is
    # the noisier of the two here: several curl processes at once, each with up to 51 transfers, report the short
    # ping at up to 0.27 s in rounds where the switch reports 0.21 s; the switch is not held to curl's lateness.)
    # On a loaded machine the switch reads late what its own loop lagged (it says how much: loop_lag_s), and the
    # controller may itself answer later than it answered curl a moment before (its own account says when it
    # sent the answer, and how long its loop was held meanwhile: a request it read late arrived earlier than its
    # time says); later than both is a read held back, the bug this test is for (2 s for 0.2 s).
    late = [row for row in rows if row[1] > max(row[2], row[5] + row[6]) + TOLERANCE_S + row[4]]
    assert not late, (
        "ping 1 timed later than curl timed it "
        f"(k, switch s, curl s, reported s, lag s, controller s, controller's lag s): {late}"
    )
    assert min(row[1] for row in rows) >= SHORT_S
    # What the report says (from the ping's start, its handshake included) is the short interval, not a long one:
    # nearer the one than the other. (SHORT_S + 0.2 held the handshake to 0.2 s besides: 0.54 s once, with four
    # test workers on two cores.)
    reported = max(row[3] - row[4] for row in rows)
    assert reported < (SHORT_S + LONG_S) / 2, f"ping 1 reported at {reported:.3f} s: {rows}"


async def run_rounds(
    controller: ControllerProcess, certs_dir: Path, rows: list[tuple[int, float, float, float, float, float, float]]
) -> None:
    """Each round: curl's shapes, then the switch's, each shape's ping 1 as a row."""
    url = controller.url
    context = client_ssl_context(certs_dir, "switch-1")
    for shapes in rounds():
        # One after the other, so that neither client's burst delays the other's answers.
        curl_s = await asyncio.gather(*(asyncio.to_thread(curl_short_ping_s, url, certs_dir, k) for k in shapes))
        results = await asyncio.gather(
            *(one_shot(Scenario(f"k{k}", OneShot((SHORT_S,) + (LONG_S,) * k)), url, context, ask=False) for k in shapes)
        )
        answered_in = controller_answer_times(controller.admin_url)
        for k, result, reference_s in zip(shapes, results, curl_s, strict=True):
            assert len(result.connections) == 1, f"k={k}: the pings should share one connection"
            short = result.pings[0]
            assert short.ok, short
            controller_s, controller_lag_s = answered_in[(short.local_port, short.stream_id)]
            row = (k, request_to_answer_s(short), reference_s, short.elapsed_s, short.loop_lag_s, controller_s)
            rows.append((*row, controller_lag_s))


def controller_answer_times(admin_url: str) -> dict[tuple[int | None, int | None], tuple[float, float]]:
    """The controller's own account of each answered stream of switch-1: (the switch's port, the stream id) ->
    seconds from its request's headers arriving to its answer's last byte handed to the wire, and how long its
    loop was held meanwhile."""
    answer = httpx.get(f"{admin_url}/connections?switch=switch-1&streams=1", trust_env=False).json()
    return {
        (int(record["peer"].rsplit(":", 1)[1]), stream["stream_id"]): (stream["answered_in_s"], stream["loop_lag_s"])
        for record in answer["connections"]
        for stream in record.get("stream_times", [])
    }


def test_a_stamp_is_datetimes_iso_8601_to_the_millisecond() -> None:
    """The stamps both halves record (``dialout.text.utc_text``, its second's text made once) read as datetime's."""
    for timestamp in (
        0.0,
        1_796_000_000.0,
        1_796_000_000.0005,
        1_796_000_000.9994,
        1_796_000_000.9999996,
        1.5e9 + 0.25,
    ):
        expected = datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="milliseconds")
        assert utc_text(timestamp) == expected
