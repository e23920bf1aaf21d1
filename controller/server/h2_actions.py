"""What a test bench does to an HTTP/2 client, as methods on Hypercorn's protocol for one live connection: the
controller's side of ``python -m controller trials`` (``controller/trials``).

Each is what real controllers do on a bad day (RFC 9113 section 6.8, GOAWAY; 8.7, REFUSED_STREAM; 6.5.2, a lowered
SETTINGS_MAX_CONCURRENT_STREAMS; 6.7, PING; a first flight that is slow to come), done to the connection of the
switch under trial and to no other.
Hypercorn does none of them on demand, so this subclass of its protocol does (``h2_limits`` builds on it; the one
class is installed in Hypercorn's place).

h2 4.4 closes its connection state machine when it sends GOAWAY and then refuses to send anything, also the answers
to the streams the GOAWAY let finish; ``goaway`` reopens it, as the switch's own wire does for a GOAWAY it reads
(``sim_switch/wire/connection.py``), and refuses every stream above the last one it named.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import h2.events
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hypercorn.events import Closed, RawData
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import StreamClosed

from controller.server.hypercorn_seam import SeamH2Protocol, dialout_config
from dialout.h2_seam import reopen_after_sending_goaway

_opaque = itertools.count(1)
# How long a connection we sent GOAWAY on is still read before it is closed: closing a socket with unread bytes
# sends a TCP reset, and the peer's kernel throws away the GOAWAY with it (nginx's lingering close, for the same).
# A trial's GOAWAY naming no stream closed at once, and the switch read a broken pipe, not the GOAWAY.
LINGER_S = 1.0


@dataclass
class HeldSettings:
    """While set on the config (``DialoutConfig.held``): each new HTTP/2 connection from ``host`` has its first flight
    (the server's SETTINGS, and everything queued behind it) held ``hold_s`` before it is written. ``held`` says
    when each such connection began (monotonic)."""

    host: str
    hold_s: float
    held: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PingAck:
    """A PING of ours, ACKed: its round trip, when the ACK came (monotonic), and the highest stream the client had
    opened by then. The client read everything we sent before the PING when it ACKed it, and frames arrive in
    order: a stream above ``highest_stream_id`` was opened after the client had read what came before the PING."""

    rtt_s: float
    at: float
    highest_stream_id: int


@dataclass(frozen=True)
class Refused:
    """A request refused with RST_STREAM REFUSED_STREAM: its stream id, its target, when (monotonic), and the ACK
    of the PING sent right behind the refusal (which streams came after the client had read it)."""

    stream_id: int
    target: bytes
    at: float
    read: asyncio.Future[PingAck]


class ActionableH2Protocol(SeamH2Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - Hypercorn's own signature, passed on
        super().__init__(*args, **kwargs)
        self.refused: list[Refused] = []
        self.settings_acked: list[float] = []  # when the client acknowledged each SETTINGS of ours
        self.goaway_last_stream_id: int | None = None
        self.goaway_read: asyncio.Future[PingAck] | None = None  # the ACK of the PING sent right behind our GOAWAY
        self._closing = False
        self.silent = False
        self._refuse_next = 0
        self._refused_ids: set[int] = set()
        self._highest_seen = 0  # the highest stream id among the requests handled so far, in order
        self._pings: dict[bytes, tuple[float, asyncio.Future[PingAck]]] = {}
        self.held_until = 0.0  # monotonic: nothing is written before then (a held first flight)
        self.most_open_streams = 0  # the most streams the client had open at once, since count_open_streams()
        self._counting_open_streams = False  # h2 counts them by walking every stream: only when a trial asks
        self.broke_with: str | None = None  # the h2 error the client's frames raised, which ended the connection

    async def initiate(self, headers: Any = None, settings: bytes | None = None) -> None:  # noqa: ANN401 - Hypercorn's
        hold = dialout_config(self.config).held
        if hold is not None and self.client is not None and self.client[0] == hold.host:
            now = time.monotonic()
            hold.held.append(now)
            self.held_until = now + hold.hold_s
            self.task_group.spawn(self._release_first_flight)
        await super().initiate(headers, settings)

    async def _release_first_flight(self) -> None:
        await asyncio.sleep(max(0.0, self.held_until - time.monotonic()))
        self.held_until = 0.0  # (the loop may wake a clock tick early)
        await self._flush()

    async def ping(self) -> asyncio.Future[PingAck]:
        """Send a PING; the future is its ACK, once read."""
        done = self._queue_ping()
        await self._flush()
        return done

    def _queue_ping(self) -> asyncio.Future[PingAck]:
        opaque = next(_opaque).to_bytes(8, "big")
        done: asyncio.Future[PingAck] = asyncio.get_running_loop().create_future()
        self._pings[opaque] = (time.monotonic(), done)
        self.connection.ping(opaque)
        return done

    def refuse_next_requests(self, count: int) -> None:
        """Answer the next ``count`` requests with RST_STREAM REFUSED_STREAM (RFC 9113 section 8.7: not processed,
        safe to retry) instead of serving them."""
        self._refuse_next = count

    async def limit_streams(self, limit: int) -> None:
        """SETTINGS_MAX_CONCURRENT_STREAMS lowered (or raised) on this connection from now on."""
        self.connection.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})
        await self._flush()

    def count_open_streams(self) -> None:
        """From now on, keep in ``most_open_streams`` the most streams the client had open (by the frames, as h2
        counts them against our SETTINGS_MAX_CONCURRENT_STREAMS) each time it opened one: those open before a
        lowered limit may finish, it is a new one beside them that breaks it."""
        self.most_open_streams = 0
        self._counting_open_streams = True

    def silence(self) -> None:
        """Stop reading and writing this connection, and leave it open: what a controller that hangs (or a
        middlebox that drops the flow) looks like from the client."""
        self.silent = True

    async def handle(self, event: Any) -> None:  # noqa: ANN401 - Hypercorn's Event
        if self.silent and isinstance(event, RawData):
            return  # read, and ignored
        await super().handle(event)

    async def _flush(self) -> None:
        if not self.silent and time.monotonic() >= self.held_until:
            await super()._flush()

    async def goaway(self, last_stream_id: int | None = None, code: ErrorCodes = ErrorCodes.NO_ERROR) -> int:
        """GOAWAY naming ``last_stream_id`` (None: the highest the client has opened) as the last it will process.
        The streams at or below it are answered as usual; those above it are dropped unanswered (the client may
        retry them: they were never processed) and any new one is refused. The connection closes once the last
        answered stream is done. Returns the last stream id named."""
        last = self.connection.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        self.connection.close_connection(error_code=code, last_stream_id=last)
        await self._flush()
        reopen_after_sending_goaway(self.connection)  # the streams up to `last` still get answers (dialout/h2_seam)
        self.goaway_last_stream_id = last
        self.goaway_read = self._queue_ping()  # right behind it: which streams the client opened after reading it
        await self._flush()
        for stream_id in [stream_id for stream_id in self.streams if stream_id > last]:
            await self._close_stream(stream_id)  # not processed: its handler is cancelled, nothing is sent
        await self._close_if_done()
        return last

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        kept: list[h2.events.Event] = []
        for event in events:
            stream_id = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.RequestReceived):
                if not self._request_kept(event):
                    continue
            elif stream_id in self._refused_ids and not isinstance(event, h2.events.StreamReset):
                if isinstance(event, h2.events.DataReceived):  # the window it took is given back all the same
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                continue  # a refused stream's body: no stream of Hypercorn's to give it to
            if isinstance(event, h2.events.PingAckReceived):
                sent = self._pings.pop(event.ping_data or b"", None)
                if sent is not None and not sent[1].done():
                    now = time.monotonic()
                    sent[1].set_result(PingAck(now - sent[0], now, self._highest_seen))
            if isinstance(event, h2.events.SettingsAcknowledged):
                self.settings_acked.append(time.monotonic())
            kept.append(event)
        await super()._handle_events(kept)
        if self.goaway_last_stream_id is not None:
            await self._close_if_done()

    async def stream_send(self, event: StreamEvent) -> None:
        await super().stream_send(event)
        if isinstance(event, StreamClosed) and self.goaway_last_stream_id is not None:
            await self._close_if_done()

    def _request_kept(self, request: h2.events.RequestReceived) -> bool:
        """Note ``request`` (in the order the frames came: h2's own highest id already counts the whole read);
        False if it is refused."""
        self._highest_seen = max(self._highest_seen, request.stream_id)
        if self._counting_open_streams:
            self.most_open_streams = max(self.most_open_streams, self.connection.exact_open_inbound_streams())
        if self._refused_now(request):
            self._refused_ids.add(request.stream_id)
            return False
        return True

    def _refused_now(self, request: h2.events.RequestReceived) -> bool:
        """Refuse ``request`` if this connection is to: after our GOAWAY, or when told to refuse the next ones."""
        after_goaway = self.goaway_last_stream_id is not None and request.stream_id > self.goaway_last_stream_id
        if not after_goaway and not self._refuse_next:
            return False
        if not after_goaway:
            self._refuse_next -= 1
        target = next((value for name, value in request.headers if name == b":path"), b"")
        self.connection.reset_stream(request.stream_id, ErrorCodes.REFUSED_STREAM)
        read = self._queue_ping()  # right behind the refusal, in the same write
        self.refused.append(Refused(request.stream_id, bytes(target), time.monotonic(), read))
        return True

    async def _close_if_done(self) -> None:
        """After our GOAWAY: close once no stream it let finish is still open."""
        last = self.goaway_last_stream_id
        if last is not None and not any(stream_id <= last for stream_id in self.streams) and not self._closing:
            self._closing = True
            await self._flush()
            # in the connection's own tasks, where Hypercorn's close (and its TLS errors) belong, not the caller's
            self.task_group.spawn(self._close_after_linger)

    async def _close_after_linger(self) -> None:
        await asyncio.sleep(LINGER_S)
        if not self.closed:  # (the client may have closed it meanwhile)
            await self.send(Closed())
