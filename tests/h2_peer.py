"""Scripted HTTP/2 controllers: the h2 library on a loopback TLS socket. ``scripted_peer`` answers each request
with the next move of its script (as httpcore's own tests script frames): the cheap, deterministic way to make a
controller send GOAWAY with a stream in flight, reset a stream, or never answer. ``driven_peer`` hands each
connection to the test, which sends what frames it likes when it likes (answers out of order, SETTINGS
mid-connection, its own PING, silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from dialout.h2_seam import gone_away, reopen_after_sending_goaway


@dataclass(frozen=True)
class Answer:
    status: int = 200


@dataclass(frozen=True)
class Reset:
    """RST_STREAM on the request's stream."""

    code: ErrorCodes


@dataclass(frozen=True)
class GoAway:
    """GOAWAY naming ``last_stream_id`` as the last stream processed (0: none was), then silence, or (``close``)
    the connection closed with the streams up to it unanswered."""

    code: ErrorCodes
    last_stream_id: int
    close: bool = False


@dataclass(frozen=True)
class Silence:
    """Take the request and never answer it."""


Move = Answer | Reset | GoAway | Silence


@dataclass
class ScriptedPeer:
    port: int
    requests: list[str]  # each request's :path, in arrival order
    connections: int = 0


@contextlib.asynccontextmanager
async def scripted_peer(
    context: ssl.SSLContext, script: Sequence[Move], then: Move = Answer()
) -> AsyncIterator[ScriptedPeer]:
    """Serve on an ephemeral loopback port: request n gets ``script[n]``, every later one ``then``."""
    peer = ScriptedPeer(port=0, requests=[])
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.connections += 1
        writers.add(writer)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                move: Move | None = None
                if gone_away(conn):  # after our GOAWAY: read until the client goes
                    continue
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = next((value.decode() for name, value in event.headers or () if name == b":path"), "")
                        move = script[len(peer.requests)] if len(peer.requests) < len(script) else then
                        peer.requests.append(path)
                        _play(conn, event.stream_id, move)
                writer.write(conn.data_to_send())
                await writer.drain()
                if isinstance(move, GoAway) and move.close:
                    break
        writers.discard(writer)
        writer.close()

    async with _serving(serve, context, writers, set()) as server:
        peer.port = server.sockets[0].getsockname()[1]
        yield peer


@contextlib.asynccontextmanager
async def _serving(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
    context: ssl.SSLContext,
    writers: set[asyncio.StreamWriter],
    tasks: set[asyncio.Task[None]],
) -> AsyncIterator[asyncio.Server]:
    """``serve`` each connection on an ephemeral loopback port (the server, yielded); at the end, cancel ``tasks``
    and close ``writers``, the connections still open."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
        await server.wait_closed()


def _play(conn: h2.connection.H2Connection, stream_id: int, move: Move) -> None:
    match move:
        case Answer(status):
            body = b'{"ok": true}'
            headers = [
                (":status", str(status)),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ]
            conn.send_headers(stream_id, headers)
            conn.send_data(stream_id, body, end_stream=True)
        case Reset(code):
            conn.reset_stream(stream_id, code)
        case GoAway(code, last_stream_id):
            conn.close_connection(code, last_stream_id=last_stream_id)
        case Silence():
            pass


# --- a peer the test drives frame by frame ---------------------------------------------------------------------


@dataclass
class PeerRequest:
    stream_id: int
    path: str
    body: bytearray
    complete: asyncio.Event  # its END_STREAM arrived


@dataclass
class DrivenConnection:
    """One connection of ``driven_peer``, for the test to drive: it reads on its own (acknowledging DATA, keeping
    what arrived), and writes only what the test asks for."""

    number: int  # 1, 2, ... in the order they came
    conn: h2.connection.H2Connection
    writer: asyncio.StreamWriter
    arrived: asyncio.Queue[PeerRequest] = dataclasses.field(default_factory=asyncio.Queue)
    open_streams: set[int] = dataclasses.field(default_factory=set)
    requests: int = 0
    peak_open: int = 0  # the most streams open at once since ``count_from_now``
    settings_acks: int = 0
    pings_acked: int = 0
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # set at each ACK that arrives
    silent: bool = False  # write nothing at all (PING ACKs included): a controller that hangs

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if not self.silent and not self.writer.is_closing():
            self.writer.write(data)

    async def request(self) -> PeerRequest:
        """The next request, once its body is in."""
        request = await self.arrived.get()
        await request.complete.wait()
        return request

    def answer(self, stream_id: int, status: int = 200, body: bytes = b'{"ok": true}') -> None:
        headers = [(":status", str(status)), ("content-length", str(len(body)))]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body, end_stream=True)
        self.open_streams.discard(stream_id)
        self.flush()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        self.conn.reset_stream(stream_id, code)
        self.open_streams.discard(stream_id)
        self.flush()

    def goaway(self, code: ErrorCodes, last_stream_id: int) -> None:
        self.conn.close_connection(code, last_stream_id=last_stream_id)
        reopen_after_sending_goaway(self.conn)  # and go on answering up to last_stream_id
        self.flush()

    def goaway_and_close(self, last_stream_id: int) -> None:
        """GOAWAY NO_ERROR, then the connection closed: a controller going away gracefully."""
        self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=last_stream_id)
        self.flush()
        self.writer.close()

    def max_streams(self, value: int) -> None:
        self.conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: value})
        self.flush()

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` holds, looking again at each ACK that arrives."""
        while not done():
            self.changed.clear()
            await self.changed.wait()

    def ping(self) -> None:
        self.conn.ping(b"12345678")
        self.flush()

    def count_from_now(self) -> None:
        self.peak_open = len(self.open_streams)


@dataclass
class DrivenPeer:
    port: int
    connections: list[DrivenConnection] = dataclasses.field(default_factory=list)
    server: asyncio.Server | None = None

    def stop_listening(self) -> None:
        """A new connection is refused from now on; the open ones go on (a controller going away)."""
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def driven_peer(
    context: ssl.SSLContext,
    drive: Callable[[DrivenConnection], Coroutine[Any, Any, None]],
    settings: Mapping[SettingCodes, int] | None = None,
) -> AsyncIterator[DrivenPeer]:
    """Serve on an ephemeral loopback port; each connection is handed to ``drive`` (its first SETTINGS are
    ``settings``)."""
    peer = DrivenPeer(port=0)
    connections = peer.connections
    writers: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        if settings:  # in a SETTINGS of their own: in force once the client ACKs them, as a real server counts
            conn.update_settings({int(code): value for code, value in settings.items()})
        driven = DrivenConnection(len(peer.connections) + 1, conn, writer)
        connections.append(driven)
        writers.add(writer)
        driven.flush()
        driving = asyncio.create_task(drive(driven))
        tasks.add(driving)
        by_stream: dict[int, PeerRequest] = {}
        with contextlib.suppress(ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    _note(driven, by_stream, event)
                driven.flush()
        writer.close()

    async with _serving(serve, context, writers, tasks) as server:
        peer.port, peer.server = server.sockets[0].getsockname()[1], server
        yield peer


def _note(driven: DrivenConnection, by_stream: dict[int, PeerRequest], event: h2.events.Event) -> None:
    match event:
        case h2.events.RequestReceived(stream_id=stream_id, headers=headers):
            path = next((value.decode() for name, value in headers or () if name == b":path"), "")
            request = by_stream[stream_id] = PeerRequest(stream_id, path, bytearray(), asyncio.Event())
            driven.open_streams.add(stream_id)
            driven.requests += 1
            driven.peak_open = max(driven.peak_open, len(driven.open_streams))
            driven.arrived.put_nowait(request)
        case h2.events.DataReceived(stream_id=stream_id, data=data, flow_controlled_length=length):
            by_stream[stream_id].body += data or b""
            driven.conn.acknowledge_received_data(length or 0, stream_id)
        case h2.events.StreamEnded(stream_id=stream_id):
            by_stream[stream_id].complete.set()
        case h2.events.StreamReset(stream_id=stream_id):
            driven.open_streams.discard(stream_id)
        case h2.events.SettingsAcknowledged():
            driven.settings_acks += 1
            driven.changed.set()
        case h2.events.PingAckReceived():
            driven.pings_acked += 1
            driven.changed.set()
