"""A scripted HTTP/2 controller: the h2 library on a loopback TLS socket, answering each request with the next
move of its script (as httpcore's own tests script frames). The cheap, deterministic way to make a controller
send GOAWAY with a stream in flight, reset a stream, or never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
from h2.connection import ConnectionState
from h2.errors import ErrorCodes


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
                if conn.state_machine.state is ConnectionState.CLOSED:  # after our GOAWAY: read until the client goes
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

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
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
