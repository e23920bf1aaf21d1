"""From the controller's records to findings: what a switch's HTTP client did with its connections.

The input is what ``ConnectionRegistry`` keeps: each connection (when its ClientHello came, when it was open,
when it closed, its ALPN) and the most recent streams (when each began and ended). Everything here is a pure
function of those, so a test can hand it records and the answer does not depend on when it is asked, but for
``now`` (how long an idle connection has been open).

Questions to the controller (``GET /connections``, ``GET /diagnosis``) are left out: they ask about the traffic,
they are not the traffic, and a connection that carried only questions is not the switch's.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from controller.accounts.connections import QUESTIONS, ControllerConnection, StreamSpan
from controller.diagnosis.findings import (
    RANK,
    Alpn,
    DialRace,
    Finding,
    Http1Only,
    Idle,
    Multiplexed,
    NoReuse,
    ReconnectStorm,
    Refused,
    RunDiagnosis,
    Sequential,
    StreamLimit,
    SwitchDiagnosis,
)
from dialout.config import ControllerConfig
from dialout.loop_lag import PERIOD_S, LoopLag
from dialout.refusals import Refusal, did_you_mean

# A redial sooner than this after the last connection closed had no backoff worth the name: dialout's own
# reconnect starts at 0.1 s and doubles (config.yaml switch.reconnect), and so do most clients'.
STORM_GAP_S = 0.1
STORM_REDIALS = 5  # in a row: one or two quick redials are a client recovering, five are a loop
# A connection this young may just not have sent its first request yet: not called idle.
IDLE_AFTER_S = 1.0
# A request that began this soon after a full connection freed a stream had been waiting for it. (The client
# learns of the free stream only when it has read the answer: measured ~10 ms on loopback for httpx.)
QUEUE_WINDOW_S = 0.05
# A switch that held no connection at all for this long and then dialled again is on a new run: a new process,
# or a periodic connection (RFC 8071 section 4.2's "periodic" call home). Runs are judged apart, since one run
# cannot reuse another's connections. Within a run a client that needs a connection again this soon after
# closing its last one had every reason to keep it (a shell loop of curl is one run, and no_reuse).
RUN_GAP_S = 1.0
# Records read between the points where a stepwise diagnosis may pause (~1 ms of work).
STEP = 2_000
_Record = TypeVar("_Record", ControllerConnection, StreamSpan)


@dataclass(frozen=True)
class Limits:
    """The controller settings a client is held against."""

    max_concurrent_streams: int
    keep_alive_max_requests: int
    fleet: tuple[str, ...] = ()  # controller.switches: what a refused name may have meant


def limits_of(cfg: ControllerConfig) -> Limits:
    return Limits(cfg.max_concurrent_streams, cfg.keep_alive_max_requests, cfg.switches)


@dataclass(frozen=True)
class Carried:
    """A trusted proxy (nginx's front) whose own ``connections`` were left out of the diagnosis: they carry the
    switches' requests, and no switch is judged by them."""

    proxy: str
    connections: int


@dataclass(frozen=True)
class Window:
    """Which records to read: activity since a ``time.monotonic()`` reading, or exactly these connections."""

    since: float | None = None
    connections: frozenset[int] | None = None


class WindowError(ValueError):
    """A ``since`` or ``connections`` that cannot be read: a 400 on ``/diagnosis``."""


def parse_window(since: str | None, connections: str | None) -> Window:
    """``since``: seconds ago (``30``) or a time (``2026-11-23T10:00:00Z``, UTC if it names no zone);
    ``connections``: ids separated by commas (``3,4,5``)."""
    return Window(_parse_since(since) if since else None, _parse_ids(connections) if connections else None)


def _parse_since(text: str) -> float:
    try:
        seconds_ago = float(text)
    except ValueError:
        try:
            at = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise WindowError(f"since must be seconds ago or an ISO 8601 time, got {text!r}") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=datetime.UTC)
        seconds_ago = (datetime.datetime.now(datetime.UTC) - at).total_seconds()
    else:
        if not math.isfinite(seconds_ago) or seconds_ago < 0:
            raise WindowError(f"since must be seconds ago (a number >= 0) or an ISO 8601 time, got {text!r}")
    return time.monotonic() - seconds_ago


def _parse_ids(text: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise WindowError(f"connections must be connection ids separated by commas, got {text!r}") from None


def switch_of(connection: ControllerConnection) -> str:
    """A switch is its certificate's CN; an anonymous client (cleartext, bench mode) is its address."""
    return connection.switch or connection.peer.host


def diagnose(  # noqa: PLR0913 - the records, what they are held to, which of them, and the clock's, each by name
    connections: Iterable[ControllerConnection],
    spans: Iterable[StreamSpan],
    limits: Limits,
    window: Window = Window(),
    switch: str | None = None,
    now: float | None = None,
    lag: LoopLag | None = None,
) -> list[SwitchDiagnosis]:
    """One diagnosis per switch that had a connection in the window (only ``switch``'s, if given), by name.
    ``lag``: the controller's own loop lag, sampled while the records were made; a finding judged from a time
    that the lag could have made is inconclusive (None: not known, all hold)."""
    steps = diagnose_stepwise(connections, spans, limits, window, switch, now, lag)
    return [found for found in steps if isinstance(found, SwitchDiagnosis)]


def diagnose_stepwise(  # noqa: PLR0913 - as diagnose
    connections: Iterable[ControllerConnection],
    spans: Iterable[StreamSpan],
    limits: Limits,
    window: Window = Window(),
    switch: str | None = None,
    now: float | None = None,
    lag: LoopLag | None = None,
) -> Iterator[SwitchDiagnosis | Carried | None]:
    """``diagnose``, a switch at a time, with a None every STEP records read: where a caller on an event loop may
    let others run (10,000 connections take some 50 ms of CPU to judge); and, before them, each trusted proxy whose
    own connections were left out (``Carried``)."""
    now = time.monotonic() if now is None else now
    traffic: dict[int, list[StreamSpan]] = defaultdict(list)
    refused: dict[int, list[StreamSpan]] = defaultdict(list)  # answered 403: not traffic (a Refused finding)
    known = {connection.id: connection for connection in connections}
    since = window.since
    for some_spans in _steps(spans):
        for span in some_spans:
            if span.path in QUESTIONS or (since is not None and span.started < since):
                continue
            connection = span.connection
            (traffic if span.refused is None else refused)[connection.id].append(span)
            if connection.id not in known:  # older than the connection history keeps
                known[connection.id] = connection
        yield None
    by_switch: dict[str, list[ControllerConnection]] = defaultdict(list)
    carried: Counter[str] = Counter()
    everything = window.connections is None and window.since is None
    for some_connections in _steps(known.values()):
        for connection in some_connections:
            requested = connection.id in traffic or connection.id in refused
            if everything or _in_window(connection, window, requested):
                _sort(connection, switch, requested, by_switch, carried)
        yield None
    for proxy in sorted(carried):
        yield Carried(proxy, carried[proxy])
    _in_start_order(traffic)
    clock = _Clock(now, lag)
    for name in sorted(by_switch):
        found = by_switch[name]
        # Served: not those only refused. Most often nothing was refused at all, and both are plain.
        turned_away = {c.id: refused[c.id] for c in found if c.id in refused} if refused else {}
        served = [c for c in found if c.id in traffic or c.id not in refused] if refused else found
        # Every switch's traffic in one map, read by each switch's connection ids only: a connection that carried
        # none reads an empty list (and adds it), and no map is built a switch (10,000 entries at 10,000 connections).
        yield _diagnose_switch(name, served, traffic, limits, clock, turned_away)


def _steps(records: Iterable[_Record]) -> Iterator[list[_Record]]:
    """``records``, STEP at a time (not a count and a test per record: 20,000 of each at 10,000 connections)."""
    records = iter(records)
    while step := list(itertools.islice(records, STEP)):
        yield step


def _in_start_order(traffic: dict[int, list[StreamSpan]]) -> None:
    """Each connection's streams in the order they began (a store gives them in the order they ended)."""
    for spans in traffic.values():
        if len(spans) > 1:  # most connections of a storm carry one
            spans.sort(key=_started)


def _sort(
    connection: ControllerConnection,
    switch: str | None,
    requested: bool,
    by_switch: dict[str, list[ControllerConnection]],
    carried: Counter[str],
) -> None:
    """Into its switch's connections to diagnose, or its proxy's count of connections left out."""
    name = switch_of(connection)
    if connection.from_trusted_proxy:  # carries switches' requests, each diagnosed as its switch's
        carried[name] += 1
    elif (switch is None or name == switch) and (requested or connection.streams == 0):
        by_switch[name].append(connection)  # (not one that carried only questions)


def _in_window(connection: ControllerConnection, window: Window, requested: bool) -> bool:
    if window.connections is not None:
        return connection.id in window.connections
    return window.since is None or connection.opened >= window.since or requested


@dataclass(frozen=True)
class _Clock:
    """When the diagnosis is made, and the controller's loop lag while its records were (None: not known)."""

    now: float
    lag: LoopLag | None

    def lag_s(self, since: float, until: float) -> float:
        """The worst lag between two of the records' times (one sampling period after: a hold shows when it ends)."""
        return 0.0 if self.lag is None else self.lag.worst(since, until + PERIOD_S).worst_s


def _diagnose_switch(
    name: str,
    connections: list[ControllerConnection],
    traffic: dict[int, list[StreamSpan]],
    limits: Limits,
    clock: _Clock,
    turned_away: dict[int, list[StreamSpan]],
) -> SwitchDiagnosis:
    """``connections`` and their ``traffic`` (by connection id, each in the order they began; a connection with none
    reads an empty list) are judged in runs; ``turned_away``: the requests refused, by connection (those that
    carried only refused ones are not in ``connections``)."""
    connections = sorted(connections, key=lambda c: (_dialled(c), c.id))
    runs = tuple(_diagnose_run(run, traffic, limits, clock) for run in _runs(connections))
    found = [finding for run in runs for finding in run.findings]
    refused = _refused(name, turned_away, limits.fleet)
    if refused is not None:
        found.append(refused)
    findings = sorted(found, key=lambda f: RANK[f.kind])
    streams = sum(run.streams for run in runs)
    every = {c.id for c in connections} | set(turned_away)
    return SwitchDiagnosis(name, len(every), streams, tuple(findings), runs)


def _refused(name: str, turned_away: dict[int, list[StreamSpan]], fleet: tuple[str, ...]) -> Refused | None:
    spans = [span for spans in turned_away.values() for span in spans]
    if not spans:
        return None
    reasons = Counter(span.refused for span in spans if span.refused is not None)
    refusal = reasons.most_common(1)[0][0]
    mean = did_you_mean(name, fleet) if refusal is Refusal.NOT_IN_FLEET else None
    return Refused(tuple(sorted(turned_away)), len(spans), refusal, name, mean)


def _runs(connections: Sequence[ControllerConnection]) -> list[list[ControllerConnection]]:
    """``connections`` (in dial order) cut wherever the switch held none for RUN_GAP_S or more."""
    runs: list[list[ControllerConnection]] = []
    last_close = -math.inf  # the latest close in the current run: math.inf while one of them is still open
    for connection in connections:
        if not runs or _dialled(connection) - last_close >= RUN_GAP_S:
            runs.append([])
            last_close = -math.inf
        runs[-1].append(connection)
        last_close = max(last_close, math.inf if connection.closed is None else connection.closed)
    return runs


def _diagnose_run(
    connections: list[ControllerConnection], traffic: dict[int, list[StreamSpan]], limits: Limits, clock: _Clock
) -> RunDiagnosis:
    sweep = _Sweep(connections, traffic, limits.max_concurrent_streams)
    race = _dial_race(connections, traffic, clock)
    # Connections a dial race explains are not said again to be unpooled: with several handshakes going at once,
    # one may finish before another connection is dialled, and would look like room the client did not use.
    raced = frozenset(race.connections if race else ())
    found: list[Finding | None] = [
        _http1_only(connections, sweep),
        race,
        _no_reuse([c for c in connections if c.id not in raced], traffic, limits),
        _reconnect_storm(connections, limits.keep_alive_max_requests, clock),
        _stream_limit(sweep, limits.max_concurrent_streams),
        _idle(connections, clock),
        _multiplexed(sweep, traffic),
    ]
    findings = [finding for finding in found if finding is not None]
    streams = sum(len(traffic[c.id]) for c in connections)
    if streams and sweep.most_at_once == 1 and not any(isinstance(f, NoReuse) for f in findings):
        findings.append(Sequential(tuple(c.id for c in connections if traffic[c.id]), streams))
    findings.sort(key=lambda finding: RANK[finding.kind])
    return RunDiagnosis(tuple(c.id for c in connections), streams, tuple(findings))


def _started(span: StreamSpan) -> float:
    return span.started


def _first_started(single: tuple[StreamSpan, ControllerConnection]) -> float:
    return single[0].started


def _dialled(connection: ControllerConnection) -> float:
    """When the client dialled, as near as we know: its ClientHello, or (no TLS, or behind a proxy) when we
    recorded it."""
    return connection.hello_at if connection.hello_at is not None else connection.opened


def _is_h2(connection: ControllerConnection) -> bool:
    return connection.alpn == "h2" or connection.http_version == "2"


class _Sweep:
    """One pass over every stream's start and end, in time order, for what needs the overlap of streams."""

    def __init__(
        self, connections: Sequence[ControllerConnection], traffic: dict[int, list[StreamSpan]], limit: int
    ) -> None:
        self.peak: dict[int, int] = {}
        self.http1_overlapping: set[int] = set()
        self.http1_most_at_once = 0
        self.full: set[int] = set()  # ever at the limit
        self.spilled_to: set[int] = set()
        self.queued = 0
        self.most_at_once = 0  # over all the switch's connections
        h2 = {c.id for c in connections if _is_h2(c)}
        events = _stream_events(connections, traffic)
        busy: dict[int, int] = {}
        peak = self.peak
        in_flight = most_at_once = 0
        full_now: set[int] = set()
        freed_at: dict[int, float] = {}
        for at, starts, id_ in events:
            if not starts:
                if id_ in full_now:
                    full_now.discard(id_)
                    freed_at[id_] = at
                busy[id_] -= 1
                in_flight -= 1
                if not busy[id_]:
                    del busy[id_]
                continue
            if id_ not in h2:
                others = [other for other in busy if other != id_ and other not in h2]
                if others:
                    self.http1_overlapping.update((*others, id_))
                    at_once = 1 + busy.get(id_, 0) + sum(busy[other] for other in others)
                    self.http1_most_at_once = max(self.http1_most_at_once, at_once)
            elif full_now and any(other != id_ for other in full_now):
                self.spilled_to.add(id_)
            if freed_at and at - freed_at.get(id_, -math.inf) <= QUEUE_WINDOW_S:  # the client was waiting for that
                self.queued += 1
            on_it = busy[id_] = busy.get(id_, 0) + 1
            peak[id_] = max(peak.get(id_, 0), on_it)
            in_flight += 1
            most_at_once = max(most_at_once, in_flight)
            if on_it >= limit and id_ in h2:
                full_now.add(id_)
                self.full.add(id_)
        self.most_at_once = most_at_once


def _stream_events(
    connections: Sequence[ControllerConnection], traffic: dict[int, list[StreamSpan]]
) -> list[tuple[float, bool, int]]:
    """Every stream's start and, once it has one, its end, by time, with its connection's id; an end before a start
    at the same instant (False < True), so that back-to-back requests do not count as overlapping."""
    events = []
    for connection in connections:
        id_ = connection.id
        for span in traffic[id_]:
            events.append((span.started, True, id_))
            if span.ended is not None:
                events.append((span.ended, False, id_))
    events.sort()
    return events


def _http1_only(connections: Sequence[ControllerConnection], sweep: _Sweep) -> Http1Only | None:
    if not sweep.http1_overlapping:
        return None
    involved = [c for c in connections if c.id in sweep.http1_overlapping]
    offered = dict.fromkeys(
        Alpn.CLEARTEXT if c.cleartext else Alpn.HTTP11 if c.alpn == "http/1.1" else Alpn.NONE for c in involved
    )
    return Http1Only(tuple(c.id for c in involved), tuple(offered), sweep.http1_most_at_once)


def _dial_race(
    connections: Sequence[ControllerConnection], traffic: dict[int, list[StreamSpan]], clock: _Clock
) -> DialRace | None:
    """HTTP/2 connections whose handshakes began while the first one's was still going: the client dialled per
    request instead of waiting for the connection in progress. Only when the extras carried a request or none
    (a client that spreads load over a few busy connections on purpose is not racing).

    One pass in dial order: a group's members are found by bisecting the dial times, and whether more than one of
    them was busy by bisecting the busy ones, so 10,000 connections dialled in one handshake's time cost
    n log n, not n squared (issue 20: /diagnosis took 6 s at 10,000 connections)."""
    h2 = [c for c in connections if _is_h2(c)]  # in dial order
    dialled = [_dialled(c) for c in h2]
    if all(dialled[k + 1] >= _ready(h2[k], traffic) for k in range(len(h2) - 1)):
        return None  # each dialled once the one before could take requests: no dial began in another's handshake
    busy = [i for i, c in enumerate(h2) if len(traffic[c.id]) > 1]  # not yet in a race; ascending
    ungrouped = _Ungrouped(len(h2))
    races: list[list[ControllerConnection]] = []
    for i, first in enumerate(h2):
        if not ungrouped.has(i):
            continue
        start = bisect.bisect_left(dialled, dialled[i])
        end = bisect.bisect_left(dialled, _ready(first, traffic))
        others = [j for j in (ungrouped.next(start), ungrouped.next(i + 1)) if j != i and j < end]
        busy_members = bisect.bisect_left(busy, end) - bisect.bisect_left(busy, start)
        if not others or busy_members > 1:
            continue
        indexes = [i]
        j = ungrouped.next(start)
        while j < end:
            if j != i:
                indexes.append(j)
            j = ungrouped.next(j + 1)
        for j in indexes:
            ungrouped.remove(j)
        if busy_members:
            busy.pop(bisect.bisect_left(busy, start))
        races.append([h2[j] for j in indexes])
    if not races:
        return None
    members = [c for group in races for c in group]
    first = races[0][0]
    # An extra whose ClientHello was read in an earlier loop turn than its first's handshake end came before it,
    # whatever the loop's lag: a race for certain. Only the others' order rests on the times.
    uncertain = [(group[0], extra) for group in races for extra in group[1:] if not _read_before(extra, group[0])]
    return DialRace(
        connections=tuple(c.id for c in members),
        streams=tuple(len(traffic[c.id]) for c in members),
        within_s=max(_dialled(group[-1]) - _dialled(group[0]) for group in races),
        handshake_s=None if first.hello_at is None else first.opened - first.hello_at,
        races=len(races),
        margin_s=min((_ready(first, traffic) - _dialled(extra) for first, extra in uncertain), default=math.inf),
        # between the stamps compared: a loop that lagged there could have stamped "ready" after a dial that came
        # later (the stamps are both taken where the bytes are read: only what one loop turn holds can swap)
        lag_s=max((clock.lag_s(_dialled(extra), _ready(first, traffic)) for first, extra in uncertain), default=0.0),
    )


def _read_before(extra: ControllerConnection, first: ControllerConnection) -> bool:
    """``extra``'s ClientHello was read in an earlier loop turn than ``first``'s handshake end."""
    return extra.hello_turn is not None and first.done_turn is not None and extra.hello_turn < first.done_turn


def _ready(connection: ControllerConnection, traffic: dict[int, list[StreamSpan]]) -> float:
    """When a client could have sent on ``connection``: its handshake's end, or (h2c, no handshake to see) its
    first request."""
    if connection.hello_at is not None:
        return connection.opened
    return traffic[connection.id][0].started if traffic[connection.id] else connection.opened


class _Ungrouped:
    """Indexes 0..n-1 not yet in a group, with the next one at or after any index in near-constant time (a
    disjoint-set forest with path halving: each removed index points past itself)."""

    def __init__(self, n: int) -> None:
        self._next = list(range(n + 1))  # n: past the end, never removed

    def next(self, index: int) -> int:
        """The first index >= ``index`` not removed (n if none)."""
        pointers = self._next
        while pointers[index] != index:
            pointers[index] = pointers[pointers[index]]
            index = pointers[index]
        return index

    def has(self, index: int) -> bool:
        return self.next(index) == index

    def remove(self, index: int) -> None:
        self._next[index] = index + 1


def _no_reuse(
    connections: Sequence[ControllerConnection], traffic: dict[int, list[StreamSpan]], limits: Limits
) -> NoReuse | None:
    """A connection that carried one request, and the next request came on a new connection dialled when the
    first could have taken it: done with its request (closed, or left idle), or HTTP/2, up and with streams to
    spare (never pooled: each request gets a client of its own)."""
    ones = [(spans[0], c) for c in connections if len(spans := traffic[c.id]) == 1]
    singles = sorted(ones, key=_first_started)
    chained: dict[int, None] = {}
    closed = left_open = 0
    for (span, earlier), (_, later) in itertools.pairwise(singles):
        dialled = _dialled(later)
        idle = span.ended is not None and span.ended <= dialled
        if not idle and not (_is_h2(earlier) and earlier.opened <= dialled and limits.max_concurrent_streams > 1):
            continue  # it could not have taken the next request: busy, and no room beside it
        if earlier.streams >= limits.keep_alive_max_requests:
            continue  # we closed it (GOAWAY after its last request)
        chained[earlier.id] = chained[later.id] = None
        if earlier.closed is not None and earlier.closed <= dialled:
            closed += 1
        else:
            left_open += 1
    if not chained:
        return None
    return NoReuse(tuple(chained), closed, left_open)


def _reconnect_storm(
    connections: Sequence[ControllerConnection], keep_alive_max_requests: int, clock: _Clock
) -> ReconnectStorm | None:
    """The longest run of connections each dialled within STORM_GAP_S of the last one's close."""
    if len(connections) <= STORM_REDIALS:
        return None  # too few to redial that often (most switches of a fleet: a connection or two)
    gaps: list[float] = []  # from each connection's close to the next one's dial
    first = redials = 0  # the longest run so far: its first gap's index, and its length (its redials)
    start = 0  # the current run's first gap
    for index, (earlier, later) in enumerate(itertools.pairwise(connections)):
        gap = math.inf if earlier.closed is None else _dialled(later) - earlier.closed
        gaps.append(gap)
        # A redial right after our GOAWAY (keep_alive_max_requests) is what the client should do.
        if 0 <= gap < STORM_GAP_S and earlier.streams < keep_alive_max_requests:
            if index + 1 - start > redials:
                first, redials = start, index + 1 - start
        else:
            start = index + 1
    if redials < STORM_REDIALS:
        return None
    run = connections[first : first + redials + 1]
    run_gaps = gaps[first : first + redials]
    first_closed = _dialled(run[1]) - run_gaps[0]
    return ReconnectStorm(
        connections=tuple([c.id for c in run]),
        redials=redials,
        within_s=_dialled(run[-1]) - first_closed,
        longest_gap_s=max(run_gaps),
        margin_s=STORM_GAP_S - max(run_gaps),
        lag_s=clock.lag_s(first_closed, _dialled(run[-1])),
    )


def _stream_limit(sweep: _Sweep, limit: int) -> StreamLimit | None:
    if not sweep.full:
        return None
    return StreamLimit(tuple(sorted(sweep.full)), limit, tuple(sorted(sweep.spilled_to)), sweep.queued)


def _idle(connections: Sequence[ControllerConnection], clock: _Clock) -> Idle | None:
    now = clock.now
    idle = [c for c in connections if c.streams == 0 and (c.closed is not None or now - c.opened >= IDLE_AFTER_S)]
    if not idle:
        return None
    longest = max((c.closed if c.closed is not None else now) - c.opened for c in idle)
    still_open = [c for c in idle if c.closed is None]
    margin_s = min((now - c.opened - IDLE_AFTER_S for c in still_open), default=math.inf)
    lag_s = max((clock.lag_s(c.opened, now) for c in still_open), default=0.0)
    return Idle(tuple(c.id for c in idle), longest, len(still_open), margin_s, lag_s)


def _multiplexed(sweep: _Sweep, traffic: dict[int, list[StreamSpan]]) -> Multiplexed | None:
    shared = sorted(id_ for id_, peak in sweep.peak.items() if peak >= 2)
    if not shared:
        return None
    return Multiplexed(tuple(shared), max(sweep.peak[id_] for id_ in shared), sum(len(traffic[i]) for i in shared))
