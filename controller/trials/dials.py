"""The trials of what a client does about its connections when the controller resets one (TCP RST), goes silent
on it, refuses new ones for a while, or is slow to send a new one its SETTINGS. Each is ``async (bench, deadline)
-> Outcome`` and ends by ``deadline``.

The reference for a backoff is gRPC's connection backoff (grpc/doc/connection-backoff.md: 1 s, x1.6, jitter 0.2,
up to 120 s): well known, and what most HTTP/2 clients built for long-lived connections copy.
"""

from __future__ import annotations

import itertools
import statistics
import time

from controller.server.h2_actions import HeldSettings
from controller.trials.bench import Bench, Outcome, began, no_connection, reset_now
from controller.trials.results import Step, Verdict

STORM_GAP_S = 0.1  # a redial sooner than this after the last connection ended had no backoff
STORM_DIALS = 5
SHOWN_DIALS = 20  # refuse: the refused dials a report lists one by one
RESETS = 3  # reset: the connection, then each redial, in a row
GROWN = 1.5  # a wait at least this many times the last one is a backoff growing (gRPC's: x1.6, less its jitter)
REFUSE_S = 6.0  # refuse: how long new connections are refused
GRPC_INITIAL_S = 1.0
HOLD_S = 2.0  # slow-settings: how long a new connection's SETTINGS are held
WATCH_AFTER_HOLD_S = 2.0  # slow-settings: how long the new connection is watched once its SETTINGS went
JITTER_SEEN = 0.05  # growth ratios further apart than this (relative) are jitter, not timer noise
CAP_SEEN = 0.25  # the last two waits this close (relative), after growing into them: the backoff's cap
BACKOFF = "an exponential backoff (gRPC's: 1 s, x1.6, jitter 0.2, up to 120 s)"


async def reset(bench: Bench, deadline: float) -> Outcome:
    """Reset the switch's connection with requests in flight, and each redial's the same way once it carries one,
    ``RESETS`` times in all: the delays between a reset and the next dial are the client's backoff."""
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return no_connection([])
    delays: list[float] = []
    handshakes: list[float] = []
    steps: list[Step] = []
    while live is not None:
        sent = time.monotonic()
        reset_now(live)
        steps.append(Step(bench.at(sent), "controller", "TCP reset (RST) with requests in flight", live.record.id))
        redial = await bench.until(lambda: next(iter(bench.dialled(sent)), None), deadline)  # noqa: B023 - awaited
        if redial is None:
            break
        delays.append(began(redial) - sent)
        said = f"redialled after {delays[-1] * 1000:.0f} ms"
        if redial.hello_at is not None:
            handshakes.append(redial.opened - redial.hello_at)
            said += f" (its TLS handshake: {handshakes[-1] * 1000:.0f} ms)"
        steps.append(Step(bench.at(began(redial)), "switch", said, redial.id))
        if len(delays) == RESETS:
            break
        live = await bench.connection(deadline, in_flight=1)
    shown = _ms(delays)
    if not delays:
        return Verdict.FAIL, "never redialled after the reset before the deadline", steps
    if len(delays) < RESETS:
        return Verdict.FAIL, f"redialled after {shown} ms, then stopped before the deadline", steps
    verdict, sentence = judge_redials(delays, handshakes if len(handshakes) == len(delays) else [])
    return verdict, sentence, steps


def judge_redials(delays: list[float], handshakes: list[float] | None = None) -> tuple[Verdict, str]:
    """A storm or not, from the delays between each reset and the redial after it (seconds), and how long each
    redial's TLS handshake took (seconds, or none known).

    A delay is the client's wait and all it did around it (notice the reset, dial, write its ClientHello): on a
    busy machine, the client's every wake-up comes late, and a tight loop's redials can look like a backoff's
    (3, 6 and 12 ms were seen as 139, 115 and 120 in a make test run). Its handshake is the same client's work,
    measured at the same moment: "no storm" holds only if it still holds with each delay less its handshake.
    Else the verdict is inconclusive, and says what it measured."""
    verdict, sentence = _judged(delays)
    if verdict is not Verdict.PASS or not handshakes:
        return verdict, sentence
    less = [max(0.0, delay - handshake) for delay, handshake in zip(delays, handshakes, strict=True)]
    if _judged(less)[0] is Verdict.PASS:
        return verdict, sentence
    return Verdict.INCONCLUSIVE, (
        f"redialled {_ms(delays)} ms after each of {len(delays)} resets in a row, but the redials' own TLS "
        f"handshakes took {_ms(handshakes)} ms (a busy machine): less those, {_ms(less)} ms could be a tight loop "
        "held back, so how soon the client redials cannot be told: run it again on a quieter machine"
    )


def _ms(seconds: list[float]) -> str:
    return ", ".join(f"{each * 1000:.0f}" for each in seconds)


def _judged(delays: list[float]) -> tuple[Verdict, str]:
    shown = _ms(delays)
    grew = all(later >= earlier * GROWN for earlier, later in itertools.pairwise(delays))
    # A delay here is the client's wait and then its dial reaching this loop: a busy machine only lengthens it, so
    # a short one was at least that short. A storm is most of them under the gap (growing or not: at that scale
    # growth is the machine's noise), or, not growing, any of them under half of it, shorter than any backoff's
    # first wait (the shipped switch's: 80-120 ms): a loaded machine had held a tight loop's redials back 124 and
    # 252 ms, around one of 25.
    tight = sum(delay < STORM_GAP_S for delay in delays)
    if statistics.median(delays) < STORM_GAP_S or (not grew and min(delays) < STORM_GAP_S / 2):
        how = "mostly" if 2 * tight > len(delays) else f"{tight} of them"
        return Verdict.FAIL, (
            f"redialled {shown} ms after each of {len(delays)} resets in a row: a storm, {how} under "
            f"{STORM_GAP_S * 1000:.0f} ms{'' if grew else ' and not growing'}; the likely fix: {BACKOFF}"
        )
    if all(later * GROWN <= earlier for earlier, later in itertools.pairwise(delays)):
        # No backoff shrinks: a tight loop whose first redials a busy machine held back does (one of 3, 6 and 12
        # ms was seen here as 223, 104 and 63).
        return Verdict.INCONCLUSIVE, (
            f"redialled {shown} ms after each of {len(delays)} resets in a row: shrinking, which no backoff does; "
            "a busy machine held the first redials back, so how soon the client redials cannot be told: run it "
            "again on a quieter machine"
        )
    return Verdict.PASS, (
        f"redialled {shown} ms after each of {len(delays)} resets in a row ({'growing' if grew else 'not growing'}): "
        "no storm"
    )


async def silent(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return no_connection([])
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
    noticed_s = began(redial) - sent
    steps.append(Step(bench.at(began(redial)), "switch", "redialled", redial.id))
    return Verdict.PASS, f"noticed the silence and redialled {noticed_s:.1f} s later", steps


async def refuse(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline)
    gate = bench.config.gate
    if live is None or gate is None:
        return no_connection([])
    address = live.record.peer.host
    sent = time.monotonic()
    gate.shut_out(address, REFUSE_S)
    reset_now(live)
    steps = [Step(bench.at(sent), "controller", f"reset the connection; refusing {address} for {REFUSE_S:g} s")]
    back = await bench.until(lambda: next(iter(bench.connections(sent + REFUSE_S)), None), deadline)
    tries = list(gate.shut_out_at.get(address, []))
    for at in tries[:SHOWN_DIALS]:
        steps.append(Step(bench.at(at), "switch", "dialled, refused"))
    if len(tries) > SHOWN_DIALS:  # a storm's tens of thousands would be the report
        steps.append(Step(bench.at(tries[-1]), "switch", f"dialled, refused, {len(tries) - SHOWN_DIALS} times more"))
    gaps = [later - earlier for earlier, later in itertools.pairwise([sent, *tries])]
    shape = ", ".join(f"{gap:.2f}" for gap in gaps[:SHOWN_DIALS]) + (", ..." if len(gaps) > SHOWN_DIALS else "")
    shape = shape or "none"
    if back is None:
        return Verdict.FAIL, f"did not come back once let in (waits between dials: {shape} s)", steps
    steps.append(Step(bench.at(began(back)), "switch", "came back", back.id))
    if len(gaps) >= STORM_DIALS and statistics.median(gaps) < STORM_GAP_S:
        return (
            Verdict.FAIL,
            (
                f"{len(tries)} dials in {REFUSE_S:g} s, half of them under {STORM_GAP_S * 1000:.0f} ms apart: a "
                f"storm; the likely fix: {BACKOFF}"
            ),
            steps,
        )
    return Verdict.PASS, f"{len(tries)} dials refused, then came back; waits {shape} s{backoff_shape(gaps)}", steps


def backoff_shape(gaps: list[float]) -> str:
    """The backoff's growth and jitter, held against gRPC's (x1.6, jitter 0.2): without jitter, a fleet that lost
    its controller at once redials in lockstep, every time."""
    growth = [later / earlier for earlier, later in itertools.pairwise(gaps) if earlier > 0]
    if not growth:
        return ""
    spread = (max(growth) - min(growth)) / statistics.median(growth)
    jitter = "no jitter" if len(growth) > 1 and spread < JITTER_SEEN else "with jitter" if len(growth) > 1 else ""
    first = "gentler" if gaps[0] >= GRPC_INITIAL_S else "quicker"
    flat = len(gaps) >= 3 and abs(gaps[-1] - gaps[-2]) <= CAP_SEEN * gaps[-2] and max(growth[:-1]) >= GROWN
    cap = f"capped at {gaps[-1]:.1f} s" if flat else f"no cap reached in {REFUSE_S:g} s"
    return (
        f", each {statistics.median(growth):.1f}x the last{f' ({jitter})' if jitter else ''}, {cap} (gRPC's: x1.6, "
        f"jitter 0.2, cap 120 s); its first wait is {first} than gRPC's {GRPC_INITIAL_S:g} s"
    )


async def slow_settings(bench: Bench, deadline: float) -> Outcome:
    """GOAWAY, so the client dials anew, and every new connection from its address has its SETTINGS (its whole
    first flight) held ``HOLD_S``: a client that races more dials while one is slow is the original report's."""
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return no_connection([])
    address = live.record.peer.host
    hold = HeldSettings(address, HOLD_S)
    bench.config.held = hold
    try:
        sent = time.monotonic()
        named = await live.protocol.goaway()
        what = f"GOAWAY NO_ERROR, last stream {named}; holds new connections' SETTINGS from {address} {HOLD_S:g} s"
        steps = [Step(bench.at(sent), "controller", what, live.record.id)]
        first = await bench.until(lambda: next(iter(bench.dialled(sent)), None), deadline)
        if first is None or not hold.held:
            return Verdict.FAIL, "dialled no new connection after the GOAWAY before the deadline", steps
        released = hold.held[0] + HOLD_S
        await bench.watch(min(deadline, released + WATCH_AFTER_HOLD_S))
    finally:
        bench.config.held = None
    during = [connection for connection in bench.dialled(sent) if began(connection) < released]
    for connection in during:
        steps.append(Step(bench.at(began(connection)), "switch", "dialled", connection.id))
    on_first = [span for span in bench.spans(sent) if span.connection is first]
    early = sum(1 for span in on_first if span.started < released)
    if len(during) > 1:
        return (
            Verdict.FAIL,
            (
                f"dialled {len(during)} connections while its first new one waited {HOLD_S:g} s for the controller's "
                "SETTINGS: a dial race (RFC 9113 section 9.1: a client SHOULD NOT open more than one connection to "
                "a host and port); the likely fix: wait for the connection being dialled"
            ),
            steps,
        )
    if not any(span.answered is not None for span in on_first):
        return Verdict.FAIL, f"no request answered on its new connection within {WATCH_AFTER_HOLD_S:g} s", steps
    how = (
        f"sent {early} request(s) on it before the SETTINGS came (allowed: RFC 9113 section 3.4)"
        if early
        else "sent its first request once the SETTINGS came"
    )
    return Verdict.PASS, f"waited {HOLD_S:g} s on its one new connection, no other dial, and {how}", steps
