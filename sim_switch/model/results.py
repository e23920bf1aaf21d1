"""What a run produced, as data: each ping's result, the run's, and the controller's view of it.

No I/O here: the client fills these in, the report reads them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dialout.config import Scenario, StreamPolicy
from sim_switch.model.failures import Failure, LinkLoss


class PingOutcome(StrEnum):
    OK = "ok"
    RETRIED_THEN_OK = "retried-then-ok"
    FAILED = "failed"


class GiveUpReason(StrEnum):
    """Why a persistent session stopped retrying a ping."""

    NOT_RETRY_SAFE = "not_retry_safe"  # it may have been processed (and switch.retry is safe)
    TIME_UP = "time_up"  # still failing give_up_after_s after its first try
    LINK_DOWN = "link_down"  # the link had been down give_up_after_s: the session ended


@dataclass
class ConnectionRecord:
    """One TCP(+TLS) connection that the switch opened."""

    number: int
    opened_at_s: float
    local_address: str
    remote_address: str
    local_port: int | None
    tls_version: str | None = None
    alpn: str | None = None
    cipher: str | None = None
    controller_subject: str | None = None
    max_streams: int | None = None  # the controller's SETTINGS_MAX_CONCURRENT_STREAMS, once heard
    handshake_s: float | None = None  # how long the TLS handshake took
    rtt_s: float | None = None  # HTTP/2: the round trip of the PING sent with its preface
    pings: list[int] = field(default_factory=list)  # numbers of the pings answered on it
    controller: str | None = None  # the controller URL it was dialled for

    @property
    def crossing_s(self) -> float:
        """How far the two ends' times of one stream may fairly differ: the round trip (the PING's, else the
        handshake's) and ``LATE_ANSWER_S`` of scheduling on two busy loops."""
        round_trip_s = self.rtt_s if self.rtt_s is not None else (self.handshake_s or 0.0)
        return LATE_ANSWER_S + round_trip_s


@dataclass(frozen=True)
class Failover:
    """The session moved from one controller to another, at ``at_s`` into the run, because of ``loss``."""

    at_s: float
    from_url: str
    to_url: str
    loss: LinkLoss


@dataclass(frozen=True)
class GiveUp:
    reason: GiveUpReason
    tries: int
    over_s: float  # from the first try to the last failure


@dataclass(frozen=True)
class PingResult:
    number: int  # 1-based, in the scenario's order
    interval_s: float
    elapsed_s: float  # from handing the request to the client to the end of the response body (or the failure)
    status: int | None = None
    http_version: str | None = None
    connection: int | None = None  # ConnectionRecord.number
    stream_id: int | None = None  # HTTP/2 only
    local_port: int | None = None
    headers_sent_at_s: float | None = None  # since the run started
    finished_at_s: float | None = None
    # When its last try began (it may have waited for a free stream before), and, if this ping dialled the
    # connection, when TLS began and ended; when the answer's first byte came. Since the run started.
    started_at_s: float | None = None
    tls_started_at_s: float | None = None
    tls_done_at_s: float | None = None
    first_byte_at_s: float | None = None
    failure: Failure | None = None  # None: answered with one of the scenario's statuses
    attempts: int = 1
    stream_wait_s: float | None = None  # waited, its connection ready, before it could open a stream
    gave_up: GiveUp | None = None  # a persistent session's last word on a failed ping
    controller: str | None = None  # the controller URL its last try went to
    # The worst lag of this process's event loop while its last try was out: what its times may be late by, this
    # process being busy or not scheduled (dialout/loop_lag.py).
    loop_lag_s: float = 0.0

    def with_loop_lag(self, lag_s: float) -> PingResult:
        """This result with ``loop_lag_s`` set: what ``dataclasses.replace`` makes, at a fifth of its cost (a run
        asks it of every ping at its end, 20,000 in a bench run), its other fields copied as they are."""
        if lag_s == self.loop_lag_s:
            return self
        copy = object.__new__(PingResult)
        copy.__dict__.update(self.__dict__)
        object.__setattr__(copy, "loop_lag_s", lag_s)
        return copy

    @property
    def ok(self) -> bool:
        """Answered with one of the scenario's statuses (the client sets ``failure`` for any other)."""
        return self.failure is None and self.status is not None

    @property
    def outcome(self) -> PingOutcome:
        if not self.ok:
            return PingOutcome.FAILED
        return PingOutcome.OK if self.attempts == 1 else PingOutcome.RETRIED_THEN_OK


@dataclass(frozen=True)
class ControllerFinding:
    """One of the controller's findings about this switch's client (``GET /diagnosis``), as it sent it."""

    kind: str  # multiplexed, http1_only, dial_race, ... (controller/diagnosis/findings.py)
    severity: str  # problem, note, good
    connections: tuple[int, ...]  # the controller's connection ids
    sentence: str


@dataclass(frozen=True)
class NoRecord:
    """The switch opened a connection the controller has no record of."""

    connection: int  # ours
    local_address: str


@dataclass(frozen=True)
class StreamCount:
    """The switch and the controller counted a connection's streams differently."""

    connection: int
    local_address: str
    sent: int
    seen: int


@dataclass(frozen=True)
class Concurrency:
    """One end had two or more streams at once on a connection, the other did not."""

    connection: int
    local_address: str
    switch_peak: int
    controller_peak: int


# How much later than the controller sent it (beyond the round trip) an answer may reach the switch before the
# cross-check calls it late: scheduling on two busy event loops, not a network's worth.
LATE_ANSWER_S = 0.100


@dataclass(frozen=True)
class LateAnswer:
    """A ping's answer reached the switch later than the controller sent it, by more than ``bound_s``: from its
    request written to its answer read the switch counted ``switch_s``; from the request arriving to the answer
    sent the controller counted ``controller_s``. The difference is the network's two ways, and anything that held
    the answer on its way (a proxy, or the client itself: httpcore's read lock did this)."""

    connection: int
    local_address: str
    ping: int
    stream_id: int
    switch_s: float
    controller_s: float
    bound_s: float  # LATE_ANSWER_S plus the connection's round trip
    switch_lag_s: float = 0.0  # the switch's own loop lag while the ping was out (PingResult.loop_lag_s)
    controller_lag_s: float = 0.0  # the controller's, while the stream was its (a request read late by it)

    @property
    def late_s(self) -> float:
        return self.switch_s - self.controller_s

    @property
    def inconclusive(self) -> bool:
        """The two ends' loops lagged, together, as long as the answer was late beyond the bound: the switch may
        have read the answer late, or the controller the request, so nothing can be said of the way between
        (issue 28)."""
        return self.switch_lag_s + self.controller_lag_s >= self.late_s - self.bound_s


# Where the two ends' accounts of a connection differ.
Disagreement = NoRecord | StreamCount | Concurrency | LateAnswer


@dataclass(frozen=True)
class ControllerView:
    """What the controller says it saw of this run's connections (``GET /connections``)."""

    switch: str
    records: tuple[dict[str, Any], ...] = ()  # the controller's records of this run's connections
    streams: int = 0  # on those connections, not counting the query that asked
    peak_in_flight: int = 0
    unused: int = 0  # connections that carried no stream at all
    disagreements: tuple[Disagreement, ...] = ()
    # Late answers the switch's own loop lag could explain: neither a disagreement nor an agreement
    inconclusive: tuple[LateAnswer, ...] = ()
    error: Failure | None = None  # GET /connections failed
    forgotten: int = 0  # connections from before the controller restarted, which it no longer knows
    no_account: str | None = None  # not dialout's controller: what it answered when asked for its account
    findings: tuple[ControllerFinding, ...] | None = None  # None: the controller gave no diagnosis

    @property
    def via(self) -> tuple[str, ...]:
        """The trusted proxies the controller saw these connections through."""
        return tuple(sorted({str(record["via"]) for record in self.records if record.get("via")}))

    @property
    def agrees(self) -> bool:
        return self.error is None and self.no_account is None and not self.disagreements

    def record_of(self, local_address: str) -> dict[str, Any] | None:
        """The controller's record of our connection from ``local_address`` (its peer is our end)."""
        return next((record for record in self.records if str(record.get("peer")) == local_address), None)

    def connection_id(self, local_address: str) -> int | None:
        """The controller's number for our connection from ``local_address``, if it has one."""
        record = self.record_of(local_address)
        return None if record is None else int(record["id"])


@dataclass(frozen=True)
class Spilled:
    connections: int  # HTTP/2 connections the run's pings took
    limit: int  # streams the controller lets one carry at once (SETTINGS_MAX_CONCURRENT_STREAMS)


@dataclass(frozen=True)
class RunResult:
    scenario: Scenario
    controller_url: str
    pings: tuple[PingResult, ...]
    connections: tuple[ConnectionRecord, ...]
    wall_time_s: float
    controller_view: ControllerView | None = None  # None when no ping got an answer to ask about
    reconnects: int = 0  # times the link went down and came back (persistent sessions)
    failovers: tuple[Failover, ...] = ()  # times a session came back at another controller

    @property
    def controllers(self) -> dict[str, int]:
        """Pings answered, by the controller that answered them, in the order first answered."""
        answered: dict[str, int] = {}
        for ping in sorted(self.pings, key=lambda ping: ping.finished_at_s or 0.0):
            if ping.status is not None and ping.controller is not None:
                answered[ping.controller] = answered.get(ping.controller, 0) + 1
        return answered

    def peak_in_flight(self, connection: int) -> int:
        return peak_in_flight(ping for ping in self.pings if ping.connection == connection)

    def surely_in_flight(self, connection: int) -> int:
        """``peak_in_flight``, less the pings that were at once only as they crossed on the wire."""
        record = self.connections[connection - 1]
        return surely_in_flight((ping for ping in self.pings if ping.connection == connection), record.crossing_s)

    def controller_connection(self, connection: int | None) -> int | None:
        """The controller's number for our connection ``connection``, where its account names it."""
        if connection is None or self.controller_view is None or not 0 < connection <= len(self.connections):
            return None
        return self.controller_view.connection_id(self.connections[connection - 1].local_address)

    def spilled(self) -> Spilled | None:
        """What ``streams: spill`` did: the HTTP/2 connections it took, at the controller's limit (None: it needed
        no second one, or the scenario queues)."""
        limits = [record.max_streams for record in self.connections if record.max_streams is not None]
        if self.scenario.streams != StreamPolicy.SPILL or len(limits) < 2:
            return None
        return Spilled(len(limits), max(limits))

    def queued_for_a_stream(self) -> list[PingResult]:
        """The pings that found their connection carrying as many streams as it takes (the controller's
        SETTINGS_MAX_CONCURRENT_STREAMS) and waited for one to finish: at least that many others on the connection
        went out before them and were still open when they were ready. Counted from the timeline rather than from
        the wait itself, which also holds the first SETTINGS round trip and the encoding of a burst."""
        queued: list[PingResult] = []
        for record in self.connections:
            limit = record.max_streams
            if limit is None:  # no limit said (or HTTP/1.1, one request at a time): nothing to queue for
                continue
            sent = sorted(
                (
                    ping
                    for ping in self.pings
                    if ping.connection == record.number and ping.headers_sent_at_s is not None
                ),
                key=lambda ping: ping.headers_sent_at_s or 0.0,
            )
            ends_so_far: list[float] = []  # finish times of the pings sent before this one, sorted
            for ping in sent:
                if ping.stream_wait_s is not None and ping.headers_sent_at_s is not None:
                    ready_at_s = ping.headers_sent_at_s - ping.stream_wait_s
                    still_open = len(ends_so_far) - bisect.bisect_right(ends_so_far, ready_at_s)
                    if still_open >= limit:
                        queued.append(ping)
                finished = ping.finished_at_s if ping.finished_at_s is not None else math.inf
                bisect.insort(ends_so_far, finished)
        return sorted(queued, key=lambda ping: ping.number)


def peak_in_flight(pings: Iterable[PingResult]) -> int:
    """The most of ``pings`` open at once, from request headers written to response end."""
    return surely_in_flight(pings, crossing_s=0.0)


def surely_in_flight(pings: Iterable[PingResult], crossing_s: float) -> int:
    """The most of ``pings`` that the other end must have had open at once too. A ping's span at the switch
    (request written to answer read) holds its span at the controller plus both ways on the wire: two pings whose
    spans overlap by less than ``crossing_s`` may have crossed (the first answered before the second arrived), so
    each span is taken in by half of it at both ends (0: the switch's own count)."""
    starts: list[float] = []
    ends: list[float] = []
    half_s = crossing_s / 2
    for ping in pings:
        if ping.headers_sent_at_s is not None and ping.finished_at_s is not None:
            start_s, end_s = ping.headers_sent_at_s + half_s, ping.finished_at_s - half_s
            if start_s < end_s:  # (a span of no length was never at once with anything)
                starts.append(start_s)
                ends.append(end_s)
    # The count peaks just after a start: the starts so far less the ends up to it (an end at a start's very time
    # comes first: touching is not overlap). Two sorted lists of floats, not one of tuples: a run of 20,000 pings
    # asks this of each connection, twice.
    starts.sort()
    ends.sort()
    peak = ended = 0
    for started, start_s in enumerate(starts, 1):
        while ended < len(ends) and ends[ended] <= start_s:
            ended += 1
        peak = max(peak, started - ended)
    return peak


def format_interval(interval_s: float) -> str:
    """5.0 -> '5', 0.3 -> '0.3': the shortest text that reads back as the same float."""
    return str(int(interval_s)) if interval_s.is_integer() else repr(interval_s)
