"""The trials of what a client does when the controller's TLS changes under it on new handshakes: another
certificate from the same CA (a rotation), or ALPN without h2. Each sends GOAWAY so that the client must dial
anew, holds the change until the trial's end, and judges from the connections that came meanwhile. Each is
``async (bench, deadline) -> Outcome`` and ends by ``deadline``.
"""

from __future__ import annotations

import contextlib
import time

from controller.accounts.connections import ControllerConnection
from controller.trials.bench import Bench, Live, Outcome, began, no_connection
from controller.trials.results import Step, Verdict
from dialout.errors import PKIError

HTTP1_ONLY = ("http/1.1",)


def _answered_on_new(bench: Bench, since: float) -> ControllerConnection | None:
    """The first connection dialled since ``since`` that has had a request answered."""
    answered = {span.connection.id for span in bench.spans(since) if span.answered is not None}
    return next((c for c in bench.dialled(since) if c.id in answered), None)


async def _through_a_change(
    bench: Bench, live: Live, change: str, deadline: float
) -> tuple[list[Step], ControllerConnection | None, int]:
    """GOAWAY, so that the client dials anew under the ``change``; then the first new connection that had a request
    answered (None by the deadline), and how many dials came meanwhile."""
    sent = time.monotonic()
    named = await live.protocol.goaway()
    steps = [Step(bench.at(sent), "controller", f"{change}; GOAWAY NO_ERROR, last stream {named}", live.record.id)]
    carried_on = await bench.until(lambda: _answered_on_new(bench, sent), deadline)
    return steps, carried_on, len(bench.dialled(sent))


async def cert_rotation(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return no_connection([])
    with contextlib.ExitStack() as rotation:
        try:
            certificate = rotation.enter_context(bench.tls.another_certificate())
        except PKIError as exc:
            return Verdict.NOTE, f"cannot be run here: {exc}", []
        serial = f"{certificate.serial_number:x}"[:12]
        change = f"a new certificate from the same CA (serial {serial}...)"
        steps, carried_on, dials = await _through_a_change(bench, live, change, deadline)
    if carried_on is None:
        return (
            Verdict.FAIL,
            (
                f"no request answered on a new connection after the controller's certificate changed ({dials} "
                "dial(s) came): a client that pins the controller's certificate, not its CA, loses it at every "
                "rotation; the likely fix: verify the chain to the CA and the name (RFC 9525)"
            ),
            steps,
        )
    steps.append(Step(bench.at(began(carried_on)), "switch", "dialled, took the new certificate", carried_on.id))
    return Verdict.PASS, f"carried on: conn #{carried_on.id} on the new certificate, its requests answered", steps


async def h1_only(bench: Bench, deadline: float) -> Outcome:
    live = await bench.connection(deadline, in_flight=1)
    if live is None:
        return no_connection([])
    with bench.tls.offering(HTTP1_ONLY):
        change = "ALPN offers only http/1.1 on new connections"
        steps, carried_on, dials = await _through_a_change(bench, live, change, deadline)
    if carried_on is None:
        return (
            Verdict.FAIL,
            (
                f"no request answered on a new connection while the controller offered only http/1.1 ({dials} "
                "dial(s) came): a client that offers http/1.1 in ALPN and is given it speaks it (RFC 7301 section "
                "3.2); the likely fix: fall back to HTTP/1.1, or offer only h2 and say so when refused"
            ),
            steps,
        )
    spoke = carried_on.alpn or "no ALPN"
    steps.append(Step(bench.at(began(carried_on)), "switch", f"dialled, ALPN {spoke}", carried_on.id))
    if carried_on.http_version == "2":
        return (
            Verdict.NOTE,
            f"went on in HTTP/2 on conn #{carried_on.id} with {spoke}: prior knowledge, not a fall back",
            steps,
        )
    return Verdict.PASS, f"fell back to HTTP/1.1 on conn #{carried_on.id}, its requests answered", steps
