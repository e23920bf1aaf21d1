"""The test bench: runs the plan's trials against one switch's client, live, and judges each from the controller's
own account of the switch's connections and streams (``ConnectionRegistry``) and from what its HTTP/2 protocol saw
(``ActionableH2Protocol``: refusals, SETTINGS ACKs, PING ACKs).

Every wait has a deadline (the trial's); a switch that never comes, or goes for good, fails the trial it was in,
and the next one waits for it again.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import h2.exceptions
from hypercorn.asyncio.tcp_server import TCPServer

from controller.accounts.connections import ConnectionRegistry, ControllerConnection, StreamSpan
from controller.http.app import Unavailable
from controller.server.accepting import GATE_ATTRIBUTE, HandshakeGate
from controller.server.asgi_tls import live_servers
from controller.server.h2_actions import ActionableH2Protocol, PingAck
from controller.trials.plan import TrialName, TrialSpec
from controller.trials.results import Step, TrialResult, Verdict

T = TypeVar("T")
POLL_S = 0.01  # how often a wait looks at the account again
PING_ACK_S = 2.0
RETRY_AFTER_S = 2
MORE_REQUESTS = 3  # max-requests: GOAWAY after this many more requests
STORM_GAP_S = 0.1  # a redial sooner than this after the last connection ended had no backoff
WATCH_REDIALS_S = 3.0  # reset: how long the redials are watched after the first one
REFUSE_S = 6.0  # refuse: how long new connections are refused
STORM_DIALS = 5
GRPC_INITIAL_S = 1.0  # gRPC's connection backoff: the well-known reference (grpc/doc/connection-backoff.md)


@dataclass(frozen=True)
class Live:
    """One of the switch's connections, open now: the account's record, Hypercorn's task and our protocol."""

    record: ControllerConnection
    server: TCPServer
    protocol: ActionableH2Protocol


class Bench:
    def __init__(
        self, config: object, registry: ConnectionRegistry, unavailable: Unavailable, switch: str | None
    ) -> None:
        self._config = config
        self._registry = registry
        self.unavailable = unavailable
        self.config = config
        self.switch = switch
        self.t0 = time.monotonic()

    def at(self, moment: float) -> float:
        return round(moment - self.t0, 3)

    async def until(self, found: Callable[[], T | None], deadline: float) -> T | None:
        """``found()`` once it is not None, or None at ``deadline`` (monotonic)."""
        while True:
            value = found()
            if value is not None or time.monotonic() >= deadline:
                return value
            await asyncio.sleep(POLL_S)

    async def watch(self, until: float) -> None:
        """Let the client act until ``until`` (monotonic): what it does meanwhile is read from the account after."""
        await asyncio.sleep(max(0.0, until - time.monotonic()))

    async def first_switch(self, deadline: float) -> str | None:
        """The switch under trial: ``--switch``, or the first that dials in with a certificate."""
        if self.switch is None:
            self.switch = await self.until(
                lambda: next((c.switch for c in self._registry.connections() if c.switch), None), deadline
            )
        return self.switch

    def live(self) -> list[Live]:
        found = []
        for server in live_servers(self._config):
            record = getattr(server, "_connection", None)
            protocol = getattr(getattr(server, "protocol", None), "protocol", None)
            if (
                isinstance(record, ControllerConnection)
                and record.switch == self.switch
                and record.closed_at is None
                and isinstance(protocol, ActionableH2Protocol)
                and protocol.goaway_last_stream_id is None
            ):
                found.append(Live(record, server, protocol))
        return found

    async def connection(self, deadline: float, in_flight: int = 0) -> Live | None:
        """A live HTTP/2 connection of the switch with at least ``in_flight`` requests in flight."""
        return await self.until(
            lambda: next((c for c in self.live() if c.record.in_flight >= in_flight), None), deadline
        )

    def spans(self, after: float) -> list[StreamSpan]:
        """The switch's requests that began after ``after`` (monotonic), oldest first; not its questions."""
        return [
            span
            for span in self._registry.spans()
            if span.started > after and span.connection.switch == self.switch and span.path == "/ping"
        ]

    def connections(self, after: float) -> list[ControllerConnection]:
        return [c for c in self._registry.connections(self.switch) if c.opened > after]

    async def run(self, spec: TrialSpec) -> TrialResult:
        started = time.monotonic()
        deadline = started + spec.deadline_s
        trial = TRIALS[spec.name]
        try:
            verdict, sentence, steps = await trial(self, deadline)
        except (OSError, h2.exceptions.ProtocolError) as exc:  # the connection went mid-action: a failed trial
            verdict, sentence, steps = Verdict.FAIL, f"the trial could not finish: {exc or type(exc).__name__}", []
        return TrialResult(
            spec.name.value, verdict, sentence, tuple(steps), self.at(started), self.at(time.monotonic())
        )


Outcome = tuple[Verdict, str, list[Step]]
AMBIGUOUS = (
    "but this client asks for the same target again and again on its own, so a retry cannot be told from its next "
    "request: give each request a target of its own (the shipped switch: request.path with {n})"
)


def _target(span: StreamSpan) -> str:
    return f"{span.path}?{span.query.decode('latin-1')}" if span.query else span.path


def _no_connection(steps: list[Step]) -> Outcome:
    return Verdict.FAIL, "the switch had no HTTP/2 connection with requests in flight before the deadline", steps


async def _ping(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    if live is None:
        return _no_connection([])
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


async def _refused_stream(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    if live is None:
        return _no_connection([])
    before = len(live.protocol.refused)
    live.protocol.refuse_next_requests(1)
    refused = await bench.until(
        lambda: live.protocol.refused[before] if len(live.protocol.refused) > before else None, deadline
    )
    if refused is None:
        return Verdict.FAIL, "the switch sent no request to refuse before the deadline", []
    target = refused.target.decode("latin-1")
    read = await _read_by(refused.read, deadline)
    steps = [
        Step(
            bench.at(refused.at),
            "controller",
            f"RST_STREAM REFUSED_STREAM on {target}",
            live.record.id,
            refused.stream_id,
        )
    ]
    again = await bench.until(lambda: _again(bench, live.record, target, read), deadline) if read else None
    if again is None:
        sentence = (
            "never sent again: a REFUSED_STREAM request was not processed and may be retried (RFC 9113 section 8.7); "
            "the likely fix: retry it, on this connection or a new one"
        )
        return Verdict.FAIL, sentence, steps
    steps.append(Step(bench.at(again.started), "switch", f"sent {target} again", again.connection.id, again.stream_id))
    waited_ms = (again.started - refused.at) * 1000
    if _asks_again_anyway(bench, target, refused.at):
        return Verdict.NOTE, f"{target} came again {waited_ms:.0f} ms later; {AMBIGUOUS}", steps
    return (
        Verdict.PASS,
        f"sent again {waited_ms:.0f} ms later (RFC 9113 section 8.7: not processed, safe to retry)",
        steps,
    )


async def _read_by(acked: asyncio.Future[PingAck], deadline: float) -> PingAck | None:
    """The ACK of the PING sent behind an action: the client has read the action (None: no ACK by the deadline)."""
    try:
        return await asyncio.wait_for(asyncio.shield(acked), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return None


def _again(bench: Bench, on: ControllerConnection, target: str, read: PingAck) -> StreamSpan | None:
    """A request for ``target`` sent after the client had read what the PING followed: on ``on``, a stream above
    the highest it had opened by the ACK; on another connection, one that began after the ACK. (Requests sent at
    once with the one refused, as a batch is, came before the ACK, and are not taken for a retry.)"""
    for span in bench.spans(read.at - 1.0):
        if _target(span) != target:
            continue
        if span.connection is on and (span.stream_id or 0) > read.highest_stream_id:
            return span
        if span.connection is not on and span.started > read.at:
            return span
    return None


def _asks_again_anyway(bench: Bench, target: str, before: float) -> bool:
    """Whether the client asked for ``target`` more than once in the last minute before ``before``: then a request
    for it after an action may be its next one as well as a retry."""
    return sum(1 for span in bench.spans(before - 60.0) if span.started < before and _target(span) == target) > 1


async def _goaway(bench: Bench, deadline: float, drop_in_flight: bool, after_requests: int = 0) -> Outcome:
    """GOAWAY with requests in flight: naming the last stream (graceful), or one below them (they are dropped)."""
    live = await bench.connection(deadline, in_flight=2 if drop_in_flight else 1)
    if live is None:
        return _no_connection([])
    if after_requests:
        counted = live.record.streams + after_requests
        if await bench.until(lambda: True if live.record.streams >= counted else None, deadline) is None:
            return Verdict.FAIL, f"the switch did not send {after_requests} more requests before the deadline", []
    in_flight = {span.stream_id: span for span in live.record.spans_in_flight() if span.stream_id is not None}
    if not in_flight:
        return _no_connection([])
    sent = time.monotonic()
    named = await live.protocol.goaway(max(0, min(in_flight) - 2) if drop_in_flight else None)
    steps = [Step(bench.at(sent), "controller", f"GOAWAY NO_ERROR, last stream {named}", live.record.id)]
    dropped = [_target(span) for stream_id, span in in_flight.items() if stream_id > named]
    kept = [span for stream_id, span in in_flight.items() if stream_id <= named]
    later = await bench.until(lambda: _moved_on(bench, live.record, sent, dropped), deadline)
    await bench.until(lambda: True if all(span.ended is not None for span in kept) else None, deadline)
    after_goaway = [refused for refused in live.protocol.refused if refused.at >= sent]
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
    targets = [_target(span) for span in later]
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


async def _goaway_graceful(bench: Bench, deadline: float) -> Outcome:
    return await _goaway(bench, deadline, drop_in_flight=False)


async def _goaway_unprocessed(bench: Bench, deadline: float) -> Outcome:
    return await _goaway(bench, deadline, drop_in_flight=True)


async def _max_requests(bench: Bench, deadline: float) -> Outcome:
    return await _goaway(bench, deadline, drop_in_flight=False, after_requests=MORE_REQUESTS)


async def _stream_limit(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    if live is None:
        return _no_connection([])
    acks = len(live.protocol.settings_acked)
    sent = time.monotonic()
    await live.protocol.limit_streams(1)
    steps = [Step(bench.at(sent), "controller", "SETTINGS_MAX_CONCURRENT_STREAMS = 1", live.record.id)]
    acked = await bench.until(
        lambda: live.protocol.settings_acked[acks] if len(live.protocol.settings_acked) > acks else None, deadline
    )
    if acked is None:
        return Verdict.FAIL, "the SETTINGS were never ACKed (RFC 9113 section 6.5.3)", steps
    steps.append(Step(bench.at(acked), "switch", "SETTINGS ACK", live.record.id))
    watch_until = min(deadline, time.monotonic() + WATCH_REDIALS_S * 2)
    await bench.watch(watch_until)
    mine = [s for s in bench.spans(acked) if s.connection is live.record]
    elsewhere = {s.connection.id for s in bench.spans(acked) if s.connection is not live.record}
    most = _most_at_once(mine)
    if live.record.closed is not None:
        steps.append(Step(bench.at(live.record.closed), "switch", "lost the connection", live.record.id))
        return (
            Verdict.FAIL,
            (
                f"the connection ended {live.record.closed - acked:.2f} s after the client ACKed the limit of 1: it "
                "opened more streams than that, which ends the connection (RFC 9113 section 5.1.2); the likely fix: "
                "hold new streams until one ends, or open another connection"
            ),
            steps,
        )
    await live.protocol.limit_streams(live.protocol.config.h2_max_concurrent_streams)
    if most > 1:
        return (
            Verdict.FAIL,
            f"kept {most} streams open at once after ACKing a limit of 1 (RFC 9113 section 6.5.2)",
            steps,
        )
    how = (
        f"opened conn {', '.join(f'#{n}' for n in sorted(elsewhere))} for the rest" if elsewhere else "queued the rest"
    )
    return Verdict.PASS, f"kept at most {most} stream open after ACKing the limit of 1, and {how}", steps


def _most_at_once(spans: list[StreamSpan]) -> int:
    events = sorted([(s.started, 1) for s in spans] + [(s.ended, -1) for s in spans if s.ended is not None])
    most = at_once = 0
    for _, change in events:
        at_once += change
        most = max(most, at_once)
    return most


async def _retry_after(bench: Bench, deadline: float) -> Outcome:
    if await bench.connection(deadline) is None:
        return _no_connection([])
    before = len(bench.unavailable.answered)
    bench.unavailable.next(RETRY_AFTER_S)
    answered = await bench.until(
        lambda: bench.unavailable.answered[before] if len(bench.unavailable.answered) > before else None, deadline
    )
    if answered is None:
        return Verdict.FAIL, "the switch sent no request to answer 503 before the deadline", []
    at, target, connection_id = answered
    steps = [Step(bench.at(at), "controller", f"503 Retry-After: {RETRY_AFTER_S} to {target}", connection_id)]
    on = next((c for c in bench.live() if c.record.id == connection_id), None)
    read = await _read_by(await on.protocol.ping(), deadline) if on is not None else None
    if on is None or read is None:
        return Verdict.FAIL, "the connection the 503 went on was gone before the client read it", steps
    again = await bench.until(lambda: _again(bench, on.record, target, read), deadline)
    if again is None:
        return (
            Verdict.NOTE,
            "did not send it again (a 503 is an answer; a client that retries should wait Retry-After)",
            steps,
        )
    waited_s = again.started - at
    steps.append(Step(bench.at(again.started), "switch", f"sent {target} again", again.connection.id, again.stream_id))
    if _asks_again_anyway(bench, target, at):
        return Verdict.NOTE, f"{target} came again {waited_s:.2f} s later; {AMBIGUOUS}", steps
    if waited_s + POLL_S < RETRY_AFTER_S:
        return (
            Verdict.FAIL,
            f"sent it again {waited_s:.2f} s later, before Retry-After's {RETRY_AFTER_S} s (RFC 9110 section "
            "10.2.3); the likely fix: wait what Retry-After says",
            steps,
        )
    return Verdict.PASS, f"sent it again {waited_s:.2f} s later, as Retry-After said (RFC 9110 section 10.2.3)", steps


async def _reset(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return _no_connection([])
    sent = time.monotonic()
    _reset_now(live)
    steps = [Step(bench.at(sent), "controller", "TCP reset (RST) with requests in flight", live.record.id)]
    first = await bench.until(lambda: next(iter(bench.connections(sent)), None), deadline)
    if first is None:
        return Verdict.FAIL, "never redialled before the deadline", steps
    await bench.watch(min(deadline, time.monotonic() + WATCH_REDIALS_S))
    redials = bench.connections(sent)
    for connection in redials:
        steps.append(Step(bench.at(connection.hello_at or connection.opened), "switch", "redialled", connection.id))
    first_s = (first.hello_at or first.opened) - sent
    quick = [c for c in redials if c.closed is not None and c.closed - (c.hello_at or c.opened) < STORM_GAP_S]
    if len(redials) >= 5 and len(quick) >= 4:
        return (
            Verdict.FAIL,
            f"{len(redials)} redials within {WATCH_REDIALS_S:g} s: a storm; the likely fix: an exponential backoff "
            "(gRPC's: 1 s, x1.6, jitter 0.2, up to 120 s)",
            steps,
        )
    return (
        Verdict.PASS,
        f"redialled {first_s * 1000:.0f} ms after the reset, {len(redials)} connection(s) in the next "
        f"{WATCH_REDIALS_S:g} s: no storm",
        steps,
    )


async def _silent(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return _no_connection([])
    sent = time.monotonic()
    live.protocol.silence()
    steps = [
        Step(bench.at(sent), "controller", "went silent: reads nothing, writes nothing, stays open", live.record.id)
    ]
    redial = await bench.until(lambda: next(iter(bench.connections(sent)), None), deadline)
    live.server.writer.transport.abort()  # the trial is over: let it go
    if redial is None:
        return (
            Verdict.FAIL,
            (
                f"still waiting on the silent connection after {deadline - sent:.0f} s: a client should notice (a PING "
                "unanswered, RFC 9113 section 6.7, or TCP keepalive) and redial"
            ),
            steps,
        )
    noticed_s = (redial.hello_at or redial.opened) - sent
    steps.append(Step(bench.at(redial.hello_at or redial.opened), "switch", "redialled", redial.id))
    return Verdict.PASS, f"noticed the silence and redialled {noticed_s:.1f} s later", steps


async def _refuse(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    gate = getattr(bench.config, GATE_ATTRIBUTE, None)
    if live is None or not isinstance(gate, HandshakeGate):
        return _no_connection([])
    address = live.record.peer.host
    sent = time.monotonic()
    gate.shut_out(address, REFUSE_S)
    _reset_now(live)
    steps = [Step(bench.at(sent), "controller", f"reset the connection; refusing {address} for {REFUSE_S:g} s")]
    back = await bench.until(lambda: next(iter(bench.connections(sent + REFUSE_S)), None), deadline)
    tries = list(gate.shut_out_at.get(address, []))
    for at in tries:
        steps.append(Step(bench.at(at), "switch", "dialled, refused"))
    gaps = [later - earlier for earlier, later in itertools.pairwise([sent, *tries])]
    shape = ", ".join(f"{gap:.2f}" for gap in gaps) or "none"
    if back is None:
        return Verdict.FAIL, f"did not come back once let in (waits between dials: {shape} s)", steps
    steps.append(Step(bench.at(back.hello_at or back.opened), "switch", "came back", back.id))
    if len(gaps) >= STORM_DIALS and max(gaps) < STORM_GAP_S:
        return (
            Verdict.FAIL,
            (
                f"{len(tries)} dials in {REFUSE_S:g} s, none more than {STORM_GAP_S * 1000:.0f} ms apart: a storm; the "
                "likely fix: an exponential backoff (gRPC's: 1 s, x1.6, jitter 0.2, up to 120 s)"
            ),
            steps,
        )
    growth = [later / earlier for earlier, later in itertools.pairwise(gaps) if earlier > 0]
    grew = f", each {statistics.median(growth):.1f}x the last" if growth else ""
    gentler = "gentler" if gaps and gaps[0] >= GRPC_INITIAL_S else "quicker"
    return (
        Verdict.PASS,
        (
            f"{len(tries)} dials refused, waits {shape} s{grew}, then came back; its first wait is {gentler} than "
            f"gRPC's {GRPC_INITIAL_S:g} s"
        ),
        steps,
    )


def _reset_now(live: Live) -> None:
    """A TCP reset: SO_LINGER 0, then close."""
    sock = live.server.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    live.server.writer.transport.abort()


TRIALS: dict[TrialName, Callable[[Bench, float], Awaitable[Outcome]]] = {
    TrialName.PING: _ping,
    TrialName.REFUSED_STREAM: _refused_stream,
    TrialName.GOAWAY_GRACEFUL: _goaway_graceful,
    TrialName.GOAWAY_UNPROCESSED: _goaway_unprocessed,
    TrialName.STREAM_LIMIT: _stream_limit,
    TrialName.RETRY_AFTER: _retry_after,
    TrialName.MAX_REQUESTS: _max_requests,
    TrialName.RESET: _reset,
    TrialName.SILENT: _silent,
    TrialName.REFUSE: _refuse,
}
