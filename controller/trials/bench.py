"""The test bench: what every trial stands on. It finds the switch under trial and its live connections, waits
(always to a deadline) on the controller's own account of them (``ConnectionRegistry``) and on what their HTTP/2
protocol saw (``ActionableH2Protocol``: refusals, SETTINGS ACKs, PING ACKs), and tells a retry from a client's next
request. The trials themselves are in ``streams`` (what the client does with its requests), ``dials`` (with its
connections) and ``handshakes`` (with the controller's TLS); ``catalogue`` runs one by name.

A switch that never comes, or goes for good, fails the trial it was in, and the next one waits for it again.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from controller.accounts.connections import ConnectionRegistry, ControllerConnection, StreamSpan
from controller.http.app import Unavailable
from controller.server.asgi_tls import ConnectionAwareTCPServer, live_servers
from controller.server.h2_actions import ActionableH2Protocol, PingAck
from controller.server.hypercorn_seam import DialoutConfig
from controller.server.tls_actions import TLSActions
from controller.trials.results import Step, Verdict
from dialout.loop_lag import LoopLag

T = TypeVar("T")
POLL_S = 0.01  # how often a wait looks at the account again


@dataclass(frozen=True)
class Live:
    """One of the switch's connections, open now: the account's record, Hypercorn's task and our protocol."""

    record: ControllerConnection
    server: ConnectionAwareTCPServer
    protocol: ActionableH2Protocol


class Bench:
    """The controller's levers and its account, for one switch: Hypercorn's ``config`` (its live connections, the
    handshake gate), the app's 503 switch, the TLS context's actions. ``switch``: the one under trial (None until
    the first dials in); ``proxies``: the trusted proxies' names, never taken for a switch."""

    def __init__(  # noqa: PLR0913 - the levers, the account and the lag, each by name
        self,
        config: DialoutConfig,
        registry: ConnectionRegistry,
        unavailable: Unavailable,
        tls: TLSActions,
        switch: str | None,
        lag: LoopLag,
        proxies: Collection[str] = (),
    ) -> None:
        self._registry = registry
        self.config = config
        self.unavailable = unavailable
        self.tls = tls
        self.lag = lag  # the controller's own loop lag, sampled while the trials run
        self.switch = switch
        self._proxies = frozenset(proxies)  # trusted proxies' own names: their connections carry switches, are none
        self.proxy: str | None = None  # the trusted proxy the switch comes through (nginx's front), if any
        self.arrived = False  # whether the switch dialled in
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
        first = await self.until(
            lambda: next(
                (
                    c
                    for c in self._registry.connections()
                    if c.switch and c.switch not in self._proxies and self.switch in (None, c.switch)
                ),
                None,
            ),
            deadline,
        )
        if first is not None:
            self.switch, self.proxy, self.arrived = first.switch, first.via, True
        return None if first is None else self.switch

    def live(self) -> list[Live]:
        found = []
        for server in live_servers(self.config):
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
        # (polled every POLL_S while a trial waits, on the loop that serves: only the recent end of the history)
        return [
            span
            for span in self._registry.spans_since(after)
            if span.connection.switch == self.switch and span.path == "/ping"
        ]

    def connections(self, after: float) -> list[ControllerConnection]:
        return [c for c in self._registry.connections(self.switch) if c.opened > after]

    def dialled(self, after: float) -> list[ControllerConnection]:
        """The switch's connections whose handshake began after ``after`` (monotonic), in that order."""
        return sorted(self.connections(after), key=began)


def began(connection: ControllerConnection) -> float:
    """When a connection's handshake began (its ClientHello), or, without one recorded, when it was accepted."""
    return connection.hello_at or connection.opened


Outcome = tuple[Verdict, str, list[Step]]
AMBIGUOUS = (
    "but this client asks for the same target again and again on its own, so a retry cannot be told from its next "
    "request: give each request a target of its own (the shipped switch: request.path with {n})"
)


def target_of(span: StreamSpan) -> str:
    return f"{span.path}?{span.query.decode('latin-1')}" if span.query else span.path


def no_connection(steps: list[Step]) -> Outcome:
    return (
        Verdict.NOT_EXERCISED,
        "the switch had no HTTP/2 connection with requests in flight before the deadline",
        steps,
    )


async def read_by(
    bench: Bench, acked: asyncio.Future[PingAck], on: ControllerConnection, deadline: float
) -> PingAck | None:
    """The ACK of the PING sent behind an action on ``on``: the client has read the action. None when no ACK came
    by the deadline, or ``on`` closed first (a client that hangs up on a GOAWAY at once need not ACK it)."""
    await bench.until(lambda: True if acked.done() or on.closed is not None else None, deadline)
    return acked.result() if acked.done() and not acked.cancelled() else None


def sent_again(bench: Bench, on: ControllerConnection, target: str, read: PingAck) -> StreamSpan | None:
    """A request for ``target`` sent after the client had read what the PING followed: on ``on``, a stream above
    the highest it had opened by the ACK; on another connection, one that began after the ACK. (Requests sent at
    once with the one refused, as a batch is, came before the ACK, and are not taken for a retry.)"""
    for span in bench.spans(read.at - 1.0):
        if target_of(span) != target:
            continue
        if span.connection is on and (span.stream_id or 0) > read.highest_stream_id:
            return span
        if span.connection is not on and span.started > read.at:
            return span
    return None


def asks_again_anyway(bench: Bench, target: str, before: float) -> bool:
    """Whether the client asked for ``target`` more than once in the last minute before ``before``: then a request
    for it after an action may be its next one as well as a retry."""
    return sum(1 for span in bench.spans(before - 60.0) if span.started < before and target_of(span) == target) > 1


def reset_now(live: Live) -> None:
    """A TCP reset: SO_LINGER 0, then close (a connection the client closed a moment ago just goes)."""
    sock = live.server.writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    live.server.writer.transport.abort()
