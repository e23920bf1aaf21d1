"""What the controller concludes about a switch's HTTP client, as data: one frozen class per kind of finding.

``analysis`` draws them from the connections and streams the controller recorded; ``sentences`` renders them. A
finding holds evidence only (connection ids, counts, seconds): no prose.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from dialout.refusals import Refusal


class FindingKind(enum.StrEnum):
    """Stable names: scripts match on them in ``/diagnosis`` JSON."""

    REFUSED = "refused"
    HTTP1_ONLY = "http1_only"
    DIAL_RACE = "dial_race"
    NO_REUSE = "no_reuse"
    RECONNECT_STORM = "reconnect_storm"
    STREAM_LIMIT = "stream_limit"
    IDLE = "idle"
    MULTIPLEXED = "multiplexed"
    SEQUENTIAL = "sequential"


class Severity(enum.StrEnum):
    PROBLEM = "problem"  # the client did not multiplex what it could have, or redials without backing off
    NOTE = "note"  # worth knowing, not wrong: a stream limit reached, connections left unused
    GOOD = "good"  # multiplexed, or nothing that needed it


class Alpn(enum.StrEnum):
    """What a connection that ended up on HTTP/1.1 tells of the client's offer."""

    NONE = "none"  # no ALPN at all (or none of h2, http/1.1): the client never offered HTTP/2
    HTTP11 = "http/1.1"  # offered http/1.1 without h2: the client's HTTP/2 is off
    CLEARTEXT = "cleartext"  # no TLS: HTTP/1.1 without prior-knowledge h2c


@dataclass(frozen=True)
class Refused:
    """Requests the controller answered 403: the client got in (its certificate verified) but is not one it serves.
    They are not judged as traffic: a refused client's pattern says nothing of its multiplexing."""

    kind: ClassVar[FindingKind] = FindingKind.REFUSED
    severity: ClassVar[Severity] = Severity.PROBLEM
    connections: tuple[int, ...]  # those that carried a refused request
    requests: int
    refusal: Refusal  # why, for the most of them
    name: str  # the certificate's name it was refused under
    did_you_mean: str | None  # a name in the fleet close to it


@dataclass(frozen=True)
class Http1Only:
    """Requests that overlapped in time went on separate HTTP/1.1 connections."""

    kind: ClassVar[FindingKind] = FindingKind.HTTP1_ONLY
    severity: ClassVar[Severity] = Severity.PROBLEM
    connections: tuple[int, ...]  # those that carried overlapping requests
    offered: tuple[Alpn, ...]  # what their ALPN says, each kind once
    most_at_once: int  # requests in flight at once, at most, over these connections


@dataclass(frozen=True)
class DialRace:
    """HTTP/2 connections dialled while the first was still in its handshake, the extras carrying little."""

    kind: ClassVar[FindingKind] = FindingKind.DIAL_RACE
    severity: ClassVar[Severity] = Severity.PROBLEM
    connections: tuple[int, ...]  # in the order their handshakes began
    streams: tuple[int, ...]  # requests each carried, in the same order
    within_s: float  # from the first handshake's start to the last's, in the widest race
    handshake_s: float | None  # how long the first connection's handshake took (None: not known, no TLS)
    races: int  # times the client did it
    # How long before a first connection was ready its latest extra was dialled: the controller's own loop lag it
    # holds through (a "ready" stamped late by a busy loop makes a dial after it look like one during it).
    margin_s: float = float("inf")
    lag_s: float = 0.0  # the controller's own worst loop lag over the times it compares


@dataclass(frozen=True)
class NoReuse:
    """Sequential requests, each on a connection of its own."""

    kind: ClassVar[FindingKind] = FindingKind.NO_REUSE
    severity: ClassVar[Severity] = Severity.PROBLEM
    connections: tuple[int, ...]
    closed_after_one: int  # connections the client closed after their request, before dialling the next
    left_open: int  # connections still open, and idle, when the client dialled the next (never pooled)


@dataclass(frozen=True)
class ReconnectStorm:
    """Connections redialled one after another with no backoff between them."""

    kind: ClassVar[FindingKind] = FindingKind.RECONNECT_STORM
    severity: ClassVar[Severity] = Severity.PROBLEM
    connections: tuple[int, ...]
    redials: int
    within_s: float  # from the first connection's close to the last one's opening
    longest_gap_s: float  # the longest wait between a close and the next dial: what backoff there was
    margin_s: float = float("inf")  # how far under the storm's threshold that gap was: the lag it holds through
    lag_s: float = 0.0  # the controller's own worst loop lag over the times it compares


@dataclass(frozen=True)
class StreamLimit:
    """A connection held as many streams as SETTINGS_MAX_CONCURRENT_STREAMS allows."""

    kind: ClassVar[FindingKind] = FindingKind.STREAM_LIMIT
    severity: ClassVar[Severity] = Severity.NOTE
    connections: tuple[int, ...]  # those that reached the limit
    limit: int
    spilled_to: tuple[int, ...]  # connections that got requests while one was full: the client opened more
    queued: int  # requests that began just as a stream of a full connection ended: the client waited


@dataclass(frozen=True)
class Idle:
    """Connections that carried no request at all."""

    kind: ClassVar[FindingKind] = FindingKind.IDLE
    severity: ClassVar[Severity] = Severity.NOTE
    connections: tuple[int, ...]
    longest_open_s: float  # the longest any of them stayed open (still open ones: until now)
    still_open: int
    # How long past IDLE_AFTER_S the youngest still-open one has waited for its first request: a first request
    # that a lagging loop had not read yet would make it look idle (closed ones carried none: no margin needed).
    margin_s: float = float("inf")
    lag_s: float = 0.0  # the controller's own worst loop lag over the times it compares


@dataclass(frozen=True)
class Multiplexed:
    """Concurrent requests shared a connection."""

    kind: ClassVar[FindingKind] = FindingKind.MULTIPLEXED
    severity: ClassVar[Severity] = Severity.GOOD
    connections: tuple[int, ...]  # those that carried two or more at once
    most_at_once: int  # on any one of them
    streams: int  # carried by them in all


@dataclass(frozen=True)
class Sequential:
    """Never two requests at once: nothing that needed multiplexing, and each connection reused."""

    kind: ClassVar[FindingKind] = FindingKind.SEQUENTIAL
    severity: ClassVar[Severity] = Severity.GOOD
    connections: tuple[int, ...]
    streams: int


Finding = Refused | Http1Only | DialRace | NoReuse | ReconnectStorm | StreamLimit | Idle | Multiplexed | Sequential

# The order findings are listed in: most telling first. The first is a switch's main finding.
ORDER = tuple(FindingKind)
RANK = {kind: rank for rank, kind in enumerate(ORDER)}  # a kind's place in ORDER, to sort by
# The findings judged from times, with a margin the controller's own loop lag may eat; the others, from counts.
JUDGED_FROM_TIMES = (DialRace, ReconnectStorm, Idle)


def holds_through(finding: Finding) -> float:
    """The controller's own loop lag a finding holds through: its time margin for those judged from times (under
    100 ms between dials, a dial during a handshake, no request for a second); those judged from counts hold
    through any."""
    return finding.margin_s if isinstance(finding, JUDGED_FROM_TIMES) else float("inf")


def inconclusive(finding: Finding) -> bool:
    """The controller's own loop lagged, over the times the finding compares, more than it holds through: the lag
    could have made it, so it is neither a problem nor fine (issue 28)."""
    return isinstance(finding, JUDGED_FROM_TIMES) and finding.lag_s > finding.margin_s


class _Judged:
    """What a list of findings comes to: its main one, whether any is a problem, whether any is inconclusive."""

    findings: tuple[Finding, ...]  # in ORDER

    @property
    def main(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def ok(self) -> bool:
        """No finding is a problem (an inconclusive one is not): what the exit code of ``controller explain`` says."""
        return not any(f.severity is Severity.PROBLEM and not inconclusive(f) for f in self.findings)

    @property
    def any_inconclusive(self) -> bool:
        return any(inconclusive(finding) for finding in self.findings)


@dataclass(frozen=True)
class RunDiagnosis(_Judged):
    """One run of a switch's client: its connections from a dial after a quiet gap (or the first) to the next
    such gap, judged on their own (``controller/diagnosis/analysis.py``, RUN_GAP_S)."""

    connections: tuple[int, ...]  # in dial order
    streams: int
    findings: tuple[Finding, ...]  # in ORDER


@dataclass(frozen=True)
class SwitchDiagnosis(_Judged):
    switch: str  # the client certificate's CN, or the address of an anonymous client
    connections: int  # in the window
    streams: int  # requests in the window, not counting questions to the controller (/connections, /diagnosis)
    findings: tuple[Finding, ...]  # every run's, in ORDER
    runs: tuple[RunDiagnosis, ...] = ()  # oldest first
