"""Where the controller bends Hypercorn (``controller/server/hypercorn_seam.py``): what it replaces is still there,
a release it was not written for is one line, and a controller stops when told, whatever its peers do (issue 28).

Each way of ending is driven as a user would, on a real ``python -m controller`` process: ``serve`` on SIGTERM,
and ``trials`` at the end of its plan, each with peers that leave streams blocked (a flow-control window of 0, a
handler still sleeping, a TCP connection that never starts TLS). The process must exit within its grace plus the
cut's bound, and say what it cut.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import inspect
import json
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.stream
import h2.utilities
import pytest
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import TooManyStreamsError
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy
from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hypercorn import protocol as hypercorn_protocol
from hypercorn.asyncio import run as hypercorn_run
from hypercorn.asyncio import tcp_server as hypercorn_tcp_server
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.task_group import _handle as run_app
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import AsyncioSingleTask, EventWrapper
from hypercorn.protocol import h2 as hypercorn_h2
from hypercorn.protocol.h2 import H2Protocol, StreamBuffer
from hypercorn.protocol.http_stream import HTTPStream
from hyperframe.frame import Frame, RstStreamFrame
from priority.priority import DeadlockError, DuplicateStreamError, MissingStreamError
from quart.asgi import ASGIHTTPConnection
from quart.routing import QuartMap
from quart.wrappers import Request
from quart.wrappers.request import Body
from werkzeug.datastructures import Headers
from werkzeug.exceptions import NotFound
from werkzeug.routing import MapAdapter, Rule

from controller.http.quart_seam import (
    LightBody,
    LightRequest,
    OneTaskHTTPConnection,
    RememberingMap,
    SeamQuart,
    take_body,
)
from controller.server.asgi_tls import ConnectionAwareTCPServer, StreamIdHTTPStream
from controller.server.h2_limits import GuardedH2Protocol
from controller.server.hypercorn_seam import (
    AppInbox,
    SeamError,
    SeamTaskGroup,
    SeamWorkerContext,
    StreamTurns,
    check_versions,
)
from controller.server.serve import CUT_BOUND_S, install_seams, server_ssl_context
from controller.trials.plan import PLAN
from dialout import h2_seam
from dialout.asyncio_seam import TLS_READ_BUFFER, smaller_tls_read_buffers, socket_transport
from dialout.config import ControllerConfig
from dialout.h2_seam import (
    CLOSED_STREAMS_KEPT,
    H2SeamError,
    PromptH2Connection,
    RepeatingDecoder,
    RepeatingEncoder,
    check_h2_version,
    gone_away,
    made_prompt,
    reopen_after_reading_goaway,
)
from dialout.lazy_event import LazyEvent
from dialout.pki import generate_certs
from sim_switch.dial.tls import client_ssl_context
from tests.attacks import RawH2Client
from tests.conftest import SWITCH_IDS
from tests.servers import REPO, ControllerProcess, run_controller, write_config

pytestmark = pytest.mark.timing  # verdicts from times, bounds on how long: run loaded too

GRACE_S = 1.0
# Starting Python and the controller, and reading its last lines: far above what it takes on a quiet machine, so
# that a loaded one passes too. A controller that hangs (the bug) takes minutes, or for ever.
EXIT_SLACK_S = 10.0
BLOCKED_PINGS = 5
SCENARIO_S = 10.0  # write_config's seed (pings of at most 0.9 s), with the switch's start and its questions
STREAM_LIMIT_TRIAL = next(spec for spec in PLAN if spec.name == "stream-limit")


def test_hypercorn_still_has_what_the_seam_replaces() -> None:
    """If a Hypercorn upgrade moves these, controller/server/hypercorn_seam.py must change: fail here, loudly."""
    install_seams()
    assert getattr(hypercorn_run, "TCPServer") is ConnectionAwareTCPServer  # noqa: B009
    assert getattr(hypercorn_protocol, "H2Protocol") is GuardedH2Protocol  # noqa: B009
    assert getattr(hypercorn_h2, "HTTPStream") is StreamIdHTTPStream  # noqa: B009
    assert issubclass(ConnectionAwareTCPServer, TCPServer)
    parameters = inspect.signature(TCPServer.__init__).parameters
    assert {"app", "config", "reader", "writer"} <= set(parameters)
    assert inspect.iscoroutinefunction(TCPServer.run)
    assert inspect.iscoroutinefunction(TCPServer._read_data)
    assert "stream_id" in inspect.signature(HTTPStream.__init__).parameters
    # the idle timer we mend, and the send buffers we close
    assert "self.idle_task = " in inspect.getsource(TCPServer.__init__)
    assert inspect.iscoroutinefunction(AsyncioSingleTask.restart)
    assert "self.stream_buffers" in inspect.getsource(H2Protocol.__init__)
    assert inspect.iscoroutinefunction(StreamBuffer.close)
    # what the abuse limits stand on
    assert inspect.iscoroutinefunction(H2Protocol._handle_events)
    assert inspect.iscoroutinefunction(H2Protocol._flush)
    made = inspect.getsource(H2Protocol.__init__)
    assert all(f"self.{name} = " in made for name in ("connection", "config", "task_group", "send")), made
    assert "_update_header_buffer" in vars(h2.frame_buffer.FrameBuffer)
    assert "_headers_buffer" in h2.frame_buffer.FrameBuffer().__dict__
    # the writes gathered a turn at a time: Hypercorn's close paths, which write what was gathered first
    closing = inspect.getsource(TCPServer._initiate_server_close)
    assert "self.protocol.handle(Closed())" in closing, closing
    assert "self.writer.close()" in closing, closing
    assert "self.writer.write(event.data)" in inspect.getsource(TCPServer.protocol_send)
    assert inspect.iscoroutinefunction(TCPServer._close)
    # the priority tree whose place the streams' turns take: made once per connection, and asked only this
    assert "self.priority = priority.PriorityTree()" in made
    asked = set(re.findall(r"self\.priority\.(\w+)", inspect.getsource(hypercorn_h2)))
    assert asked == {"block", "unblock", "insert_stream", "remove_stream", "reprioritize"}, asked
    assert "next(self.priority)" in inspect.getsource(H2Protocol.send_task)
    # the lazy events: the worker's context is made by that name, and gives its event class to a stream's buffer;
    # a body's end sent at once (_ended_at_once) reads and writes what the send task would
    assert getattr(hypercorn_run, "WorkerContext") is SeamWorkerContext  # noqa: B009
    assert getattr(hypercorn_tcp_server, "TaskGroup") is SeamTaskGroup  # noqa: B009
    spawning = inspect.getsource(TaskGroup.spawn_app)
    assert "app_queue.get" in spawning, spawning  # the app's receive, which the inbox's get takes the place of
    assert "return app_queue.put" in spawning, spawning
    assert list(inspect.signature(run_app).parameters) == [
        *("app", "config", "scope", "receive", "send", "sync_spawn", "call_soon")
    ]
    assert "StreamBuffer(self.context.event_class)" in inspect.getsource(H2Protocol._create_stream)
    assert "self._event = asyncio.Event()" in inspect.getsource(EventWrapper.__init__)
    assert "self.buffer = bytearray()" in inspect.getsource(StreamBuffer.__init__)
    assert "del self.stream_buffers[stream_id]" in inspect.getsource(H2Protocol._send_data)
    # Quart's request body and the events it makes
    assert LightRequest.body_class is LightBody
    assert issubclass(LightBody, Body)
    assert {"self._complete: asyncio.Event", "self._has_data: asyncio.Event"} <= set(
        re.findall(r"self\._\w+: asyncio\.Event", inspect.getsource(Body.__init__))
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Length": "12"},
        {"Content-Length": "-3"},
        {"Content-Length": "twelve"},
        {"Content-Length": "12", "Transfer-Encoding": "chunked"},
        {"Transfer-Encoding": "gzip, chunked"},
        {"Transfer-Encoding": "gzip"},
    ],
)
def test_a_light_requests_content_length_is_werkzeugs(headers: dict[str, str]) -> None:
    async def no_push(path: str, headers: Headers) -> None:
        """(a request's push promises: none here)"""

    def made(kind: type[Request]) -> Request:
        scope: Any = {}
        return kind(*("POST", "https", "/ping", b"", Headers(headers), "", "2", scope), send_push_promise=no_push)

    assert made(LightRequest).content_length == made(Request).content_length


async def test_a_lazy_event_is_an_asyncio_event_that_makes_its_waiters_deque_at_the_first_wait() -> None:
    """``dialout.lazy_event``: set, clear and wait as asyncio.Event does them; no deque until someone waits; and
    asyncio.Event still keeps the private state it writes."""
    assert "self._waiters = collections.deque()" in inspect.getsource(asyncio.Event.__init__)
    assert "self._value = False" in inspect.getsource(asyncio.Event.__init__)
    assert "for fut in self._waiters:" in inspect.getsource(asyncio.Event.set)
    event = LazyEvent()
    event.set()
    event.clear()
    event.set()
    assert event.is_set()
    assert await event.wait() is True
    assert event._waiters == ()  # no one waited for it while it was set
    event.clear()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # each is waiting
    assert len(event._waiters) == 3
    waiters[0].cancel()
    event.set()
    assert await asyncio.gather(*waiters[1:]) == [True, True]
    assert waiters[0].cancelled()
    assert not event._waiters
    assert "set" in repr(event)


def test_streams_with_something_to_send_take_turns() -> None:
    """``StreamTurns``, as Hypercorn's send task asks it: the ready streams in turn, a blocked one passed over
    until unblocked (then at the back), none ready a ``DeadlockError``, and a PRIORITY frame for a stream never
    opened leaves nothing behind."""
    turns = StreamTurns()
    for stream_id in (1, 3, 5):
        turns.insert_stream(stream_id)
    assert [next(turns) for _ in range(4)] == [1, 3, 5, 1]
    turns.block(3)
    assert [next(turns) for _ in range(3)] == [5, 1, 5]
    turns.unblock(3)
    assert [next(turns) for _ in range(3)] == [1, 5, 3]
    for stream_id in (1, 5):
        turns.remove_stream(stream_id)
    turns.block(3)
    with pytest.raises(DeadlockError):
        next(turns)
    turns.reprioritize(stream_id=7, depends_on=3, weight=200, exclusive=True)
    with pytest.raises(MissingStreamError):
        turns.block(7)
    with pytest.raises(DuplicateStreamError):
        turns.insert_stream(3)


def test_h2_still_has_the_state_machine_the_h2_seam_reopens() -> None:
    """dialout/h2_seam.py writes h2's connection state after a GOAWAY: fail here if an upgrade moves it."""
    connection = H2Connection(H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.close_connection()
    assert gone_away(connection)
    reopen_after_reading_goaway(connection)
    assert connection.state_machine.state is ConnectionState.CLIENT_OPEN
    connection.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/")])
    check_h2_version()
    with pytest.raises(H2SeamError) as raised:
        check_h2_version(lambda package: "5.0.0")
    assert str(raised.value).startswith("h2 5.0.0 is installed; dialout was written for h2 4.x")


def test_the_seams_frame_reading_is_h2s_own_but_for_the_frames_text() -> None:
    """PromptH2Connection._receive_frame is h2's, less the line that makes every frame into text for a logger that
    drops it: statement for statement (comments and docstrings aside), so that an h2 that changes fails here."""

    def body_of(method: Callable[..., object]) -> list[str]:
        function = ast.parse(textwrap.dedent(inspect.getsource(method))).body[0]
        assert isinstance(function, ast.FunctionDef)
        statements = function.body[1:] if isinstance(function.body[0], ast.Expr) else function.body  # no docstring
        return [ast.dump(statement) for statement in statements]

    theirs = body_of(H2Connection._receive_frame)
    dropped = [statement for statement in theirs if "logger" in statement and "repr" in statement]
    assert len(dropped) == 1
    assert body_of(PromptH2Connection._receive_frame) == [statement for statement in theirs if statement not in dropped]


def test_a_repeating_encoder_writes_every_block_as_hpacks_own_does() -> None:
    """The same header lists again and again, a sensitive header among them now and then, the table resized and
    Huffman turned off at times: block for block what hpack's encoder writes, and most of them from memory."""

    class Counted(RepeatingEncoder):
        encoded = 0

        def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
            self.encoded += 1
            return super().add(to_add, sensitive, huffman)

    ping = [HeaderTuple(b":method", b"GET"), HeaderTuple(b":path", b"/ping?interval=0"), HeaderTuple(b"x", b"1")]
    lists = [
        ping,
        [*ping[:2], NeverIndexedHeaderTuple(b"x", b"1")],  # the same, but for its kind
        [HeaderTuple(b":method", b"GET"), HeaderTuple(b":path", b"/connections")],
        [HeaderTuple(b":method", b"GET"), HeaderTuple(b":path", b"/ping?interval=5"), HeaderTuple(b"y", b"2" * 60)],
    ]
    theirs, ours = Encoder(), Counted()
    chooser = random.Random(7)
    headers_given = 0
    for step in range(2_000):
        if step % 97 == 0:
            size = chooser.choice([0, 64, 4096])
            theirs.header_table_size = ours.header_table_size = size
        headers = lists[0] if chooser.random() < 0.7 else chooser.choice(lists)
        huffman = step % 211 != 0
        assert ours.encode(list(headers), huffman) == theirs.encode(list(headers), huffman), step
        headers_given += len(headers)
    assert ours.encoded < headers_given * 3 / 4  # a list again after itself: from memory


def test_a_repeating_decoder_reads_every_block_as_hpacks_own_does() -> None:
    """Blocks from a peer's encoder (the same request again and again, others between, the table resized): header
    list for header list what hpack's decoder reads, and the repeats from memory."""

    class Counted(RepeatingDecoder):
        decoded = 0

        def _decode_indexed(self, data: bytes | memoryview) -> tuple[HeaderTuple, int]:
            self.decoded += 1
            return super()._decode_indexed(data)

    peer = Encoder()
    request = [(b":method", b"GET"), (b":path", b"/ping?interval=0"), (b"user-agent", b"dialout-sim-switch")]
    others = [[(b":method", b"GET"), (b":path", f"/ping?interval={n}".encode())] for n in range(5)]
    theirs, ours = Decoder(), Counted.replacing(Decoder())
    chooser = random.Random(11)
    for step in range(2_000):
        if step % 89 == 0:
            size = chooser.choice([0, 256, 4096])
            peer.header_table_size = theirs.header_table_size = ours.header_table_size = size
        block = peer.encode(request if chooser.random() < 0.8 else chooser.choice(others))
        raw = step % 5 != 0
        assert ours.decode(block, raw) == list(theirs.decode(block, raw)), step
    assert ours.decoded < 2_000 * 3 / 2  # of ~5,000 indexed fields: the repeats from memory


def test_a_stream_checks_a_block_as_h2s_own_does_and_a_good_one_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests (the same again and again, a bad one between), then the same good block as trailers, where it is
    bad: ours reads what h2's own reads, refuses what it refuses, and checks a good block again only as trailers."""
    checks: list[int] = []
    h2s_check = h2.utilities.validate_headers  # as h2.stream calls it

    def counted(headers: Any, flags: Any) -> Any:
        checks.append(1)
        return h2s_check(headers, flags)

    monkeypatch.setattr(h2.stream, "validate_headers", counted)
    monkeypatch.setattr(h2_seam, "_checked", {})  # none kept by another test of this process
    request = [(":method", "GET"), (":scheme", "https"), (":authority", "c:1"), (":path", "/ping?interval=0")]
    bad = [*request, ("Upper", "x")]

    def read(server: H2Connection, blocks: list[tuple[list[tuple[str, str]], bool]]) -> list[object]:
        """What the server makes of each block, a request of its own (or, ``trailers``, after one)."""
        client = H2Connection(
            H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        client.initiate_connection()
        server.initiate_connection()
        server.receive_data(client.data_to_send())
        seen: list[object] = []
        for headers, trailers in blocks:
            stream_id = client.get_next_available_stream_id()
            client.send_headers(stream_id, request if trailers else headers, end_stream=not trailers)
            if trailers:
                client.send_headers(stream_id, headers, end_stream=True)
            try:
                events = server.receive_data(client.data_to_send())
            except h2.exceptions.ProtocolError as exc:
                seen.append(type(exc))
                return seen
            read_as = (h2.events.RequestReceived, h2.events.TrailersReceived)
            seen.append([event.headers for event in events if isinstance(event, read_as)])
        return seen

    def config() -> H2Configuration:
        return H2Configuration(client_side=False, header_encoding=None)

    # The good block checked once, then the bad one; then, on another connection, the good block kept from the
    # first (not checked again) and the same block as trailers, checked as trailers.
    for blocks, checked in (
        ([(request, False)] * 50 + [(bad, False)], 2),
        ([(request, False)] * 3 + [(request, True)], 1),
    ):
        checks.clear()
        ours = read(PromptH2Connection(config()), blocks)
        ours_checked = len(checks)
        assert ours == read(H2Connection(config()), blocks)
        assert ours[-1] is h2.exceptions.ProtocolError  # the bad request; the request's block as trailers
        assert ours_checked == checked


def test_a_client_that_forgets_its_streams_is_held_to_the_peers_limit_as_h2_holds_it() -> None:
    """``PromptH2Connection`` counts what it holds instead of walking every stream: the peer's limit still holds,
    a forgotten stream is one h2 knows closed, and one left unforgotten is found by h2's walk at the limit."""
    client = PromptH2Connection(H2Configuration(client_side=True, header_encoding=None))
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.local_settings = Settings(client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    server.initiate_connection()
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())  # the limit of 3
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]

    def answer(stream_id: int) -> None:
        server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
        client.receive_data(server.data_to_send())

    for stream_id in (1, 3, 5):
        client.send_headers(stream_id, request, end_stream=True)
    server.receive_data(client.data_to_send())
    with pytest.raises(TooManyStreamsError):
        client.send_headers(7, request, end_stream=True)
    answer(1)
    client.forget(1)
    assert 1 not in client.streams
    assert client._closed_streams[1] is StreamClosedBy.RECV_END_STREAM  # as h2's own walk leaves it
    client.send_headers(7, request, end_stream=True)
    answer(3)  # closed, not forgotten: h2's walk at the limit finds it
    client.send_headers(9, request, end_stream=True)
    assert sorted(client.streams) == [5, 7, 9]
    client.forget(5)  # still open (no answer yet): not forgotten, and still counted
    with pytest.raises(TooManyStreamsError):
        client.send_headers(11, request, end_stream=True)


async def test_a_tls_connection_reads_into_a_buffer_of_two_records_not_256_kib(
    certs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio gives each TLS connection a zero-filled read buffer of ``SSLProtocol.max_size`` (256 KiB), most of
    a controller's memory an idle switch: both halves make it ``TLS_READ_BUFFER``, and what is sent in records
    many times that size still arrives whole."""
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)  # undone after
    smaller_tls_read_buffers()
    received: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def read_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_protocol = writer.transport._ssl_protocol  # type: ignore[attr-defined]
        received.set_result((len(ssl_protocol._ssl_buffer), await reader.read()))
        writer.close()

    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)
    server = await asyncio.start_server(read_all, "127.0.0.1", 0, ssl=server_ssl_context(cfg))
    async with server:
        port = server.sockets[0].getsockname()[1]
        context = client_ssl_context(certs_dir, "switch-1")
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        sent = random.Random(5).randbytes(20 * TLS_READ_BUFFER)
        writer.write(sent)
        await writer.drain()
        writer.close()  # its close_notify: the server's read ends
        size, got = await asyncio.wait_for(received, 30)
    assert size == TLS_READ_BUFFER < 256 * 1024
    assert got == sent


def test_a_long_lived_connection_remembers_only_its_last_closed_streams() -> None:
    """h2 keeps how each of the last 65,536 closed streams closed, 6 MB a connection that has carried as many: both
    ends keep the last ``CLOSED_STREAMS_KEPT``, and an answer that crossed the client's reset on the wire is still
    only that stream's error (RST_STREAM back), not the connection's."""
    client = PromptH2Connection(H2Configuration(client_side=True, header_encoding=None))
    server = made_prompt(H2Connection(H2Configuration(client_side=False, header_encoding=None)), PromptH2Connection)
    server.initiate_connection()
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]

    def ask() -> int:
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, request, end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(stream_id, [(b":status", b"200")])
        return stream_id

    for _ in range(3 * CLOSED_STREAMS_KEPT):
        stream_id = ask()
        server.send_data(stream_id, b"{}", end_stream=True)
        client.receive_data(server.data_to_send())
        server.forget(stream_id)
        client.forget(stream_id)
    assert len(client._closed_streams) == len(server._closed_streams) == CLOSED_STREAMS_KEPT
    client.receive_data(server.data_to_send())
    stream_id = ask()
    client.reset_stream(stream_id)
    client.forget(stream_id)
    client.data_to_send()  # its RST_STREAM, crossing the answer on the wire:
    server.send_data(stream_id, b"{}", end_stream=True)
    client.receive_data(server.data_to_send())  # no connection error
    said = client.data_to_send()
    frame, length = Frame.parse_frame_header(memoryview(said[:9]))
    frame.parse_body(memoryview(said[9 : 9 + length]))
    assert isinstance(frame, RstStreamFrame)
    assert (frame.stream_id, frame.error_code) == (stream_id, ErrorCodes.STREAM_CLOSED)


def test_a_server_that_forgets_its_answered_streams_refuses_what_h2_would() -> None:
    """The controller's side (``made_prompt`` on Hypercorn's connection, ``StreamTurns`` telling it of each stream
    whose answer has gone): answered streams are forgotten at once, their room is there for the next, and a client
    over the limit is refused as h2's own server refuses it."""
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]

    def served(server: H2Connection, forget: Callable[[int], None]) -> list[str]:
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        server.local_settings = Settings(client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 2})
        server.initiate_connection()
        client.initiate_connection()
        server.receive_data(client.data_to_send())  # not the other way: the client does not know the limit
        turns = StreamTurns(forget)
        said = []

        def send(stream_id: int) -> None:
            client.send_headers(stream_id, request, end_stream=True)
            try:
                events = server.receive_data(client.data_to_send())
            except TooManyStreamsError:
                said.append(f"{stream_id} over the limit")
            else:
                said.extend(f"{stream_id} {type(event).__name__}" for event in events)

        send(1)
        send(3)
        for stream_id in (1, 3):
            turns.insert_stream(stream_id)
            server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
            turns.remove_stream(stream_id)
        said.append(f"answered 1 and 3, holds {sorted(server.streams)}")
        send(5)
        send(7)
        send(9)
        return said

    h2s_own = served(H2Connection(H2Configuration(client_side=False, header_encoding=None)), lambda stream_id: None)
    prompt = made_prompt(H2Connection(H2Configuration(client_side=False, header_encoding=None)), PromptH2Connection)
    ours = served(prompt, prompt.forget)
    assert "answered 1 and 3, holds []" in ours  # forgotten as their answers went
    assert "answered 1 and 3, holds [1, 3]" in h2s_own  # h2 finds them at its next walk
    assert ours[-1] == h2s_own[-1] == "9 over the limit"
    assert [line for line in ours if not line.startswith("answered")] == [
        line for line in h2s_own if not line.startswith("answered")
    ]


def test_a_release_the_seam_was_not_written_for_is_one_line() -> None:
    check_versions()  # what is installed here is what it was written for
    with pytest.raises(SeamError) as raised:
        check_versions(lambda package: "0.19.1" if package == "hypercorn" else "4.4.1")
    message = str(raised.value)
    assert "hypercorn 0.19.1 is installed" in message
    assert "written for hypercorn 0.18.x" in message
    assert "\n" not in message
    assert raised.value.code == 2


@pytest.fixture(scope="module")
def stuck_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("stuck")
    generate_certs(directory / "certs", ("localhost", "127.0.0.1"), ("switch-1", "switch-2"))
    controller = f"  graceful_timeout_s: {GRACE_S}\n  max_interval_s: 600\n  switches: [switch-1, switch-2]\n"
    return write_config(directory, controller=controller)


async def _block_streams(port: int, certs: Path) -> RawH2Client:
    """A switch that opens BLOCKED_PINGS pings answered at once, then a window of 0 for their bodies, and one ping
    whose handler sleeps; and a TCP connection that never starts TLS beside it. It never reads again."""
    client = await RawH2Client.connect(port, client_ssl_context(certs, "switch-1"))
    await client.settled()
    client.close_window()
    await client.ping(b"windowed")  # the controller has the window of 0 before the pings come
    for _ in range(BLOCKED_PINGS):
        client.request("/ping?interval=0")
    client.request("/ping?interval=500")
    await client.ping(b"all-read")  # every request is in the controller's hands
    return client


@contextlib.contextmanager
def blocked_streams(port: int, certs: Path) -> Iterator[None]:
    """``_block_streams`` on a loop of its own, kept (not run) while the test goes on: the peer reads nothing."""
    loop = asyncio.new_event_loop()
    try:
        with socket.create_connection(("127.0.0.1", port)):  # a TCP connection that never starts TLS
            client = loop.run_until_complete(_block_streams(port, certs))
            yield
            loop.run_until_complete(client.close())
    finally:
        loop.close()


def test_serve_stops_on_sigterm_whatever_its_peers_do(stuck_config: Path) -> None:
    with (
        ControllerProcess.start(stuck_config) as controller,
        blocked_streams(controller.port, stuck_config.parent / "certs"),
    ):
        asked = time.monotonic()
        controller.process.send_signal(signal.SIGTERM)
        code = controller.process.wait(timeout=GRACE_S + CUT_BOUND_S + EXIT_SLACK_S)
        took = time.monotonic() - asked
    assert code == 1, controller.lines[-5:]
    assert took < GRACE_S + CUT_BOUND_S + EXIT_SLACK_S
    cut = controller.seen(r"stopped: (\d+) streams on (\d+) connection cut when graceful_timeout_s \(1 s\) ran out")
    assert int(cut.group(1)) == BLOCKED_PINGS + 1
    assert controller.lines[-1] == cut.string
    assert not any("Traceback" in line or "never awaited" in line for line in controller.lines), controller.lines


def test_serve_stops_on_sigterm_beside_a_client_that_ignores_goaway(stuck_config: Path) -> None:
    """A client that goes on sending after the shutdown's GOAWAY (tests/trial_clients.py), beside blocked streams."""
    certs = stuck_config.parent / "certs"
    with ControllerProcess.start(stuck_config) as controller:
        client = [sys.executable, "-m", "tests.trial_clients", "ignores-goaway", "--switch", "switch-2"]
        client += ["--port", str(controller.port), "--certs", str(certs)]
        with (
            subprocess.Popen(client, cwd=REPO, stdin=subprocess.DEVNULL) as bad,
            blocked_streams(controller.port, certs),
        ):
            try:
                controller.wait_for(r"switch-2 conn #\d+ stream \d+ .* -> 200")  # it is sending, and answered
                controller.process.send_signal(signal.SIGTERM)
                code = controller.process.wait(timeout=GRACE_S + CUT_BOUND_S + EXIT_SLACK_S)
            finally:
                bad.terminate()
    assert code == 1, controller.lines[-5:]
    assert controller.lines[-1].endswith("cut when graceful_timeout_s (1 s) ran out")
    assert not any("Traceback" in line for line in controller.lines), "\n".join(controller.lines)


def test_the_demo_ends_though_a_peer_holds_streams_blocked(stuck_config: Path) -> None:
    """The demo's scenario runs and passes while another peer holds blocked streams; the demo still ends, in its
    scenario's time plus the grace and the cut's bound, and says what it cut."""
    command = [sys.executable, "-m", "controller", "demo", "--scenario", "seed", "--config", str(stuck_config)]
    command += ["--port", "0", "--admin-port", "0"]
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with ControllerProcess.stopped_at_exit(process):
        demo = ControllerProcess(process, stuck_config)
        with blocked_streams(demo.port, stuck_config.parent / "certs"):
            code = process.wait(timeout=SCENARIO_S + GRACE_S + CUT_BOUND_S + EXIT_SLACK_S)
    assert process.stdout is not None
    stdout = process.stdout.read()
    process.stdout.close()
    assert code == 0, stdout  # the scenario passed; the peer's streams were cut
    assert "demo: 1 of 1 scenarios passed" in stdout
    assert demo.lines[-1].endswith("cut when graceful_timeout_s (1 s) ran out")


def test_serve_with_nothing_left_stops_clean(stuck_config: Path) -> None:
    with ControllerProcess.start(stuck_config) as controller:
        with urllib.request.urlopen(f"{controller.admin_url}/connections", timeout=EXIT_SLACK_S) as answer:
            assert answer.status == 200  # serving: its signal handlers are in place
        controller.process.send_signal(signal.SIGTERM)
        code = controller.process.wait(timeout=GRACE_S + CUT_BOUND_S + EXIT_SLACK_S)
    assert code == 0
    assert controller.lines[-1].endswith("stopped: no stream was cut")


def test_trials_end_and_write_their_report_though_streams_are_blocked(stuck_config: Path, tmp_path: Path) -> None:
    """The run that hung for minutes (issue 28): stream-limit against a client that ignores the lowered limit,
    while another switch holds blocked streams. The plan ends, the report is written, the process exits."""
    report = tmp_path / "trials.json"
    certs = stuck_config.parent / "certs"
    command = [sys.executable, "-m", "controller", "trials", "--config", str(stuck_config), "--port", "0"]
    command += ["--admin-port", "0", "--switch", "switch-2", "--only", "stream-limit", "--json", str(report)]
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    bound_s = STREAM_LIMIT_TRIAL.deadline_s + GRACE_S + CUT_BOUND_S + EXIT_SLACK_S
    with ControllerProcess.stopped_at_exit(process):
        controller = ControllerProcess(process, stuck_config)
        with blocked_streams(controller.port, certs):  # switch-1's, before the switch under trial comes
            client = [sys.executable, "-m", "tests.trial_clients", "ignores-limits", "--switch", "switch-2"]
            client += ["--port", str(controller.port), "--certs", str(certs)]
            with subprocess.Popen(client, cwd=REPO, stdin=subprocess.DEVNULL) as bad:
                try:
                    code = process.wait(timeout=bound_s)
                finally:
                    bad.terminate()
    assert process.stdout is not None
    stdout = process.stdout.read()
    process.stdout.close()
    assert code == 1, stdout  # the client failed its trial; the run did not crash (70) or hang
    assert "FAIL  stream-limit" in stdout
    written = json.loads(report.read_text(encoding="utf-8"))
    assert [(trial["name"], trial["verdict"]) for trial in written["trials"]] == [("stream-limit", "fail")]
    assert written["shutdown"]["cut_streams"] >= BLOCKED_PINGS + 1, controller.lines
    assert controller.lines[-1].endswith("cut when graceful_timeout_s (1 s) ran out")
    assert not any("Traceback" in line for line in controller.lines), "\n".join(controller.lines)


async def test_the_quart_seams_callback_takes_a_body_as_quarts_reader_does() -> None:
    """A request whose messages the server hands to a callback (quart_seam's ``take_body``) ends with the body
    Quart's own ``handle_messages`` makes of the same messages: pinned for an upgrade of Quart."""
    app = SeamQuart(__name__)
    scope: dict[str, Any] = {
        **{"type": "http", "http_version": "2", "method": "POST", "scheme": "https", "path": "/ping"},
        **{"raw_path": b"/ping", "query_string": b"", "root_path": "", "headers": [], "extensions": {}},
    }
    messages: list[Any] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def send(_: Any) -> None:
        return None

    quarts, ours = (OneTaskHTTPConnection(app, scope)._create_request_from_scope(send) for _ in range(2))  # type: ignore[arg-type]
    left = iter(messages)

    async def receive() -> Any:
        return next(left)

    await ASGIHTTPConnection.handle_messages(OneTaskHTTPConnection(app, scope), quarts, receive)  # type: ignore[arg-type]
    for message in messages[:2]:
        take_body(ours, message)
    async with asyncio.timeout(5):
        assert await quarts.get_data() == await ours.get_data() == b"abc"


def test_quart_still_has_what_the_quart_seam_calls() -> None:
    """controller/http/quart_seam.py calls these of Quart's ASGIHTTPConnection: fail here if an upgrade moves them."""
    for name in ("_create_request_from_scope", "handle_messages", "handle_request"):
        assert callable(getattr(ASGIHTTPConnection, name, None)), name
    assert issubclass(OneTaskHTTPConnection, ASGIHTTPConnection)


async def test_a_ping_whose_stream_the_switch_resets_ends_at_once_and_the_next_is_served(certs_dir: Path) -> None:
    """The request runs in the server's own task (quart_seam): a reset stream must still end its handler, mid-sleep,
    as Quart's own wait did, without taking the connection or the next request with it."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)
    async with run_controller(cfg) as controller:
        peer = await RawH2Client.connect(controller.port, client_ssl_context(certs_dir, "switch-1"))
        try:
            held = peer.request("/ping?interval=60")
            async with asyncio.timeout(10):
                while not controller.registry.in_flight():  # until the controller has started it
                    await peer.ping(b"started?")
                peer.reset(held)
                while controller.registry.in_flight():  # ends well before its 60 s
                    await peer.ping(b"ended?..")
                assert await peer.answer(peer.request("/ping?interval=0")) == 200
        finally:
            await peer.close()


async def test_an_answered_pings_task_ends_done_not_cancelled(certs_dir: Path) -> None:
    """Hypercorn tells the app ``http.disconnect`` from within its own last send, as it closes the stream: taken by
    quart_seam's callback there, it cancelled the handler still in that send, and every answered ping's task ended
    cancelled. The client going is acted on a turn later, as Quart's reader task did."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)
    ended: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()
    create_task = loop.create_task

    def watched(coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = create_task(coro, **kwargs)
        if getattr(coro, "__qualname__", "") == run_app.__qualname__:  # an app's, as Hypercorn spawns it
            task.add_done_callback(ended.append)
        return task

    async with run_controller(cfg) as controller:
        peer = await RawH2Client.connect(controller.port, client_ssl_context(certs_dir, "switch-1"))
        try:
            loop.create_task = watched  # type: ignore[method-assign]
            async with asyncio.timeout(10):
                assert [await peer.answer(stream) for stream in peer.requests(["/ping?interval=0"] * 3)] == [200] * 3
                while len(ended) < 3:
                    await peer.ping(b"ended?..")
        finally:
            loop.create_task = create_task  # type: ignore[method-assign]
            await peer.close()
    assert [task.cancelled() for task in ended] == [False] * 3


async def test_an_answer_ends_in_the_frame_that_carries_its_body(certs_dir: Path) -> None:
    """A ping's answer is HEADERS and one DATA frame that ends the stream (``SeamH2Protocol._ended_at_once``), not
    Hypercorn's DATA and an empty DATA to end it; an answer the flow-control window holds back still comes, whole,
    by Hypercorn's send task, once the window opens."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)
    async with run_controller(cfg) as controller:
        peer = await RawH2Client.connect(controller.port, client_ssl_context(certs_dir, "switch-1"))
        try:
            async with asyncio.timeout(10):
                frames = await peer.answer_frames(peer.request("/ping?interval=0"))
                names = [type(frame).__name__ for frame in frames]
                assert names == ["ResponseReceived", "DataReceived", "StreamEnded"]
                assert frames[1].data  # type: ignore[attr-defined]
                assert frames[1].stream_ended is not None  # type: ignore[attr-defined]

                peer.close_window()
                await peer.ping(b"settings")
                held = peer.request("/ping?interval=0")
                assert await peer.answer(held) == 200  # its headers: flow control holds only the body
                peer.open_window()
                frames = await peer.answer_frames(held)
                body = b"".join(frame.data for frame in frames if isinstance(frame, h2.events.DataReceived))
                assert json.loads(body)["stream_id"] == held
                assert await peer.answer(peer.request("/ping?interval=0")) == 200  # and the connection goes on
        finally:
            await peer.close()


async def test_a_requests_inbox_hands_its_events_over_in_order_and_holds_a_writer_when_full() -> None:
    """``AppInbox``, Hypercorn's per-request queue as the seam replaces it: ``get`` waits for a ``put``; ``put``
    waits while ``maxsize`` events are unread; a reader woken and then cancelled passes its turn on."""
    inbox = AppInbox(2)
    reading = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)  # waiting for an event
    await inbox.put({"type": "http.request", "body": b"1", "more_body": True})
    assert (await reading)["body"] == b"1"  # type: ignore[typeddict-item]
    await inbox.put({"type": "http.request", "body": b"2", "more_body": True})
    await inbox.put({"type": "http.request", "body": b"3", "more_body": False})
    third = asyncio.ensure_future(inbox.put({"type": "http.disconnect"}))
    await asyncio.sleep(0)
    assert not third.done()  # two unread: the writer waits
    assert (await inbox.get())["body"] == b"2"  # type: ignore[typeddict-item]
    await third  # room again
    assert [(await inbox.get())["type"] for _ in range(2)] == ["http.request", "http.disconnect"]

    first, second = asyncio.ensure_future(inbox.get()), asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    await inbox.put({"type": "http.disconnect"})  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs: the second reads the event
    async with asyncio.timeout(5):
        assert (await second)["type"] == "http.disconnect"
    assert first.cancelled()


async def test_a_requests_inbox_hands_what_waits_and_what_comes_to_a_listener_in_order() -> None:
    """``AppInbox.listen`` (quart_seam's ``MESSAGES_EXTENSION``): the events unread, then the one a writer held for
    room, then each put, all to the listener in order; given None, the inbox keeps them again."""
    inbox = AppInbox(2)
    heard: list[bytes] = []
    await inbox.put({"type": "http.request", "body": b"1", "more_body": True})
    await inbox.put({"type": "http.request", "body": b"2", "more_body": True})
    held = asyncio.ensure_future(inbox.put({"type": "http.request", "body": b"3", "more_body": True}))
    await asyncio.sleep(0)
    assert not held.done()  # two unread: the writer waits
    inbox.listen(lambda event: heard.append(event.get("body", b"gone")))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        await held
    await inbox.put({"type": "http.request", "body": b"4", "more_body": False})
    assert heard == [b"1", b"2", b"3", b"4"]
    inbox.listen(None)
    await inbox.put({"type": "http.disconnect"})
    assert heard == [b"1", b"2", b"3", b"4"]
    assert (await inbox.get())["type"] == "http.disconnect"


async def test_a_finished_connection_is_freed_as_it_ends_not_by_the_garbage_collector(certs_dir: Path) -> None:
    """Hypercorn's server and its protocol, h2's connection and asyncio's socket transport each sat in a cycle, so
    every finished connection (~115 objects, its TLS state among them) waited for a collection, which a storm of
    short connections made 64-159 ms long. With the collector off, each is freed once its connection ends."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)
    async with run_controller(cfg) as controller:
        gc.collect()
        gc.disable()
        try:
            freed: list[asyncio.Event] = []
            for _ in range(5):
                peer = await RawH2Client.connect(controller.port, client_ssl_context(certs_dir, "switch-1"))
                assert await peer.answer(peer.request("/ping?interval=0")) == 200
                freed += _watched_till_freed(*ConnectionAwareTCPServer.live)
                await peer.close()
                async with asyncio.timeout(10):
                    for event in freed:
                        await event.wait()
        finally:
            gc.enable()


def _closures_left(adapter: MapAdapter) -> int:
    """werkzeug's match closures that 100 matches of a path left for the garbage collector to find."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(100):
            adapter.match("/connections/7")
        gc.collect()
        return sum(
            getattr(thing, "__qualname__", "") == "StateMachineMatcher.match.<locals>._match" for thing in gc.garbage
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _watched_till_freed(server: ConnectionAwareTCPServer) -> list[asyncio.Event]:
    """An event for each of a connection's server, h2 connection and socket transport, set as it is freed (here,
    where no reference to them outlives the call)."""
    watched = (server, server.protocol.protocol.connection, socket_transport(server.writer.transport))
    events = [asyncio.Event() for _ in watched]
    for thing, event in zip(watched, events, strict=True):
        weakref.finalize(thing, event.set)
    return events


def test_the_router_answers_a_path_it_has_matched_from_memory_and_leaves_no_cycle() -> None:
    """werkzeug's match makes a recursive closure each call, a cycle for the garbage collector every request:
    ``RememberingMatcher`` makes it once a path. What it gives back is the caller's own; a miss is not kept; a new
    rule forgets what was kept."""
    routes, werkzeugs = RememberingMap(), QuartMap()
    for rules in (routes, werkzeugs):
        rules.add(Rule("/ping", endpoint="ping"))
        rules.add(Rule("/connections/<int:number>", endpoint="connection"))
    adapter = routes.bind("localhost")
    assert adapter.match("/ping") == ("ping", {})  # the first, as werkzeug makes it
    found = adapter.match("/connections/7")
    assert found == ("connection", {"number": 7})
    found[1]["number"] = 8  # a hook that changes its view's arguments
    for _ in range(100):
        assert adapter.match("/connections/7") == ("connection", {"number": 7})
    assert _closures_left(adapter) == 0
    assert _closures_left(werkzeugs.bind("localhost")) == 100  # werkzeug's own: one a match
    with pytest.raises(NotFound):
        adapter.match("/nowhere")
    routes.add(Rule("/nowhere", endpoint="found"))
    assert routes.bind("localhost").match("/nowhere") == ("found", {})
