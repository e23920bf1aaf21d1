"""The trials of what a client does with its requests when the controller refuses one (REFUSED_STREAM, a 503 with
Retry-After), sends GOAWAY (graceful, with requests dropped, after a number of requests), lowers its stream limit,
or sends a PING. Each is ``async (bench, deadline) -> Outcome`` and ends by ``deadline``.
"""

from __future__ import annotations

import asyncio
import time

from controller.accounts.connections import ControllerConnection, StreamSpan
from controller.trials.bench import (
    AMBIGUOUS,
    POLL_S,
    Bench,
    Live,
    Outcome,
    asks_again_anyway,
    no_connection,
    read_by,
    sent_again,
    target_of,
)
from controller.trials.results import Step, Verdict

PING_ACK_S = 2.0
RETRY_AFTER_S = 2
MORE_REQUESTS = 3  # max-requests: GOAWAY after this many more requests
WATCH_LIMIT_S = 6.0  # stream-limit: how long the client is watched after it ACKed the limit


async def ping(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    if live is None:
        return no_connection([])
    sent = time.monotonic()
    steps = [Step(bench.at(sent), "controller", "PING", live.record.id)]
    acked = await live.protocol.ping()
    try:
        rtt_s = (await asyncio.wait_for(acked, PING_ACK_S)).rtt_s
    except TimeoutError:
        sentence = (
            f"no PING ACK within {PING_ACK_S:g} s: a controller's keepalive would drop this client (RFC 9113 6.7)"
        )
        return Verdict.FAIL, sentence, steps
    steps.append(Step(bench.at(sent + rtt_s), "switch", "PING ACK", live.record.id))
    return Verdict.PASS, f"PING ACKed in {rtt_s * 1000:.1f} ms (RFC 9113 section 6.7)", steps


async def refused_stream(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    if live is None:
        return no_connection([])
    before = len(live.protocol.refused)
    live.protocol.refuse_next_requests(1)
    refused = await bench.until(
        lambda: live.protocol.refused[before] if len(live.protocol.refused) > before else None, deadline
    )
    if refused is None:
        return Verdict.NOT_EXERCISED, "the switch sent no request to refuse before the deadline", []
    target = refused.target.decode("latin-1")
    read = await read_by(bench, refused.read, live.record, deadline)
    steps = [
        Step(
            bench.at(refused.at),
            "controller",
            f"RST_STREAM REFUSED_STREAM on {target}",
            live.record.id,
            refused.stream_id,
        )
    ]
    again = await bench.until(lambda: sent_again(bench, live.record, target, read), deadline) if read else None
    if again is None:
        sentence = (
            "never sent again: a REFUSED_STREAM request was not processed and may be retried (RFC 9113 section 8.7); "
            "the likely fix: retry it, on this connection or a new one"
        )
        return Verdict.FAIL, sentence, steps
    steps.append(Step(bench.at(again.started), "switch", f"sent {target} again", again.connection.id, again.stream_id))
    waited_ms = (again.started - refused.at) * 1000
    if asks_again_anyway(bench, target, refused.at):
        return Verdict.NOTE, f"{target} came again {waited_ms:.0f} ms later; {AMBIGUOUS}", steps
    return (
        Verdict.PASS,
        f"sent again {waited_ms:.0f} ms later (RFC 9113 section 8.7: not processed, safe to retry)",
        steps,
    )


async def _goaway(bench: Bench, deadline: float, drop_in_flight: bool, after_requests: int = 0) -> Outcome:
    """GOAWAY with requests in flight: naming the last stream (graceful), or one below them (they are dropped)."""
    live = await bench.connection(deadline, in_flight=2 if drop_in_flight else 1)
    if live is None:
        return no_connection([])
    if after_requests:
        counted = live.record.streams + after_requests
        await bench.until(lambda: True if live.record.streams >= counted or live.record.closed else None, deadline)
        if live.record.closed is not None:
            return (
                Verdict.NOTE,
                (
                    f"closed the connection itself after {live.record.streams} request(s), before the controller's "
                    f"{after_requests} more: there was no connection to move from"
                ),
                [],
            )
        if live.record.streams < counted:
            return (
                Verdict.NOT_EXERCISED,
                f"the switch did not send {after_requests} more requests before the deadline",
                [],
            )
    in_flight = {span.stream_id: span for span in live.record.spans_in_flight() if span.stream_id is not None}
    if not in_flight:
        return no_connection([])
    sent = time.monotonic()
    named = await live.protocol.goaway(max(0, min(in_flight) - 2) if drop_in_flight else None)
    steps = [Step(bench.at(sent), "controller", f"GOAWAY NO_ERROR, last stream {named}", live.record.id)]
    dropped = [target_of(span) for stream_id, span in in_flight.items() if stream_id > named]
    kept = [span for stream_id, span in in_flight.items() if stream_id <= named]
    later = await bench.until(lambda: _moved_on(bench, live.record, sent, dropped), deadline)
    await bench.until(lambda: True if all(span.ended is not None for span in kept) else None, deadline)
    # Requests that crossed the GOAWAY on the wire are not the client's fault: only a stream above the highest it
    # had opened when it ACKed the PING behind the GOAWAY was sent after it read the GOAWAY (with no ACK, as from
    # a client that hung up at once, none can be told apart, and none is held against it).
    behind = live.protocol.goaway_read
    read = await read_by(bench, behind, live.record, deadline) if behind is not None else None
    after_goaway = [
        refused
        for refused in live.protocol.refused
        if read is not None and refused.at >= sent and refused.stream_id > read.highest_stream_id
    ]
    for refused in after_goaway:
        what = "sent a request on the old connection after its GOAWAY"
        steps.append(Step(bench.at(refused.at), "switch", what, live.record.id, refused.stream_id))
    if later:
        first = later[0]
        what = f"moved on to conn #{first.connection.id}"
        steps.append(Step(bench.at(first.started), "switch", what, first.connection.id, first.stream_id))
    verdict, sentence = _judge_goaway(named, len(after_goaway), dropped, kept, later)
    return verdict, sentence, steps


def _moved_on(bench: Bench, old: ControllerConnection, since: float, wanted: list[str]) -> list[StreamSpan] | None:
    """The switch's requests on other connections since ``since``, once they include each of ``wanted`` (or, with
    none wanted, once there is one)."""
    later = [span for span in bench.spans(since) if span.connection is not old]
    targets = [target_of(span) for span in later]
    return later if later and all(want in targets for want in wanted) else None


def _judge_goaway(
    named: int,
    sent_after: int,
    dropped: list[str],
    kept: list[StreamSpan],
    later: list[StreamSpan] | None,
) -> tuple[Verdict, str]:
    if sent_after:
        return Verdict.FAIL, (
            f"sent {sent_after} request(s) on the connection after its GOAWAY (RFC 9113 section 6.8: it takes no new "
            "streams); the likely fix: open a new connection for them"
        )
    if later is None:
        what = "the dropped requests were not all sent again" if dropped else "no request came on a new connection"
        return Verdict.FAIL, f"{what} before the deadline (RFC 9113 section 6.8)"
    if any(span.ended is None for span in kept):
        return Verdict.FAIL, "a request the GOAWAY let finish was not answered"
    moved = f"conn #{later[0].connection.id}"
    if dropped:
        return Verdict.PASS, (
            f"the {len(dropped)} request(s) above last stream {named} were sent again on {moved} (RFC 9113 section "
            "6.8: not processed)"
        )
    return Verdict.PASS, (
        f"{len(kept)} request(s) in flight answered on the old connection, new ones on {moved}, none on the old "
        "after the GOAWAY"
    )


async def goaway_graceful(bench: Bench, deadline: float) -> Outcome:
    return await _goaway(bench, deadline, drop_in_flight=False)


async def goaway_unprocessed(bench: Bench, deadline: float) -> Outcome:
    return await _goaway(bench, deadline, drop_in_flight=True)


async def max_requests(bench: Bench, deadline: float) -> Outcome:
    return await _goaway(bench, deadline, drop_in_flight=False, after_requests=MORE_REQUESTS)


async def stream_limit(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    if live is None:
        return no_connection([])
    acks = len(live.protocol.settings_acked)
    sent = time.monotonic()
    await live.protocol.limit_streams(1)
    steps = [Step(bench.at(sent), "controller", "SETTINGS_MAX_CONCURRENT_STREAMS = 1", live.record.id)]
    acked = await bench.until(
        lambda: live.protocol.settings_acked[acks] if len(live.protocol.settings_acked) > acks else live.record.closed,
        deadline,
    )
    if acked is None:
        return Verdict.FAIL, "the SETTINGS were never ACKed (RFC 9113 section 6.5.3)", steps
    if live.record.closed is None:
        steps.append(Step(bench.at(acked), "switch", "SETTINGS ACK", live.record.id))
        live.protocol.count_open_streams()
        await bench.watch(min(deadline, time.monotonic() + WATCH_LIMIT_S))
    # As the frames came, not as the app saw them: the app's account of a stream ends a moment after its last
    # frame went, and a client that opens the next stream on reading it is within the limit all the same.
    most = live.protocol.most_open_streams
    if live.record.closed is not None:
        return _ended_under_a_limit(bench, live, acked, most, steps)
    await live.protocol.limit_streams(live.protocol.config.h2_max_concurrent_streams)
    if most > 1:
        return (
            Verdict.FAIL,
            f"kept {most} streams open at once after ACKing a limit of 1 (RFC 9113 section 6.5.2)",
            steps,
        )
    elsewhere = {s.connection.id for s in bench.spans(acked) if s.connection is not live.record}
    how = (
        f"opened conn {', '.join(f'#{n}' for n in sorted(elsewhere))} for the rest" if elsewhere else "queued the rest"
    )
    return Verdict.PASS, f"kept at most {most} stream open after ACKing the limit of 1, and {how}", steps


def _ended_under_a_limit(bench: Bench, live: Live, acked: float, most: int, steps: list[Step]) -> Outcome:
    """The connection ended once the limit was sent: broken by the client's frames (h2 raised), or closed by it."""
    closed = live.record.closed
    assert closed is not None
    applied = live.protocol.connection.local_settings.max_concurrent_streams == 1  # h2 applies it at the ACK
    if live.protocol.broke_with is not None and applied:
        steps.append(Step(bench.at(closed), "switch", "lost the connection", live.record.id))
        return (
            Verdict.FAIL,
            (
                f"the connection ended {max(0.0, closed - acked):.2f} s after the client ACKed the limit of 1: it "
                f"opened more streams than that ({live.protocol.broke_with}), which ends the connection (RFC 9113 "
                "section 5.1.2); the likely fix: hold new streams until one ends, or open another connection"
            ),
            steps,
        )
    if live.protocol.broke_with is not None:
        return Verdict.FAIL, f"the connection broke ({live.protocol.broke_with}) before the limit applied", steps
    steps.append(Step(bench.at(closed), "switch", "closed the connection", live.record.id))
    if not applied:
        return Verdict.NOTE, "closed the connection itself before ACKing the SETTINGS", steps
    if most:
        return Verdict.NOTE, f"kept at most {most} stream open after ACKing the limit of 1, then closed it", steps
    after_s = closed - acked
    return Verdict.NOTE, f"closed the connection itself {after_s:.2f} s after the ACK, before another stream", steps


async def retry_after(bench: Bench, deadline: float) -> Outcome:
    """A 503 with Retry-After, and whether its target comes again, and when. (No PING is needed to tell a retry
    from a batch sibling here: the 503 is the app's answer, sent once the request was whole, and a request for the
    same target after it is the client's doing after it.)"""
    if not bench.proxy and await bench.connection(deadline) is None:
        return no_connection([])
    before = len(bench.unavailable.answered)
    bench.unavailable.next(RETRY_AFTER_S)
    answered = await bench.until(
        lambda: bench.unavailable.answered[before] if len(bench.unavailable.answered) > before else None, deadline
    )
    if answered is None:
        return Verdict.NOT_EXERCISED, "the switch sent no request to answer 503 before the deadline", []
    at, target, connection_id = answered
    steps = [Step(bench.at(at), "controller", f"503 Retry-After: {RETRY_AFTER_S} to {target}", connection_id)]
    again = await bench.until(
        lambda: next((span for span in bench.spans(at) if target_of(span) == target), None), deadline
    )
    if again is None:
        return (
            Verdict.NOTE,
            "did not send it again (a 503 is an answer; a client that retries should wait Retry-After)",
            steps,
        )
    waited_s = again.started - at
    steps.append(Step(bench.at(again.started), "switch", f"sent {target} again", again.connection.id, again.stream_id))
    if asks_again_anyway(bench, target, at):
        return Verdict.NOTE, f"{target} came again {waited_s:.2f} s later; {AMBIGUOUS}", steps
    if waited_s + POLL_S < RETRY_AFTER_S:
        return (
            Verdict.FAIL,
            f"sent it again {waited_s:.2f} s later, before Retry-After's {RETRY_AFTER_S} s (RFC 9110 section "
            "10.2.3); the likely fix: wait what Retry-After says",
            steps,
        )
    return Verdict.PASS, f"sent it again {waited_s:.2f} s later, as Retry-After said (RFC 9110 section 10.2.3)", steps
