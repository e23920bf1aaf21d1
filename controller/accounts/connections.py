"""The controller's own account of its TLS connections: which switch opened each one, and how many streams it
carried, at most how many at once. Kept in memory and bounded; per-switch totals are exact."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.accounts.answered import AnsweredTime, AnsweredTimes
from controller.accounts.refusals import Refusals
from dialout.loop_lag import PERIOD_S, LagHistory
from dialout.refusals import Refusal
from dialout.text import Address, plural, printable, utc_now

if TYPE_CHECKING:
    from controller.accounts.ledger import Ledger

logger = logging.getLogger(__name__)

# Enough for a long soak of short-lived connections, small enough to serve as one JSON answer.
DEFAULT_HISTORY = 10_000
# The streams the diagnosis reads (controller/diagnosis/analysis.py): the last this many, of every switch.
STREAM_HISTORY = 50_000
# The answered streams a connection keeps with their times, for the switch's cross-check (``stream_times``).
ANSWERED_PER_CONNECTION = 1_000


# What a proxy cannot tell us of the switch's connection to it: when exactly it closed (we close it when the
# proxy's last connection to us that carried it closes, or when the proxy numbers another connection as it did
# this one: a bound, not the time), its HTTP/2 stream ids, and connections that carried no request (the proxy
# forwards requests, not connections).
UNKNOWN_THROUGH_A_PROXY = ("closed_at", "stream_ids", "connections_without_requests")
# What a switch (or explain) asks the controller: answered like any request, never counted as its traffic.
QUESTIONS = frozenset({"/connections", "/diagnosis"})


@dataclass(slots=True)
class ControllerConnection:
    """One connection of a switch: accepted by us (TLS), or, with ``via``, the switch's connection to a trusted
    proxy, as the proxy told us of it request by request. ``tls`` is its ASGI TLS extension dict (asgiref
    specs/tls.rst)."""

    id: int
    peer: Address  # where it came from (a proxied one: the switch's address as the proxy saw it)
    switch: str | None  # the client certificate's CN
    alpn: str | None
    tls_version: str | None
    tls: dict[str, Any]
    opened_at: str
    closed_at: str | None = None
    streams: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    via: str | None = None  # the trusted proxy that told us of this connection (its CN or address)
    proxy_number: str | None = None  # with via: the proxy's own number for it (nginx's $connection)
    cleartext: bool = False  # on the cleartext listener: no TLS, no certificate
    upstream: set[int] = field(default_factory=set)  # our connections from that proxy that carried its requests
    upstream_open: set[int] = field(default_factory=set, repr=False)  # those of them still open
    from_trusted_proxy: bool | None = None  # whether its forwarded headers are believed; None until its 1st request
    forwarding_noted: bool = False  # forwarded headers from an untrusted peer: logged once per connection
    http_version: str | None = None  # "1.1" or "2", from its first request
    closed_for: str | None = None  # why we closed it, if for what it sent (controller/server/h2_limits.py)
    # time.monotonic() seconds: when its ClientHello arrived (None without TLS, or behind a proxy), when the
    # handshake was done and it was recorded, and when the peer stopped sending.
    hello_at: float | None = None
    opened: float = field(default_factory=time.monotonic)
    # The event loop's turns in which its ClientHello and its handshake's end were read (None: not counted):
    # which of two connections' came first, whatever the loop's lag (dialout/asyncio_seam.py).
    hello_turn: int | None = None
    done_turn: int | None = None
    closed: float | None = None
    life: int | None = None  # the controller process that served it, as the account's store numbers them
    _totals: SwitchTotals | None = field(default=None, repr=False)
    _history: deque[StreamSpan] | None = field(default=None, repr=False)
    _journal: Ledger | None = field(default=None, repr=False)
    _in_flight_spans: dict[int, StreamSpan] = field(default_factory=dict, repr=False)  # by number, for the live page
    # Made at its first answer: a history of 10,000 connections read back from the account makes one for each.
    _answered: AnsweredTimes | None = field(default=None, repr=False)

    def begin_stream(
        self, path: str = "", http_version: str | None = None, query: bytes = b"", stream_id: int | None = None
    ) -> StreamSpan:
        """Count a request that has started on this connection; its span says its number on the connection, and
        ``stream_id`` its HTTP/2 stream id on the wire. A question to the controller is not in flight as the
        switch's traffic is: asked right after a ping's answer, it came in while that ping's handler was still
        returning, and the controller counted two at once where the switch had one (the views disagreed)."""
        self.streams += 1
        self.in_flight += 0 if path in QUESTIONS else 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self.http_version is None:
            self.http_version = http_version
        if self._totals is not None:
            self._totals.streams += 1
            self._totals.peak_in_flight = max(self._totals.peak_in_flight, self.in_flight)
        span = StreamSpan(self, self.streams, path, time.monotonic(), query=query, stream_id=stream_id)
        self._in_flight_spans[span.number] = span
        if self._history is not None:
            self._history.append(span)
        if self._journal is not None:
            self._journal.changed(self)
        return span

    def end_stream(self, span: StreamSpan) -> None:
        self.in_flight -= 0 if span.path in QUESTIONS else 1
        span.ended = time.monotonic()
        self._in_flight_spans.pop(span.number, None)
        self.keep_answered(span)
        if self._journal is not None:
            self._journal.ended(span)

    def keep_answered(self, span: StreamSpan) -> None:
        """Keep ``span``'s times for ``stream_times``, if it was answered."""
        if span.answered is not None:
            if self._answered is None:
                self._answered = AnsweredTimes(ANSWERED_PER_CONNECTION)
            span.kept = self._answered.add(span)

    def answer_written(self, span: StreamSpan) -> None:
        """``span``'s answer reached the wire after its times were kept: keep the later time."""
        if span.kept is not None and self._answered is not None and span.answered is not None:
            self._answered.rewrite(span.kept, span.number, span.answered)

    def stream_times(self, lags: LagHistory | None = None) -> list[dict[str, Any]]:
        """Its answered streams (the latest ``ANSWERED_PER_CONNECTION``): each one's id, and the seconds from its
        request's headers arriving to its answer's last byte handed to the wire. Against the switch's own
        request-to-answer time, this tells whether the answer reached the switch when it was sent. ``lags``: also
        how long this process's loop was held meanwhile (``loop_lag_s``): a request read late by a busy loop
        arrived earlier than its time here says."""
        return [
            {
                "stream_id": kept.stream_id,
                "number": kept.number,
                "answered_in_s": round(kept.answered - kept.started, 6),
                **({"loop_lag_s": round(_lag_of(kept, lags), 6)} if lags else {}),
            }
            for kept in self._answered or ()
        ]

    def spans_in_flight(self) -> list[StreamSpan]:
        """Its requests not yet answered, oldest first."""
        return list(self._in_flight_spans.values())

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "switch": self.switch,
            "peer": str(self.peer),
            "alpn": self.alpn,
            "tls_version": self.tls_version,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "streams": self.streams,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "via": self.via,
            "cleartext": self.cleartext,
            "http_version": self.http_version,
            "handshake_s": None if self.hello_at is None else round(self.opened - self.hello_at, 6),
            "closed_for": self.closed_for,
            "life": self.life,
        }
        if self.via is not None:
            record["upstream_connections"] = sorted(self.upstream)
            record["unknown"] = list(UNKNOWN_THROUGH_A_PROXY)
        return record


@dataclass(slots=True)
class StreamSpan:
    """One request on a connection, from its headers arriving to its response sent (monotonic seconds)."""

    connection: ControllerConnection
    number: int  # on its connection: 1, 2, ... (the ordinal)
    path: str
    started: float
    ended: float | None = None  # None while in flight
    query: bytes = b""  # as it came (the live page reads a ping's interval from it)
    stream_id: int | None = None  # HTTP/2: its stream id on the wire (1, 3, 5, ...); None for HTTP/1.1
    answered: float | None = None  # its response's last byte went to the server (monotonic seconds)
    refused: Refusal | None = None  # answered 403, and why: not the switch's traffic (controller/http/app.py)
    loop_lag: float | None = None  # read back from the account: how long its process's loop was held meanwhile
    kept: int | None = None  # its slot among its connection's answered times, once kept there

    def describe(self) -> str:
        """How the log and the page name it: the wire's stream id, its ordinal after it."""
        return stream_name(self.stream_id, self.number)

    def answered_at(self, at: float) -> None:
        """Its answer's last byte was written to the connection's transport at ``at`` (monotonic)."""
        self.answered = at
        if self.kept is not None:
            self.connection.answer_written(self)


def _lag_of(kept: AnsweredTime, lags: LagHistory) -> float:
    """How long the loop was held while ``kept`` was answered: as its account recorded it, or from ``lags`` (from
    a sampler's period before its start: a wake-up taken in the same turn as the read, just before it)."""
    if kept.loop_lag is not None:
        return kept.loop_lag
    return lags.held_during(kept.started - PERIOD_S, kept.answered)


@dataclass
class SwitchTotals:
    connections: int = 0
    streams: int = 0
    peak_in_flight: int = 0  # on any one connection

    def describe(self) -> str:
        return (
            f"{plural(self.connections, 'connection')}, {plural(self.streams, 'stream')}, "
            f"peak {self.peak_in_flight} at once"
        )


class ConnectionRegistry:
    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        server_cert_pem: str | None = None,
        stream_history: int = STREAM_HISTORY,
        ledger: Ledger | None = None,
    ) -> None:
        """``ledger``: told of every connection and stream, to keep them in the account's store, beyond this
        process's memory and life."""
        self.server_cert_pem = server_cert_pem
        self.ledger = ledger
        self.refusals = Refusals()  # the clients refused, by who and why (controller/accounts/refusals.py)
        self._recent: deque[ControllerConnection] = deque(maxlen=history)
        self._spans: deque[StreamSpan] = deque(maxlen=stream_history)
        self._totals: dict[str, SwitchTotals] = {}
        if ledger is not None:
            ledger.count_totals_of(self._totals)
        self._next_id = 1
        self._opened = 0
        self.started = time.monotonic()  # the controller's start, near enough (its uptime in /connections)
        # Connections closed with GOAWAY ENHANCE_YOUR_CALM, by reason (controller/server/h2_limits.py).
        self.calmed: Counter[str] = Counter()
        self._history = history
        # Connections behind a proxy, by (proxy, the proxy's number for the connection), while they are open.
        self._proxied: dict[tuple[str, str], ControllerConnection] = {}
        # For each of our open connections from a proxy: the switch connections it carried requests of, by id.
        self._carried: dict[int, dict[int, ControllerConnection]] = {}

    def open(  # noqa: PLR0913 - a connection record's fields, each by name
        self,
        peer: Address,
        switch: str | None,
        alpn: str | None,
        tls_version: str | None,
        tls: dict[str, Any],
        via: str | None = None,
        cleartext: bool = False,
        hello_at: float | None = None,
        done_at: float | None = None,
    ) -> ControllerConnection:
        """``hello_at`` and ``done_at``: when its TLS handshake began and ended, if known (else it was opened now)."""
        totals = self._totals.setdefault(switch or "(no certificate)", SwitchTotals())
        totals.connections += 1
        connection = ControllerConnection(
            id=self._next_id if self.ledger is None else self.ledger.next_id(),
            peer=peer,
            switch=switch,
            alpn=alpn,
            tls_version=tls_version,
            tls=tls,
            opened_at=utc_now(),
            via=via,
            cleartext=cleartext,
            hello_at=hello_at,
            opened=time.monotonic() if done_at is None else done_at,
            _totals=totals,
            _history=self._spans,
            _journal=self.ledger,
            life=None if self.ledger is None else self.ledger.life,
        )
        self._next_id += 1
        self._opened += 1
        self._recent.append(connection)
        if self.ledger is not None:
            self.ledger.changed(connection)
        through = f" via {via}" if via else " in cleartext" if cleartext else ""
        logger.info(
            "conn #%d opened by %s from %s%s (%s, ALPN %s)",
            connection.id,
            printable(str(switch)),  # a proxy's forwarded name is the proxy's word, not a certificate's
            peer,
            through,
            tls_version,
            alpn,
        )
        return connection

    def proxied(  # noqa: PLR0913 - what the proxy forwarded of a connection, each field by name
        self,
        via: str,
        key: str,
        peer: Address,
        switch: str | None,
        alpn: str | None,
        tls_version: str | None,
        upstream: ControllerConnection,
    ) -> ControllerConnection:
        """The switch's connection to proxy ``via`` that the proxy numbers ``key``, whose request came to us on
        ``upstream``: recorded on its first request, and found again for the requests after it. Its ``tls`` stays
        empty: the ASGI TLS extension describes the connection a request came on, which is the proxy's.

        It is closed when the last of the proxy's connections to us that carried it closes (nginx gone, or its
        keepalive connections idle) or when the proxy numbers another switch's connection ``key``: the proxy
        never tells us when the switch's own connection closed."""
        index = (via, key)
        connection = self._proxied.get(index)
        if connection is not None and connection.peer != peer:  # the proxy's number went to another connection
            self.close(connection)
            connection = None
        if connection is None:
            if len(self._proxied) >= self._history:  # a proxy that never lets us see a close: the oldest goes
                self.close(next(iter(self._proxied.values())))
            connection = self.open(peer, switch, alpn, tls_version, {}, via=via)
            connection.proxy_number = key
            self._proxied[index] = connection
        connection.upstream.add(upstream.id)
        if self.ledger is not None:
            self.ledger.changed(connection)
        if upstream.closed_at is None and upstream.id not in connection.upstream_open:
            connection.upstream_open.add(upstream.id)
            self._carried.setdefault(upstream.id, {})[connection.id] = connection
        return connection

    def close(self, connection: ControllerConnection) -> None:
        """Mark ``connection`` closed, and a proxied connection that only it still carried; only the first call
        counts."""
        if connection.closed_at is not None:
            return
        connection.closed_at = utc_now()
        connection.closed = time.monotonic()
        if self.ledger is not None:
            self.ledger.changed(connection)
        logger.info(
            "conn #%d closed: %s, %s, peak %d at once",
            connection.id,
            printable(str(connection.switch)),
            plural(connection.streams, "stream"),
            connection.peak_in_flight,
        )
        if connection.via is not None and connection.proxy_number is not None:
            self._proxied.pop((connection.via, connection.proxy_number), None)
        for carried in self._carried.pop(connection.id, {}).values():
            carried.upstream_open.discard(connection.id)
            if not carried.upstream_open:
                self.close(carried)

    def connections(self, switch: str | None = None) -> list[ControllerConnection]:
        return [c for c in self._recent if switch is None or c.switch == switch]

    def in_flight(self) -> list[StreamSpan]:
        """Every request being answered now, on the connections the history holds."""
        return [span for c in self._recent if c.in_flight for span in c.spans_in_flight()]

    def spans(self) -> list[StreamSpan]:
        """The most recent streams of every connection, oldest first."""
        return list(self._spans)

    def spans_since(self, moment: float) -> list[StreamSpan]:
        """The streams begun after ``moment`` (monotonic), oldest first: read back from the newest only as far as
        those (the history holds them in the order they began), not a copy of the whole history."""
        found = list(itertools.takewhile(lambda span: span.started > moment, reversed(self._spans)))
        found.reverse()
        return found

    def latest_spans(self, count: int) -> Iterator[StreamSpan]:
        """At most the ``count`` most recent streams, newest first, without copying the history."""
        return itertools.islice(reversed(self._spans), count)

    @property
    def streams_total(self) -> int:
        """Every stream of every switch since the start."""
        return sum(totals.streams for totals in self._totals.values())

    def totals(self) -> dict[str, SwitchTotals]:
        return dict(sorted(self._totals.items()))

    @property
    def opened_total(self) -> int:
        """Every connection recorded since the start, also those the history no longer holds."""
        return self._opened


def stream_name(stream_id: int | None, number: int | None) -> str:
    """``stream 5 (#3)`` for an HTTP/2 request, ``request #3`` where the wire has no stream id (HTTP/1.1, or
    through a proxy that does not tell it)."""
    if stream_id is not None:
        return f"stream {stream_id} (#{number})" if number is not None else f"stream {stream_id}"
    return f"request #{number}" if number is not None else "request"
