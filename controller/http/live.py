"""What the admin page shows live: the registry as data (``snapshot``), and the stream of those snapshots as
server-sent events (``GET /events`` on the admin listener), sent whenever something changed.

Times are this process's ``time.monotonic()`` seconds, with ``now`` beside them in each message: the page places
them on its own clock, so a bar keeps growing between two messages without the server sending one per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from time import monotonic
from typing import Any
from urllib.parse import parse_qs

from controller.accounts.connections import ConnectionRegistry, ControllerConnection, StreamSpan
from controller.http.interval import IntervalError, parse_interval

TICK_S = 0.2  # how often the registry is looked at; a message goes out only when something changed
KEEPALIVE_S = 15.0  # an SSE comment when nothing changed for this long: proxies and browsers keep the stream
SHOWN_OPEN = 50  # connections drawn one by one; the rest are counted (a fleet of 10,000 is a number, not a page)
RECENT_CLOSED = 10
RECENT_ANSWERED = 20
ANSWERED_SCAN = 5_000  # the newest streams looked at for those answered: bounded work per tick
RETRY_MS = 2_000  # how soon the browser reconnects after the controller restarts


@dataclass(frozen=True)
class InFlight:
    stream: int  # its number on the connection: 1, 2, ...
    stream_id: int | None  # HTTP/2: its stream id on the wire
    path: str
    interval_s: float | None  # what the ping asked for: the bar is full when it is due
    started_s: float


@dataclass(frozen=True)
class OpenConnection:
    id: int
    switch: str | None
    peer: str
    via: str | None  # a trusted proxy that told us of it (closed when the proxy's connections that carried it close)
    alpn: str | None
    tls_version: str | None
    streams: int
    opened_s: float
    in_flight: tuple[InFlight, ...]


@dataclass(frozen=True)
class Answered:
    connection: int
    switch: str | None
    stream: int
    stream_id: int | None
    path: str
    interval_s: float | None
    took_s: float
    ended_s: float


@dataclass(frozen=True)
class Closed:
    id: int
    switch: str | None
    peer: str
    alpn: str | None
    streams: int
    peak_in_flight: int
    open_s: float  # how long it was open
    closed_s: float


@dataclass(frozen=True)
class Totals:
    switches: int  # with an open connection
    open_connections: int
    streams_in_flight: int
    connections_opened: int  # since the start
    streams: int  # since the start


@dataclass(frozen=True)
class LiveView:
    totals: Totals
    open: tuple[OpenConnection, ...]  # the oldest SHOWN_OPEN
    open_not_shown: int
    answered: tuple[Answered, ...]  # newest first
    closed: tuple[Closed, ...]  # newest first


def snapshot(registry: ConnectionRegistry) -> LiveView:
    recorded = registry.connections()
    open_now = [c for c in recorded if c.closed_at is None]
    closed = [c for c in recorded if c.closed is not None][-RECENT_CLOSED:]
    answered = [span for span in registry.latest_spans(ANSWERED_SCAN) if span.ended is not None][:RECENT_ANSWERED]
    totals = Totals(
        switches=len({c.switch for c in open_now if c.switch is not None}),
        open_connections=len(open_now),
        streams_in_flight=sum(c.in_flight for c in open_now),
        connections_opened=registry.opened_total,
        streams=registry.streams_total,
    )
    return LiveView(
        totals=totals,
        open=tuple(_open(c) for c in open_now[:SHOWN_OPEN]),
        open_not_shown=max(0, len(open_now) - SHOWN_OPEN),
        answered=tuple(_answered(span) for span in answered),
        closed=tuple(_closed(c) for c in reversed(closed)),
    )


def message(view: LiveView, now: float) -> dict[str, Any]:
    """The JSON of one snapshot, taken at ``now``."""
    return {"now": now, **asdict(view)}


async def events(registry: ConnectionRegistry, closing: asyncio.Event) -> AsyncIterator[bytes]:
    """Server-sent events: a snapshot at once, then each changed one, until ``closing`` is set (the controller
    stops: an open stream would otherwise hold its graceful shutdown for the whole timeout)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    last: LiveView | None = None
    quiet_since = monotonic()
    while not closing.is_set():
        view = snapshot(registry)
        now = monotonic()
        if view != last:
            last, quiet_since = view, now
            yield f"data: {json.dumps(message(view, now), separators=(',', ':'))}\n\n".encode()
        elif now - quiet_since >= KEEPALIVE_S:
            quiet_since = now
            yield b": still here\n\n"
        with contextlib.suppress(TimeoutError):  # the tick: look again
            await asyncio.wait_for(closing.wait(), TICK_S)


def _open(connection: ControllerConnection) -> OpenConnection:
    return OpenConnection(
        id=connection.id,
        switch=connection.switch,
        peer=str(connection.peer),
        via=connection.via,
        alpn=connection.alpn,
        tls_version=connection.tls_version,
        streams=connection.streams,
        opened_s=connection.opened,
        in_flight=tuple(
            InFlight(span.number, span.stream_id, span.path, _interval(span), span.started)
            for span in connection.spans_in_flight()
        ),
    )


def _answered(span: StreamSpan) -> Answered:
    assert span.ended is not None  # only answered spans come here
    return Answered(
        connection=span.connection.id,
        switch=span.connection.switch,
        stream=span.number,
        stream_id=span.stream_id,
        path=span.path,
        interval_s=_interval(span),
        took_s=span.ended - span.started,
        ended_s=span.ended,
    )


def _closed(connection: ControllerConnection) -> Closed:
    assert connection.closed is not None  # only closed connections come here
    return Closed(
        id=connection.id,
        switch=connection.switch,
        peer=str(connection.peer),
        alpn=connection.alpn,
        streams=connection.streams,
        peak_in_flight=connection.peak_in_flight,
        open_s=connection.closed - connection.opened,
        closed_s=connection.closed,
    )


def _interval(span: StreamSpan) -> float | None:
    """The interval a ``/ping`` asked for, if it asked for a usable one (a refused ping is answered at once)."""
    if span.path != "/ping":
        return None
    try:
        values = parse_qs(span.query.decode("latin-1"), keep_blank_values=True).get("interval", [])
        return parse_interval(values, math.inf)
    except (IntervalError, UnicodeDecodeError):
        return None
