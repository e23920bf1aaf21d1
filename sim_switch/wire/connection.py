"""One HTTP/2 connection of the switch, on h2: one reader task, and every event handed to its stream as it is
decoded.

This replaces httpcore's ``AsyncHTTP2Connection`` (1.0.9), whose read lock made a stream whose answer had already
arrived wait behind others blocked on the socket (a 0.2 s ping reported at 2.03 s when 2 s pings shared its
connection). As Go's ``clientConnReadLoop`` and nghttp2 do, one task reads the socket and nothing else waits on it;
a request's task queues its own frames and waits on its stream. What h2 has for the wire goes out in one write a loop
turn, for every stream and the reader's acknowledgements alike (``_flush_soon``), not one write a frame; a turn that
starts many streams writes them ``HEADERS_A_WRITE`` at a time.

What it keeps to, from the controller (RFC 9113):
- SETTINGS_MAX_CONCURRENT_STREAMS as sent, and as changed mid-connection; before the controller's first SETTINGS
  one stream may go (the pool holds the rest: ``room``). A stream both ends have ended is closed and counts no
  more: its room is given back once the read that closed it is handled (``_release_closed``), not when its
  request's task gets round to the answer.
- flow control both ways: a request body waits for window; received DATA is acknowledged as it is read.
- GOAWAY: streams above its last-stream-id fail as never processed (safe to retry); those at or below it finish,
  and no new stream starts. h2 closes its state machine on GOAWAY and would refuse their DATA, so the reader puts
  it back to open (``_reopen_after_goaway``), which is why it feeds h2 one frame at a time.
- RST_STREAM fails its stream with the code (REFUSED_STREAM: never processed).
- PING from the controller is answered (h2 queues the ACK); ``ping()`` sends ours and times its ACK, and one goes
  out with the preface so that every connection has a round-trip time from the start.

Times are ``time.perf_counter()`` seconds, taken when the bytes were written or read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import h2.config
import h2.events
import h2.exceptions
import h2.settings
import httpcore
import httpx
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from dialout.h2_seam import PromptH2Connection, reopen_after_reading_goaway
from sim_switch.model.frames import Direction
from sim_switch.wire.errors import ConnectionLost, GoneAway, NotSent, StreamReset
from sim_switch.wire.frames import CLIENT_PREFACE, HEADER_SIZE, FrameSplitter, runs
from sim_switch.wire.network import AsyncioStream

READ_SIZE = 65_536
# A turn that starts many streams (a read's worth of answers frees as many streams for the pings waiting) writes
# their HEADERS this many at a time, not all at the turn's end: the controller starts on the first while the switch
# makes the rest. At 100 in flight, 20-35% more pings a second than one write a turn, for the same CPU a ping.
HEADERS_A_WRITE = 32
PING_TYPE, ACK_FLAG = 0x6, 0x1
# Ours to the controller: no server push; a stream window of 1 MiB and a connection window of 16 MiB, so that the
# window never paces a ping's answer (Go's transport opens 4 MiB and 1 GiB).
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
LOCAL_SETTINGS: dict[SettingCodes, int] = {
    SettingCodes.ENABLE_PUSH: 0,
    SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    SettingCodes.MAX_HEADER_LIST_SIZE: 65_536,
}
# Our requests' headers are made from config.yaml's, checked as it loads (dialout/config_fields.py headers), and
# httpx's: h2 need not check and normalise them again on the way out (a third of send_headers' time). What the
# controller sends is checked as h2 reads it.
H2_CONFIG = h2.config.H2Configuration(
    client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
)
# Headers that are HTTP/1.1's connection plumbing: RFC 9113 section 8.2.2 forbids them in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class WireObserver(Protocol):
    """Who hears of a connection's life beyond its requests (``sim_switch.dial.tracing.Tracer``)."""

    @property
    def frames_wanted(self) -> bool: ...

    def frame(self, network: object, raw: bytes, direction: Direction, at: float, rtt_s: float | None) -> None: ...

    def settings(self, network: object, settings: dict[int, int], at: float) -> None: ...

    def round_trip(self, network: object, rtt_s: float) -> None: ...

    def goaway(self, network: object, code: int, last_stream_id: int, debug: bytes, at: float) -> None: ...

    def spilled(self, waiting: int, limit: int, dials: int) -> None: ...


@dataclass
class _Goaway:
    code: int
    last_stream_id: int
    debug: bytes


@dataclass(eq=False)
class H2Stream:
    """One request's stream: what the reader has handed it, and when each part crossed the wire."""

    stream_id: int
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: deque[tuple[bytes, int]] = field(default_factory=deque)  # (data, flow-controlled length)
    ended: bool = False
    error: Exception | None = None
    headers_sent_at: float | None = None
    first_byte_at: float | None = None  # its response HEADERS were read
    ended_at: float | None = None  # END_STREAM was read
    written: Callable[[H2Stream], None] | None = None  # told once its HEADERS are written
    sent_all: bool = False  # its request's END_STREAM is sent: with the answer's, the stream is closed
    released: bool = False  # its room on the connection given back, as it closed (``release`` then skips it)
    # Its request's task, waiting for what the reader hands it next.
    _waiting: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    def wake(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def wait_on(self, waiting: asyncio.Future[None] | None) -> None:
        """``waiting`` is done by the next thing the reader hands it (its request's task waits on it)."""
        self._waiting = waiting

    async def changed(self, timeout_s: float | None) -> None:
        """Until the reader hands it something (or fails it); ``httpx.ReadTimeout`` when nothing came for
        ``timeout_s``. A future a wait, not an ``asyncio.Event``: one waiter, and a stream a ping."""
        self._waiting = asyncio.get_running_loop().create_future()
        if timeout_s is None:  # a ping's own timeout bounds its whole try: no timer a wait
            await self._waiting
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._waiting
        except TimeoutError:
            raise httpx.ReadTimeout(f"nothing on stream {self.stream_id} for {timeout_s:g} s") from None


class H2Connection:
    """An HTTP/2 connection over ``network`` (a TLS stream whose ALPN said h2, or TCP for h2c). ``on_change`` is
    called whenever room for a stream may have appeared or gone: the pool's cue to look again."""

    def __init__(self, network: AsyncioStream, on_change: Callable[[], None], observer: WireObserver | None) -> None:
        self.network = network
        self._on_change = on_change
        self._observer = observer
        self._frames_wanted = observer is not None and observer.frames_wanted
        self._h2 = PromptH2Connection(H2_CONFIG)
        self._streams: dict[int, H2Stream] = {}
        self._headers = _RequestHeaders()
        self._reserved = 0  # streams promised to requests, sent or about to be
        self._unsent_headers: list[H2Stream] = []
        self._closed: list[H2Stream] = []  # streams the read being handled closed, their rooms still reserved
        self._batch: asyncio.Future[None] | None = None  # the write this loop turn will make, once scheduled
        self._window_opened = asyncio.Event()
        self._pings: dict[bytes, tuple[float, asyncio.Future[float]]] = {}
        self._ping_ids = itertools.count(1)
        self._splitter_out = FrameSplitter(CLIENT_PREFACE)
        self.settings_received = False
        self.goaway: _Goaway | None = None
        self.closed_by: Exception | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    # --- life -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Send the preface, our SETTINGS, a connection window and a PING; then start reading."""
        # Settings in place before the preface (as httpcore does), not as an update h2 would send after it; and
        # without ENABLE_CONNECT_PROTOCOL, which some servers balk at in a client's first SETTINGS.
        self._h2.local_settings = h2.settings.Settings(client=True, initial_values=LOCAL_SETTINGS)
        del self._h2.local_settings[SettingCodes.ENABLE_CONNECT_PROTOCOL]
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        first_ping = self._start_ping()
        self._reader = asyncio.create_task(self._read_loop(), name="h2-reader")
        # Written with the dialling request's HEADERS, in one write: that request takes stream 1, before those
        # that the controller's SETTINGS let in.
        self._flush_soon()
        first_ping.add_done_callback(self._note_rtt)

    def _note_rtt(self, done: asyncio.Future[float]) -> None:
        if not done.cancelled() and done.exception() is None and self._observer is not None:
            self._observer.round_trip(self.network, done.result())

    @property
    def usable(self) -> bool:
        return self.closed_by is None and self.goaway is None

    @property
    def limit(self) -> int:
        """How many streams it takes at once: one until the controller's SETTINGS say."""
        return self._h2.remote_settings.max_concurrent_streams if self.settings_received else 1

    def room(self) -> bool:
        return self.usable and self._reserved < self.limit

    def reserve(self) -> None:
        self._reserved += 1

    def release(self, stream: H2Stream | None = None) -> None:
        """A reserved stream's room given back: ``stream``'s, unless it was as it closed (``_closed``)."""
        if stream is not None and stream.released:
            return
        self._reserved -= 1
        self._on_change()
        if self.goaway is not None and not self._reserved:
            self._close_soon()

    async def aclose(self) -> None:
        """Say goodbye (GOAWAY NO_ERROR), as httpcore did, and close."""
        if self.closed_by is None:
            with contextlib.suppress(Exception):
                self._h2.close_connection()
                await self._flush()
        self._lost(ConnectionLost("the switch closed the connection"))
        if self._reader is not None:
            self._reader.cancel()
        with contextlib.suppress(Exception):
            await self.network.aclose()

    def _close_soon(self) -> None:
        """Close once the last stream a GOAWAY let finish is done (a task: we are in a callback)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.aclose(), name="h2-close")

    # --- requests ---------------------------------------------------------------------------------------------

    def open_stream(
        self,
        request: httpx.Request,
        written: Callable[[H2Stream], None] | None = None,
        waiting: asyncio.Future[None] | None = None,
    ) -> H2Stream:
        """HEADERS for ``request`` on a new stream, reserved for it beforehand, in this loop turn's write (or the
        one under way): ``written`` is told once they are in the kernel's hands, ``headers_sent_at`` set. Nothing
        waits for the write, so a ping's task wakes once, for its answer (``waiting``, if given, is done then): a
        write that fails fails the stream. The body, if any, is ``send_body``'s."""
        if not self.usable:
            raise NotSent
        stream_id = self._h2.get_next_available_stream_id()
        stream = H2Stream(stream_id, written=written, sent_all=not request.content)
        stream.wait_on(waiting)
        self._streams[stream_id] = stream
        self._h2.send_headers(stream_id, self._headers.of(request), end_stream=stream.sent_all)
        self._unsent_headers.append(stream)
        self._flush_soon()
        return stream

    async def send_body(self, stream: H2Stream, body: bytes) -> None:
        """``body`` as DATA on ``stream`` (opened with ``open_stream``), as flow control lets it go."""
        try:
            await self._flushed()
            await self._send_body(stream, body)
        except BaseException:  # cancelled or failed half-way: the stream is no one's any more
            await self.close_stream(stream)
            raise

    async def _send_body(self, stream: H2Stream, body: bytes) -> None:
        view = memoryview(body)
        while view:
            if stream.error is not None:
                raise stream.error
            window = self._h2.local_flow_control_window(stream.stream_id)
            if window <= 0:
                self._window_opened.clear()
                await self._window_opened.wait()
                continue
            size = min(window, self._h2.max_outbound_frame_size, len(view))
            stream.sent_all = size == len(view)
            self._h2.send_data(stream.stream_id, bytes(view[:size]), end_stream=stream.sent_all)
            view = view[size:]
            await self._flush()

    async def response_headers(self, stream: H2Stream, timeout_s: float | None) -> None:
        """Until its response's HEADERS are read; ``httpx.ReadTimeout`` when nothing came for ``timeout_s``."""
        while stream.status is None:
            if stream.error is not None:
                raise stream.error
            await stream.changed(timeout_s)

    def take_body(self, stream: H2Stream) -> bytes:
        """The response's DATA the reader has handed over since last asked, acknowledged as it is taken (b"": none
        yet). The caller waits for more with ``stream.changed`` until ``stream.ended``, or ``stream.error``."""
        taken = []
        while stream.chunks:
            data, flow_controlled = stream.chunks.popleft()
            if flow_controlled:
                self._h2.acknowledge_received_data(flow_controlled, stream.stream_id)
                self._flush_soon()
            taken.append(data)
        return b"".join(taken)

    async def close_stream(self, stream: H2Stream) -> None:
        """The response is done with: reset the stream if its answer is still coming (we no longer want it)."""
        self._streams.pop(stream.stream_id, None)
        if self.closed_by is not None:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            if not stream.ended and stream.error is None:
                self._h2.reset_stream(stream.stream_id, ErrorCodes.CANCEL)
                self._flush_soon()
            unread = sum(flow_controlled for _, flow_controlled in stream.chunks)
            if unread:  # what it was sent and never read still counts against the connection's window
                self._h2.acknowledge_received_data(unread, stream.stream_id)
                self._flush_soon()
            self._h2.forget(stream.stream_id)

    # --- PING -------------------------------------------------------------------------------------------------

    def _start_ping(self) -> asyncio.Future[float]:
        opaque = next(self._ping_ids).to_bytes(8, "big")
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[opaque] = (time.perf_counter(), done)
        self._h2.ping(opaque)
        return done

    async def ping(self, timeout_s: float) -> float | None:
        """Our PING, and its round-trip time in seconds; None when no ACK came within ``timeout_s``."""
        if self.closed_by is not None:
            return None
        done = self._start_ping()
        try:
            async with asyncio.timeout(timeout_s):  # the write too: a peer that reads nothing fills our buffer
                await self._flush()
                return await done
        except (TimeoutError, httpx.TransportError, httpcore.NetworkError):
            return None

    # --- the wire ---------------------------------------------------------------------------------------------

    def _flush_soon(self) -> asyncio.Future[None]:
        """What h2 has for the wire goes out at the end of this loop turn, in one write with everything else queued
        in it (or at once, when it holds ``HEADERS_A_WRITE`` requests); the future is done once it has (or the
        connection is lost)."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            loop.call_soon(self._write_batch)
        batch = self._batch
        if len(self._unsent_headers) >= HEADERS_A_WRITE:
            self._write_batch()  # this batch now; what the turn queues next goes in the turn's own write
        return batch

    async def _flushed(self) -> None:
        """Until what is queued has been handed to the kernel; ``closed_by`` if the connection is lost."""
        await self._flush_soon()
        if self.closed_by is not None:
            raise self.closed_by

    async def _flush(self) -> None:
        """``_flushed``, and until the peer has taken enough for the buffer to be below its high-water mark: for
        what must not outrun a peer that reads nothing (a body, our PING)."""
        await self._flushed()
        try:
            await self.network.drain()
        except Exception as exc:
            self._lost(ConnectionLost(f"writing to the controller failed: {exc}"))
            raise ConnectionLost(str(exc)) from exc

    def _write_batch(self) -> None:
        batch, self._batch = self._batch, None
        streams, self._unsent_headers = self._unsent_headers, []
        data = self._h2.data_to_send()
        try:
            if data and self.closed_by is None:
                self._write(data, streams)
        finally:  # (whatever those told of it do, what waits on the write goes on)
            if batch is not None and not batch.done():
                batch.set_result(None)

    def _write(self, data: bytes, streams: list[H2Stream]) -> None:
        # Stamped as the write starts: the bytes reach the kernel in this very call.
        at = time.perf_counter()
        try:
            self.network.write_now(data)
        except Exception as exc:
            self._lost(ConnectionLost(f"writing to the controller failed: {exc}"))
            return
        for stream in streams:
            stream.headers_sent_at = at
            if stream.written is not None:
                stream.written(stream)
        if self._frames_wanted and self._observer is not None:
            for raw in self._splitter_out.feed(data):
                self._observer.frame(self.network, raw, Direction.SENT, at, None)

    async def _read_loop(self) -> None:
        """Read until the connection ends, then fail what is left on it and close the socket."""
        try:
            await self._read_frames()
        except asyncio.CancelledError:
            raise
        except h2.exceptions.ProtocolError as exc:
            with contextlib.suppress(Exception):
                await self._flush()  # h2's GOAWAY PROTOCOL_ERROR, before the streams learn why
            self._lost(httpx.RemoteProtocolError(f"the controller broke HTTP/2: {exc}"))
        except Exception as exc:  # the socket failed: every stream on it has lost its answer
            self._lost(ConnectionLost(f"reading from the controller failed: {exc}"))
        with contextlib.suppress(Exception):
            await self.network.aclose()

    async def _read_frames(self) -> None:
        splitter = FrameSplitter()
        while True:
            data = await self.network.read(READ_SIZE)
            at = time.perf_counter()
            if not data:
                self._lost(ConnectionLost("the controller closed the connection"))
                return
            frames = splitter.feed(data)
            if self._frames_wanted:  # each frame to the trace, then what it set off
                for raw in frames:
                    self._receive_frame(raw, at)
            else:  # h2 reads the frames a read brought in one call (a GOAWAY ends one: ``runs``)
                for run in runs(frames):
                    for event in self._h2.receive_data(run):
                        self._handle(event, at)
            self._release_closed()
            self._flush_soon()  # the ACKs and window updates h2 queued, if any: with this turn's requests

    def _receive_frame(self, raw: bytes, at: float) -> None:
        if self._frames_wanted and self._observer is not None:  # the frame first, then what it set off
            self._observer.frame(self.network, raw, Direction.RECEIVED, at, self._ping_rtt(raw, at))
        for event in self._h2.receive_data(raw):
            self._handle(event, at)

    def _ping_rtt(self, raw: bytes, at: float) -> float | None:
        """For the ACK of one of our PINGs: its round trip."""
        is_ping_ack = raw[3] == PING_TYPE and raw[4] & ACK_FLAG and len(raw) == HEADER_SIZE + 8
        sent = self._pings.get(raw[HEADER_SIZE:]) if is_ping_ack else None
        return at - sent[0] if sent is not None else None

    def _handle(self, event: h2.events.Event, at: float) -> None:  # noqa: C901 - one case per h2 event
        """Hand ``event`` to whom it concerns."""
        match event:
            case (
                h2.events.ResponseReceived(stream_id=stream_id, headers=headers)
                | h2.events.InformationalResponseReceived(stream_id=stream_id, headers=headers)
            ):
                stream = self._streams.get(stream_id)
                if stream is not None and isinstance(event, h2.events.ResponseReceived):
                    stream.first_byte_at = at
                    stream.status, stream.headers = _status_and_headers(headers or [])
                    stream.wake()
            case h2.events.DataReceived(stream_id=stream_id):
                stream = self._streams.get(stream_id)
                if stream is None:  # a stream we reset or gave up: its bytes still count against the window
                    self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
                else:
                    stream.chunks.append((event.data or b"", event.flow_controlled_length))
                    stream.wake()
            case h2.events.StreamEnded(stream_id=stream_id):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream.ended, stream.ended_at = True, at
                    stream.wake()
                    if stream.sent_all:
                        self._closed.append(stream)
            case h2.events.StreamReset(stream_id=stream_id, error_code=code):
                self._fail(stream_id, StreamReset(stream_id, code))
            case h2.events.WindowUpdated():
                self._window_opened.set()
            case h2.events.RemoteSettingsChanged():
                self.settings_received = True
                self._window_opened.set()
                if self._observer is not None:
                    settings = {int(code): change.new_value for code, change in event.changed_settings.items()}
                    self._observer.settings(self.network, settings, at)
                self._on_change()
            case h2.events.PingAckReceived(ping_data=opaque):
                sent = self._pings.pop(opaque or b"", None)
                if sent is not None and not sent[1].done():
                    sent[1].set_result(at - sent[0])
            case h2.events.ConnectionTerminated():
                goaway = _Goaway(event.error_code or 0, event.last_stream_id or 0, event.additional_data or b"")
                if self._observer is not None:
                    self._observer.goaway(self.network, goaway.code, goaway.last_stream_id, goaway.debug, at)
                self._gone_away(goaway)

    def _gone_away(self, goaway: _Goaway) -> None:
        self.goaway = goaway
        self._reopen_after_goaway()
        for stream_id in [s for s in self._streams if s > goaway.last_stream_id]:
            self._fail(stream_id, GoneAway(stream_id, goaway.code, goaway.last_stream_id, goaway.debug))
        self._on_change()
        if not self._reserved:
            self._close_soon()

    def _reopen_after_goaway(self) -> None:
        """RFC 9113 section 6.8: the streams up to last-stream-id may still be answered. h2 (4.x) moves to CLOSED on
        GOAWAY and would refuse their frames; open again, and keep ``usable`` false so no new stream starts."""
        if self.closed_by is None:
            reopen_after_reading_goaway(self._h2)

    def _release_closed(self) -> None:
        """The rooms of the streams a read closed (both ends have ended them), given back once the read is handled,
        a GOAWAY in it too: a request waiting for one goes out in this turn's write, rather than once its ping's
        task has read the answer (at 100 in flight, the controller waited those turns for its next requests)."""
        if not self._closed:
            return
        for stream in self._closed:
            stream.released = True
        self._reserved -= len(self._closed)
        self._closed.clear()
        self._on_change()
        if self.goaway is not None and not self._reserved:
            self._close_soon()

    def _fail(self, stream_id: int, error: Exception) -> None:
        """The stream's first error stands: a GOAWAY that left the stream out said it was never processed, and a
        reset that follows (a controller shutting down may send NO_ERROR) does not make it so."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.ended and stream.error is None:
            stream.error = error
            stream.wake()

    def _lost(self, error: Exception) -> None:
        """The connection is over: every stream still waiting fails with ``error`` (or, above a GOAWAY's
        last-stream-id, as never processed)."""
        if self.closed_by is not None:
            return
        self.closed_by = error
        for stream_id, stream in self._streams.items():
            if not stream.ended and stream.error is None:
                if self.goaway is not None:
                    g = self.goaway
                    stream.error = GoneAway(stream_id, g.code, g.last_stream_id, g.debug)
                    if stream_id <= g.last_stream_id:
                        stream.error.__cause__ = error
                else:
                    stream.error = error
                stream.wake()
        self._window_opened.set()
        for _, done in self._pings.values():
            if not done.done():
                done.cancel()
        self._on_change()


class _RequestHeaders:
    """Requests' HTTP/2 header lists, each made once for the requests that share its URL and headers objects: the
    switch's pings are copies of one request a target (``sim_switch/dial/ping_requests.py``), which nothing
    changes once made. Found by those objects' identities; each entry holds them, so no other object takes an id."""

    LIMIT = 64  # a scenario with a target a ping ({n} in its path) makes a request each: kept few, not all

    def __init__(self) -> None:
        self._made: dict[tuple[int, int], tuple[httpx.Headers, httpx.URL, str, list[tuple[bytes, bytes]]]] = {}

    def of(self, request: httpx.Request) -> list[tuple[bytes, bytes]]:
        key = (id(request.headers), id(request.url))
        made = self._made.get(key)
        if made is not None and made[0] is request.headers and made[1] is request.url and made[2] == request.method:
            return made[3]
        headers = _request_headers(request)
        if len(self._made) >= self.LIMIT:
            self._made.clear()
        self._made[key] = (request.headers, request.url, request.method, headers)
        return headers


def _request_headers(request: httpx.Request) -> list[tuple[bytes, bytes]]:
    url = request.url
    authority = request.headers.get("host", url.netloc.decode("ascii")).encode()
    headers = [
        (b":method", request.method.encode()),
        (b":authority", authority),
        (b":scheme", url.raw_scheme),
        (b":path", url.raw_path),
    ]
    headers += [
        (name.lower(), value) for name, value in request.headers.raw if name.lower() not in _CONNECTION_SPECIFIC
    ]
    return headers


def _status_and_headers(headers: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]]]:
    if headers and headers[0][0] == b":status":  # what h2 lets through (H2_CONFIG validates what it reads): :status
        return int(headers[0][1]), headers[1:]  # first, and the only pseudo-header of an answer
    status = 0
    rest = []
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            rest.append((name, value))
    return status, rest
